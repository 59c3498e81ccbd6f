"""``fastdata pack --engine ray`` run from a source checkout: the workers import the installed packages.

Ray puts the driver's working directory on its workers' ``sys.path``, so a source tree's
``fastdata/`` (without the compiled ``_native``) shadowed the installed package in every task.
Here the working directory holds a package that breaks when imported, named after one that
the pack tasks import (``xxhash``; with an editable install the ``fastdata`` import itself is
redirected, so its name alone would not show the shadowing), and the paths are relative to it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess, pytest.mark.timeout(150)]

CORPUS = Path(__file__).resolve().parent.parent / "examples" / "corpus" / "stdlib_docs.jsonl"


def pack(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    return subprocess.run([sys.executable, "-P", "-m", "fastdata.cli.main", "pack", "-q", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def test_ray_pack_from_a_checkout_imports_the_installed_packages(tmp_path):
    checkout = tmp_path / "checkout"
    (checkout / "xxhash").mkdir(parents=True)
    (checkout / "xxhash" / "__init__.py").write_text(
        "raise ImportError('imported the copy in the working directory')\n")
    (checkout / "corpus").mkdir()
    (checkout / "corpus" / "docs.jsonl").write_bytes(CORPUS.read_bytes())

    ray_run = pack(checkout, "corpus/docs.jsonl", "-o", "out/ray", "--engine", "ray", "--workers", "2")
    assert ray_run.returncode == 0, ray_run.stdout + ray_run.stderr
    assert "working directory" not in ray_run.stderr
    local = pack(checkout, "corpus/docs.jsonl", "-o", "out/local")
    assert local.returncode == 0, local.stderr
    # Relative inputs and outputs resolved against the caller's directory, on the workers too.
    out = checkout / "out"
    names = sorted(os.listdir(out / "local"))
    assert sorted(os.listdir(out / "ray")) == names
    for name in names:
        assert (out / "ray" / name).read_bytes() == (out / "local" / name).read_bytes(), name
