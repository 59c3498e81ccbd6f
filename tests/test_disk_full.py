"""A full disk on the real write paths (audit §5.8): a download, a zstd shard's decompression
and the LMDB bookkeeping each end in a FastdataCacheError naming where, what was needed and
what is free; nothing is retried, no temp file is left, and what was published stays intact.

The download and decompression cases use the ``FASTDATA_TEST_ENOSPC`` fault hook
(``fastdata._testing.disk_point``), so they run on machines without user namespaces; the
LMDB case fills a real tmpfs where one can be mounted."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import xxhash
from _corpus import make_docs, write_jsonl
from _rangeserver import RangeServer
from _sandbox import tmpfs_works

import fastdata
from fastdata import _testing
from fastdata.pack.encode import EncodeOptions, ReadOptions
from fastdata.pack.pipeline import PackConfig, pack
from fastdata.pack.tokenizers import TokenizerSpec

pytestmark = pytest.mark.timeout(60)
INSECURE = {"allow_insecure": True}


@pytest.fixture(scope="module")
def zstd_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("zst")
    src = write_jsonl(str(root / "c.jsonl"), make_docs(200, seed=4, long_every=50))
    pack(PackConfig(inputs=(src,), output=str(root / "ds"), shard_size=8192, compression="zstd",
                    encode=EncodeOptions(ReadOptions(), TokenizerSpec("bytes"))))
    return root


@pytest.fixture
def server(zstd_dataset, tmp_path):
    shutil.copytree(zstd_dataset / "ds", tmp_path / "ds")
    with RangeServer(str(tmp_path)) as s:
        yield s


@pytest.fixture
def enospc(monkeypatch):
    """Set the fault hook for this test; its byte counters start at zero."""
    _testing._written.clear()

    def arm(site: str, after: int) -> None:
        monkeypatch.setenv("FASTDATA_TEST_ENOSPC", f"{site}:{after}")
    yield arm
    _testing._written.clear()


def shard_entries(ds_dir: Path) -> list[dict]:
    return json.loads((ds_dir / "manifest.json").read_text())["shards"]


def iterate(source: str, **options) -> None:
    for _ in fastdata.TokenDataset(source, seq_len=31, shuffle=False, batch_size=2, **options):
        pass


def temp_files(root: Path) -> list[str]:
    return [n for _, _, names in os.walk(root) for n in names if n.startswith(".fastdata-tmp")]


def published_are_intact(cache: Path, shards: list[dict]) -> int:
    """Hash every published raw shard in the cache against the manifest; returns how many."""
    want = {s["name"].removesuffix(".zst"): s["raw_xxh3_128"] for s in shards}
    seen = 0
    for dirpath, _, names in os.walk(cache):
        for n in names:
            if n in want:
                assert xxhash.xxh3_128_hexdigest(Path(dirpath, n).read_bytes()) == want[n], n
                seen += 1
    return seen


def test_download_into_the_node_cache(server, tmp_path, enospc, monkeypatch):
    # on demand only: a prefetcher's own (failed) attempt would be a second, separate GET
    monkeypatch.setattr(fastdata.TokenDataset, "prefetch_bytes", 0)
    shards = shard_entries(Path(server.root) / "ds")
    enospc("download", shards[0]["stored_bytes"] + shards[1]["stored_bytes"] // 2)  # shard 1 fails
    cache = tmp_path / "cache"
    with pytest.raises(fastdata.FastdataCacheError, match=r"needed \d+ bytes, -?\d+ (bytes )?free") as err:
        iterate(server.url + "/ds", storage_options=INSECURE, cache_dir=str(cache), cache_limit="64MB")
    assert str(cache) in str(err.value)
    gets = [r for r in server.requests("GET") if r.path.endswith(shards[1]["name"])]
    assert len(gets) == 1  # a full disk is not retried
    assert temp_files(cache) == []
    assert published_are_intact(cache, shards) >= 1


def test_decompression_into_the_node_cache(zstd_dataset, tmp_path, enospc):
    shards = shard_entries(zstd_dataset / "ds")
    enospc("decompress", shards[0]["raw_bytes"] + 1)
    cache = tmp_path / "cache"
    with pytest.raises(fastdata.FastdataCacheError, match=rf"node cache {cache}: disk full while writing "
                                                          r".*needed \d+ bytes, \d+ bytes free"):
        iterate(str(zstd_dataset / "ds"), cache_dir=str(cache), cache_limit="64MB")
    assert temp_files(cache) == []
    assert published_are_intact(cache, shards) == 1


def test_decompression_into_a_plain_cache_dir(zstd_dataset, tmp_path, enospc):
    shards = shard_entries(zstd_dataset / "ds")
    enospc("decompress", shards[0]["raw_bytes"] + 1)
    cache = tmp_path / "cache"
    with pytest.raises(fastdata.FastdataCacheError, match=r"cache directory .*: disk full while writing "
                                                          r"shard-\d+\.fds: needed \d+ bytes"):
        iterate(str(zstd_dataset / "ds"), cache_dir=str(cache))
    assert temp_files(cache) == []
    assert published_are_intact(cache, shards) == 1


def test_lmdb_bookkeeping_on_a_full_disk_is_a_named_error(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if not tmpfs_works(disk):
        pytest.skip("unprivileged user namespaces with tmpfs mounts are not available")
    code = ("import sys\nfrom fastdata.storage.cache import NodeCache\n"
            "try:\n    NodeCache(sys.argv[1], '1MB')\nexcept Exception as e:\n"
            "    print(type(e).__name__, e)\n")
    fill = f"head -c {1024 * 1024 - 4096} /dev/zero > {shlex.quote(str(disk / 'filler'))}"
    script = (f"mount -t tmpfs -o size=1m none {shlex.quote(str(disk))} && {fill} && "
              f"{shlex.join([sys.executable, '-P', '-c', code, str(disk / 'cache')])}")
    out = subprocess.run(["unshare", "-Urm", "sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("FastdataCacheError node cache bookkeeping "), out.stdout + out.stderr
    assert "the disk is full" in out.stdout and "Traceback" not in out.stderr
