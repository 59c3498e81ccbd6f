"""G4 on the failure paths: a SAS token (a canary) in the dataset URL never shows in an error
message, a traceback, a DEBUG log, stderr of a failing child, or any file fastdata writes to
the cache, whether the failure is a 403, an unresolvable host, a stalled link or a corrupt
object. Real Azurite (blob endpoint over HTTP) and the real TCP fault proxy."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import traceback

import pytest
from _fs import proxied
from _loader import packed_dataset
from _sas import publish_with_sas

import fastdata

pytestmark = pytest.mark.timeout(120)
CANARY = "SIGCANARY123"


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    return packed_dataset(str(tmp_path_factory.mktemp("g4")), docs=120, shard_size=4096)


@pytest.fixture
def published(azurite, container, local):
    out = publish_with_sas(azurite, container, local)
    out["sas"] += f"&canary={CANARY}"  # the real signature is a secret too; the canary rides along
    return out


def secrets_of(published: dict) -> list[str]:
    from urllib.parse import quote

    return [CANARY, published["sig"], quote(published["sig"], safe="")]


def assert_clean(published: dict, *texts: str) -> None:
    for text in texts:
        for secret in secrets_of(published):
            assert secret not in text, f"{secret[:6]}... leaked in: {text[:300]}"


def cache_files_text(root) -> str:
    out = []
    for dirpath, _, names in os.walk(root):
        for n in names:
            with open(os.path.join(dirpath, n), "rb") as f:
                out.append(f.read().decode("latin-1"))
    return "\n".join(out)


def failing(source: str, cache, caplog, **options) -> str:
    """Everything a user could see of a failed read: message, traceback, DEBUG logs."""
    caplog.set_level(logging.DEBUG)
    with pytest.raises(fastdata.FastdataError) as err:
        ds = fastdata.TokenDataset(source, seq_len=31, batch_size=2, cache_dir=str(cache),
                                   storage_options={"allow_insecure": True, **options})
        for _ in ds:
            pass
    return "\n".join([str(err.value), "".join(traceback.format_exception(err.value)), caplog.text,
                      repr(err.value)])


def test_forbidden(published, tmp_path, caplog):
    bad = published["sas"].replace(published["sig"], "AAAA" + published["sig"][4:])
    url = f"http://127.0.0.1:{published['port']}/devstoreaccount1/{published['container']}/ds?{bad}"
    seen = failing(url, tmp_path / "cache", caplog)
    assert "403" in seen or "denied" in seen.lower() or "not authorized" in seen.lower() or "failed" in seen
    assert_clean(published, seen, cache_files_text(tmp_path / "cache"))


def test_unresolvable_host(published, tmp_path, caplog):
    url = f"http://nonexistent.invalid/devstoreaccount1/c/ds?{published['sas']}"
    seen = failing(url, tmp_path / "cache", caplog, connection_timeout=2)
    assert "nonexistent.invalid" in seen
    assert_clean(published, seen)


def test_stalled_link(published, tmp_path, caplog):
    with proxied(published["port"]) as proxy:
        proxy.faults.stall_after = 2500  # the manifest gets through, the shards hang
        url = f"http://127.0.0.1:{proxy.port}/devstoreaccount1/{published['container']}/ds?{published['sas']}"
        seen = failing(url, tmp_path / "cache", caplog, read_timeout=1)
    assert_clean(published, seen, cache_files_text(tmp_path / "cache"))


def test_corrupt_object(published, tmp_path, caplog):
    fs, container = published["fs"], published["container"]
    path = f"{container}/ds/shard-00000.fds"
    data = bytearray(fs.cat_file(path))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(path, bytes(data))
    url = f"http://127.0.0.1:{published['port']}/devstoreaccount1/{container}/ds?{published['sas']}"
    seen = failing(url, tmp_path / "cache", caplog)
    assert "xxh3_128" in seen
    assert_clean(published, seen, cache_files_text(tmp_path / "cache"))


WORKER_CRASH = """
import sys, fastdata
url, cache = sys.argv[1:3]
ds = fastdata.TokenDataset(url, seq_len=31, batch_size=2, storage_options={"allow_insecure": True},
                           cache_dir=cache)
loader = fastdata.DataLoader(ds, batch_size=2, backend="processes", num_workers=2, timeout=20)
it = iter(loader)
next(it)
import psutil
for child in psutil.Process().children():  # the worker processes die mid-epoch
    child.kill()
for _ in it:
    pass
"""


@pytest.mark.multiprocess
def test_worker_crash_stderr(published, tmp_path):
    url = f"http://127.0.0.1:{published['port']}/devstoreaccount1/{published['container']}/ds?{published['sas']}"
    out = subprocess.run([sys.executable, "-P", "-c", WORKER_CRASH, url, str(tmp_path / "cache")],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode != 0
    assert_clean(published, out.stdout, out.stderr, cache_files_text(tmp_path / "cache"))
