"""The reader moved to ``fastdata.reader``: the old module names keep working and say so once."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)

CHECK = """
import warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import fastdata.dataset as old
    import fastdata.dataset as again
    import fastdata.shard_files as old_files
import fastdata.reader as reader
import fastdata.reader.files as files
assert old.Dataset is reader.Dataset and old.open_dataset is reader.open_dataset
assert old.verify_dataset is reader.verify_dataset and old.load_manifest is reader.load_manifest
assert old_files.ShardFiles is files.FastdataFiles and old_files.check_file is files.check_file
print(len(caught), "|".join(f"{w.category.__name__}:{w.message}" for w in caught))
"""


def test_old_module_names_still_work_and_warn_once_each():
    out = subprocess.run([sys.executable, "-P", "-c", CHECK], capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stderr
    count, text = out.stdout.strip().split(" ", 1)
    assert count == "2", text
    warnings = text.split("|")
    assert warnings[0].startswith("DeprecationWarning:fastdata.dataset moved to fastdata.reader")
    assert warnings[1].startswith("DeprecationWarning:fastdata.shard_files moved to fastdata.reader.files")


def test_the_package_root_names_the_reader():
    import fastdata
    import fastdata.reader

    assert fastdata.open_dataset is fastdata.reader.open_dataset
    assert fastdata.Dataset is fastdata.reader.Dataset
