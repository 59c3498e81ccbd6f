"""The import direction the architecture promises (docs/architecture.md): the pure layers
(``sampling``, ``format``, ``storage``) import neither torch nor anything above them, and no
module inside the package reaches back into the package root except the CLI."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fastdata

pytestmark = pytest.mark.timeout(60)
PACKAGE = Path(fastdata.__file__).parent
ROOT_NAMES = {"__version__", "Dataset", "open_dataset", "TokenDataset", "DataLoader", "OrderOptions",
              "Source", "World", "pack"}
#: what each lower layer may import from fastdata (besides itself)
ALLOWED = {
    "sampling": {"fastdata.errors", "fastdata.sampling"},
    "format": {"fastdata.errors", "fastdata.atomic", "fastdata._testing", "fastdata._native",
               "fastdata.format"},
    "storage": {"fastdata.errors", "fastdata.atomic", "fastdata.units", "fastdata.metrics",
                "fastdata._testing", "fastdata.daemon_pool", "fastdata.environment", "fastdata.storage"},
}


def imports_of(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import in ``path``, function-level ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, [a.name for a in node.names]))
    return out


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_lower_layers_import_nothing_above_them(layer):
    bad = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for module, names in imports_of(path):
            if module.split(".")[0] == "torch":
                bad.append(f"{path.name}: imports torch")
            if module == "fastdata":
                module_names = {f"fastdata.{n}" for n in names}
                if not module_names <= ALLOWED[layer]:
                    bad.append(f"{path.name}: from fastdata import {names}")
            elif module.startswith("fastdata.") and not any(
                    module == a or module.startswith(a + ".") for a in ALLOWED[layer]):
                bad.append(f"{path.name}: imports {module}")
    assert bad == []


def test_nothing_but_the_cli_imports_names_from_the_package_root():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "cli" or rel.name == "__init__.py" and len(rel.parts) == 1:
            continue
        for module, names in imports_of(path):
            if module == "fastdata" and set(names) & ROOT_NAMES:
                bad.append(f"{rel}: from fastdata import {sorted(set(names) & ROOT_NAMES)}")
    assert bad == []


CHECK = """
import sys
import {module}
print(",".join(sorted(m for m in ("torch", "fastdata._native", "fastdata.reader", "fastdata.loader")
                      if m in sys.modules)))
"""


@pytest.mark.parametrize(("module", "allowed"), [
    ("fastdata", ""),
    ("fastdata.sampling.order", ""),
    ("fastdata.sampling.mixture", ""),
    ("fastdata.format.manifest", ""),
    ("fastdata.storage.remote", ""),
    ("fastdata.storage.cache", ""),
    ("fastdata.format.reader", "fastdata._native"),
])
def test_importing_a_layer_loads_only_that_layer(module, allowed):
    """``import fastdata.sampling.order`` runs the package root first: it must stay light."""
    out = subprocess.run([sys.executable, "-P", "-c", CHECK.format(module=module)], capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == allowed


def test_one_version():
    pyproject = (PACKAGE.parent / "pyproject.toml")
    if not pyproject.exists():
        pytest.skip("not a source checkout")
    declared = re.search(r'^version = "([^"]+)"', pyproject.read_text(), re.M).group(1)
    assert fastdata.__version__ == declared
