"""fastdata pack to Azure Blob (Azurite through adlfs): upload, manifest last, resume (E8)."""

from __future__ import annotations

import subprocess
import sys

import fsspec
import pytest
from _corpus import make_docs, write_jsonl
from test_pack_resume import kill_at

import fastdata

pytestmark = [pytest.mark.timeout(240), pytest.mark.multiprocess]


def blobs(conn: str, prefix: str) -> dict[str, bytes]:
    fs = fsspec.filesystem("az", connection_string=conn, skip_instance_cache=True)
    return {p.rsplit("/", 1)[1]: fs.cat_file(p) for p in sorted(fs.ls(prefix, detail=False))}


def cmd(src, url):
    return [sys.executable, "-P", "-m", "fastdata.cli.main", "pack", *src, "-o", url,
            "--shard-size", "16KB", "--workers", "2", "-q", "--compression", "zstd"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("az-corpus")
    return [write_jsonl(str(d / f"p{k}.jsonl"), make_docs(250, seed=20 + k)) for k in range(2)]


def test_pack_to_azure_and_read_back_with_az_and_abfs(tmp_path, corpus, container, azurite, az_env):
    proc = subprocess.run(cmd(corpus, f"az://{container}/ds"), env=az_env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    local = tmp_path / "local"
    subprocess.run(cmd(corpus, str(local)), check=True, timeout=120)
    with fastdata.open_dataset(str(local)) as ref:
        expected = [ref.doc(i).tolist() for i in range(ref.num_docs)]
    opts = {"connection_string": azurite["conn"], "allow_insecure": True}
    for scheme in ("az", "abfs"):
        with fastdata.open_dataset(f"{scheme}://{container}/ds", storage_options=opts,
                                   cache_dir=str(tmp_path / scheme)) as ds:
            assert [ds.doc(i).tolist() for i in range(ds.num_docs)] == expected
            assert azurite["conn"].split("AccountKey=")[1][:20] not in repr(ds)
    uploaded = blobs(azurite["conn"], f"{container}/ds")
    assert uploaded == {p.name: p.read_bytes() for p in local.iterdir()}  # same bytes as local


def test_killed_upload_leaves_no_manifest_and_resumes(tmp_path, corpus, container, azurite, az_env,
                                                      monkeypatch):
    url = f"az://{container}/ds"
    kill_at("mid_upload", 4, cmd(corpus, url), tmp_path)
    names = blobs(azurite["conn"], f"{container}/ds")
    assert "manifest.json" not in names
    assert ".fastdata-pack.json" in names and len([n for n in names if n.endswith(".zst")]) == 3
    with pytest.raises(fastdata.FastdataFormatError, match="manifest.json does not exist"):
        fastdata.open_dataset(url, storage_options={"connection_string": azurite["conn"],
                                                    "allow_insecure": True})
    proc = subprocess.run(cmd(corpus, url), env=az_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "resumed after 3 finished shards" in proc.stdout
    local = tmp_path / "local"
    subprocess.run(cmd(corpus, str(local)), check=True, timeout=120)
    assert blobs(azurite["conn"], f"{container}/ds") == {p.name: p.read_bytes()
                                                         for p in local.iterdir()}
