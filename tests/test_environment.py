"""Environment variables are read in one place (``fastdata/environment.py``), and each accessor
returns exactly what the environment holds."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fastdata
from fastdata import environment
from fastdata.world import World

pytestmark = pytest.mark.timeout(60)
PACKAGE = Path(fastdata.__file__).parent
#: the one module that reads the environment
READER = "environment.py"
#: modules that set up a child's environment (writes only), and why
WRITERS = {
    "pack/workers.py",  # _worker_init: one tokenizer thread per encoding process
    "pack/ray_tasks.py",  # Area.open: each Ray task's variables, set or unset
}
_WRITE_METHODS = {"pop", "setdefault", "update", "clear", "__setitem__", "__delitem__"}


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def environment_uses(source: str) -> list[tuple[int, str]]:
    """(line, "read" or "write") of every use of ``os.environ`` / ``os.getenv`` / ``os.putenv``
    in ``source``, however ``os`` or its names were imported."""
    tree = ast.parse(source)
    os_names, environ_names, getenv_names, putenv_names = set(), set(), set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            os_names |= {a.asname or a.name for a in node.names if a.name == "os"}
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            for a in node.names:
                target = {"environ": environ_names, "environb": environ_names, "getenv": getenv_names,
                          "getenvb": getenv_names, "putenv": putenv_names, "unsetenv": putenv_names}
                target.get(a.name, set()).add(a.asname or a.name)
    parents = _parents(tree)
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in os_names:
            kind = {"environ": "environ", "environb": "environ", "getenv": "read", "getenvb": "read",
                    "putenv": "write", "unsetenv": "write"}.get(node.attr)
        elif isinstance(node, ast.Name):
            kind = ("environ" if node.id in environ_names else "read" if node.id in getenv_names
                    else "write" if node.id in putenv_names else None)
        else:
            continue
        if kind == "environ":  # a read unless it is stored to, deleted from, or a mutating method
            parent = parents.get(node)
            if isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store | ast.Del):
                kind = "write"
            elif isinstance(parent, ast.Attribute) and parent.attr in _WRITE_METHODS:
                kind = "write"
            else:
                kind = "read"
        if kind is not None:
            uses.append((node.lineno, kind))
    return sorted(uses)


@pytest.mark.parametrize(("source", "expected"), [
    ("import os\nos.environ.get('A')", [(2, "read")]),
    ("import os\nx = os.environ['A']", [(2, "read")]),
    ("import os\nx = dict(os.environ)", [(2, "read")]),
    ("import os\nf(env=os.environ)", [(2, "read")]),
    ("import os\n'A' in os.environ", [(2, "read")]),
    ("import os\nos.getenv('A')", [(2, "read")]),
    ("import os as o\no.environ.get('A')", [(2, "read")]),
    ("from os import environ\nenviron.get('A')", [(2, "read")]),
    ("from os import getenv as g\ng('A')", [(2, "read")]),
    ("import os\nos.environ['A'] = '1'", [(2, "write")]),
    ("import os\nos.environ.pop('A', None)", [(2, "write")]),
    ("import os\nos.environ.setdefault('A', '1')", [(2, "write")]),
    ("import os\ndel os.environ['A']", [(2, "write")]),
    ("import os\nos.putenv('A', '1')", [(2, "write")]),
    ("import os\nos.path.join('a')\nenviron = {}\nenviron.get('A')", []),
])
def test_the_checker_tells_reads_from_writes(source, expected):
    assert environment_uses(source) == expected


def test_only_environment_py_reads_the_environment():
    reads, writes = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for line, kind in environment_uses(path.read_text(encoding="utf-8")):
            if kind == "read" and rel != READER:
                reads.append(f"{rel}:{line}")
            if kind == "write" and rel not in WRITERS:
                writes.append(f"{rel}:{line}")
    assert reads == []
    assert writes == []


def test_environment_imports_nothing_from_fastdata_but_errors():
    tree = ast.parse((PACKAGE / READER).read_text(encoding="utf-8"))
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert {m for m in modules if m.split(".")[0] == "fastdata"} <= {"fastdata.errors"}


def test_launcher_returns_the_set_launcher_variables_only(monkeypatch):
    for name in environment.LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("GROUP_RANK", "1")
    monkeypatch.setenv("UNRELATED", "x")
    assert environment.launcher() == {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_WORLD_SIZE": "2",
                                      "GROUP_RANK": "1"}
    assert World.from_env() == World(rank=3, world_size=4, local_rank=1, ranks_per_node=2)


def test_accessors_read_their_variables(monkeypatch):
    hooks = ("FASTDATA_TEST_PAUSE", "FASTDATA_TEST_PAUSE_DIR", "FASTDATA_TEST_DELAY", "FASTDATA_TEST_ENOSPC")
    for name in ("FASTDATA_ALLOW_INSECURE", "RAY_ADDRESS", *environment.ENDPOINT_VARIABLES, *hooks):
        monkeypatch.delenv(name, raising=False)
    assert (environment.allow_insecure(), environment.ray_address(), environment.endpoints()) == (
        False, None, {})
    assert (environment.pause_hook(), environment.pause_dir(), environment.delay_hook(),
            environment.enospc_hook()) == (None, ".", None, None)
    assert environment.forwarded_to_tasks() == (("FASTDATA_TEST_PAUSE", None),
                                                ("FASTDATA_TEST_PAUSE_DIR", None))
    monkeypatch.setenv("FASTDATA_ALLOW_INSECURE", "true")  # only "1" allows
    assert environment.allow_insecure() is False
    monkeypatch.setenv("FASTDATA_ALLOW_INSECURE", "1")
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("FASTDATA_TEST_PAUSE", "publish:2")
    monkeypatch.setenv("FASTDATA_TEST_PAUSE_DIR", "/tmp/p")
    monkeypatch.setenv("FASTDATA_TEST_DELAY", "gather:0.5")
    monkeypatch.setenv("FASTDATA_TEST_ENOSPC", "download:100")
    assert (environment.allow_insecure(), environment.ray_address(), environment.endpoints()) == (
        True, "ray://head:10001", {"AWS_ENDPOINT_URL": "http://minio:9000"})
    assert (environment.pause_hook(), environment.pause_dir(), environment.delay_hook(),
            environment.enospc_hook()) == ("publish:2", "/tmp/p", "gather:0.5", "download:100")
    assert environment.forwarded_to_tasks() == (("FASTDATA_TEST_PAUSE", "publish:2"),
                                                ("FASTDATA_TEST_PAUSE_DIR", "/tmp/p"))
    snap = environment.snapshot()
    assert snap["RAY_ADDRESS"] == "ray://head:10001"
    snap["RAY_ADDRESS"] = "changed"  # a copy: changing it changes nothing
    assert environment.ray_address() == "ray://head:10001"
