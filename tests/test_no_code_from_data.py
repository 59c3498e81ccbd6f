"""G1(a): nothing in the package or the C++ sources can execute code found in data."""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FORBIDDEN = [
    (re.compile(r"\bpickle\.loads?\("), "pickle.load"),
    (re.compile(r"allow_pickle\s*=\s*True"), "np.load(allow_pickle=True)"),
    (re.compile(r"\btorch\.load\((?![^)]*weights_only\s*=\s*True)"), "torch.load without weights_only"),
    (re.compile(r"(?<![\w.])eval\("), "eval"),
    (re.compile(r"(?<![\w.])exec\("), "exec"),
    (re.compile(r"\byaml\.load\((?![^)]*SafeLoader)"), "yaml.load without SafeLoader"),
    (re.compile(r"\bmarshal\.loads?\("), "marshal.load"),
]


def sources():
    files = list((ROOT / "fastdata").rglob("*.py")) + list((ROOT / "csrc").rglob("*.[ch]*"))
    return [f for f in files if f.is_file()]


@pytest.mark.timeout(30)
def test_no_unsafe_deserialisation():
    found = []
    for path in sources():
        text = path.read_text(encoding="utf-8")
        for pattern, what in FORBIDDEN:
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                found.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    assert len(sources()) > 20
    assert found == []


@pytest.mark.timeout(30)
def test_no_assert_for_validation():
    """Validation must survive python -O: no assert statements in library code."""
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in (ROOT / "fastdata").rglob("*.py")
                 for n, line in enumerate(p.read_text().splitlines(), 1)
                 if re.match(r"\s*assert\b", line)]
    assert offenders == []
