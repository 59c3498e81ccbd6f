"""TokenDataset streaming from Azurite through the node cache and the fault proxy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from _corpus import make_docs, write_jsonl
from _fs import DiskMonitor, proxied
from _loader import ids_of
from conftest import connection_string

import fastdata

pytestmark = [pytest.mark.timeout(240), pytest.mark.multiprocess]


def pack(src, out, env=None):
    subprocess.run([sys.executable, "-P", "-m", "fastdata.cli.main", "pack", src, "-o", str(out),
                    "--shard-size", "16KB", "--compression", "zstd", "-q"], check=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def remote(azurite, tmp_path_factory):
    """The same corpus packed locally and to Azurite (one container for the module)."""
    import fsspec

    d = tmp_path_factory.mktemp("stream")
    src = write_jsonl(str(d / "c.jsonl"), make_docs(500, seed=31, long_every=0))
    pack(src, d / "local")
    fs = fsspec.filesystem("az", connection_string=azurite["conn"], skip_instance_cache=True)
    fs.mkdir("stream")
    pack(src, "az://stream/ds", env=dict(os.environ, AZURE_STORAGE_CONNECTION_STRING=azurite["conn"],
                                                FASTDATA_ALLOW_INSECURE="1"))
    with fastdata.open_dataset(str(d / "local")) as ds:
        raw = [s.raw_bytes for s in ds.shards]
    return {"local": str(d / "local"), "url": "az://stream/ds", "raw": raw}


def azure_options(azurite) -> dict:
    return {"connection_string": azurite["conn"], "allow_insecure": True}  # Azurite is plain HTTP


def reference_ids(local: str) -> list[int]:
    return ids_of(fastdata.DataLoader(fastdata.TokenDataset(local, seq_len=32, seed=3), batch_size=4,
                                      num_workers=0))


def test_stream_through_a_small_node_cache(remote, azurite, tmp_path):
    expected = reference_ids(remote["local"])
    limit = max(remote["raw"]) * 6
    assert limit < sum(remote["raw"])  # the cache cannot hold the dataset
    cache = tmp_path / "cache"
    for scheme in ("az", "abfs"):
        ds = fastdata.TokenDataset(remote["url"].replace("az://", f"{scheme}://"), seq_len=32, seed=3,
                                   cache_dir=str(cache), cache_limit=limit,
                                   storage_options=azure_options(azurite))
        with DiskMonitor([cache]) as monitor:
            got = ids_of(fastdata.DataLoader(ds, batch_size=4, num_workers=2, prefetch_bytes=limit // 2))
        assert got == expected, scheme  # same order as the local copy: same dataset fingerprint
        assert 0 < monitor.peak <= limit
    with fastdata.open_dataset(remote["local"]) as local:
        ds = fastdata.TokenDataset(remote["url"], seq_len=32, seed=3, cache_dir=str(cache), cache_limit=limit,
                                   storage_options=azure_options(azurite))
        batch = next(iter(fastdata.DataLoader(ds, batch_size=4, num_workers=0)))
        shard, offset = ds.assembler().window(int(batch["sample_ids"][0]))
        start = int(ds.assembler().token_starts[shard]) + offset
        assert batch["input_ids"][0].tolist() == local.tokens(start, start + 32).tolist()


def test_impossible_cache_limit_is_refused_up_front(remote, azurite, tmp_path):
    with pytest.raises(fastdata.FastdataConfigError, match="use at least"):
        fastdata.TokenDataset(remote["url"], seq_len=32, cache_dir=str(tmp_path / "c"),
                              cache_limit=max(remote["raw"]) * 2,
                              storage_options=azure_options(azurite))
    assert not any(n.endswith(".fds") for _, _, names in os.walk(tmp_path / "c") for n in names)


def test_resets_on_the_wire_do_not_change_the_stream(remote, azurite, tmp_path):
    expected = reference_ids(remote["local"])
    with proxied(azurite["port"]) as proxy:
        proxy.faults.reset_after, proxy.faults.fault_conns = 3000, 6
        ds = fastdata.TokenDataset(remote["url"], seq_len=32, seed=3, cache_dir=str(tmp_path / "cache"),
                                   cache_limit=max(remote["raw"]) * 8,
                                   storage_options={"connection_string": connection_string(proxy.port),
                                                    "allow_insecure": True})
        got = ids_of(fastdata.DataLoader(ds, batch_size=4, num_workers=2))
        assert proxy.counters.faults >= 1
    assert got == expected


def test_warm_cache_makes_no_data_gets_and_heals_damage(remote, azurite, tmp_path):
    with proxied(azurite["port"]) as proxy:
        opts = {"connection_string": connection_string(proxy.port), "allow_insecure": True}
        cache = tmp_path / "cache"
        limit = sum(remote["raw"]) * 2  # everything fits: the second epoch is warm

        def run() -> list[int]:
            ds = fastdata.TokenDataset(remote["url"], seq_len=32, seed=3, cache_dir=str(cache),
                                       cache_limit=limit, storage_options=opts)
            return ids_of(fastdata.DataLoader(ds, batch_size=4, num_workers=2))

        first = run()
        proxy.reset_counters()
        assert run() == first
        gets = [r for r in proxy.requests if r.method == "GET" and ".fds" in r.path]
        assert gets == []  # warm: no shard downloads
        files = sorted(os.path.join(p, n) for p, _, names in os.walk(cache)
                       for n in names if n.endswith(".fds"))
        assert files
        with open(files[0], "r+b") as f:  # flip a byte in one cached shard
            f.seek(5000)
            b = f.read(1)
            f.seek(5000)
            f.write(bytes([b[0] ^ 1]))
        proxy.reset_counters()
        assert run() == first
        fetched = {r.path.rsplit("/", 1)[-1] for r in proxy.requests
                   if r.method == "GET" and ".fds" in r.path}
        assert fetched == {os.path.basename(files[0]) + ".zst"}  # exactly the damaged shard again
