"""fastdata pack from az:// inputs (Azurite through adlfs): the local copy's dataset, globs,
clear errors without credentials, and resume after a kill."""

from __future__ import annotations

import json
import subprocess
import sys

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _corpus import files_bytes, make_docs, write_jsonl
from _rangeserver import RangeServer
from test_pack_resume import kill_at

import fastdata

pytestmark = [pytest.mark.timeout(240), pytest.mark.multiprocess]


def cmd(src, out, *extra):
    return [sys.executable, "-P", "-m", "fastdata.cli.main", "pack", *map(str, src), "-o", str(out),
            "--shard-size", "16KB", "--workers", "2", "-q", *extra]


def shards(out) -> dict[str, bytes]:
    return {n: b for n, b in files_bytes(str(out)).items() if ".fds" in n}


def same_dataset(out, ref) -> None:
    assert shards(out) == shards(ref) and shards(ref)
    fp = [json.loads((d / "manifest.json").read_text())["fingerprint"] for d in (out, ref)]
    assert fp[0] == fp[1]


@pytest.fixture(scope="module")
def local_corpus(tmp_path_factory):
    """Two JSONL files (one of two 1 MiB blocks) and a Parquet file of 4 row groups."""
    d = tmp_path_factory.mktemp("az-in")
    write_jsonl(str(d / "a.jsonl"), make_docs(2600, seed=31))
    write_jsonl(str(d / "b.jsonl"), make_docs(200, seed=32))
    text = make_docs(800, seed=33)
    pq.write_table(pa.table({"id": list(range(len(text))), "text": text}), str(d / "c.parquet"),
                   row_group_size=200)
    return d


@pytest.fixture(scope="module")
def reference(tmp_path_factory, local_corpus):
    out = tmp_path_factory.mktemp("az-in-ref") / "ds"
    subprocess.run(cmd(sorted(local_corpus.iterdir()), out), check=True, timeout=120)
    return out


@pytest.fixture
def raw(azurite, container, local_corpus):
    """The corpus uploaded under az://CONTAINER/raw/."""
    fs = fsspec.filesystem("az", connection_string=azurite["conn"], skip_instance_cache=True)
    for p in sorted(local_corpus.iterdir()):
        fs.pipe_file(f"{container}/raw/{p.name}", p.read_bytes())
    return f"az://{container}/raw"


def test_cli_pack_of_az_inputs_is_the_local_copys_dataset(tmp_path, raw, reference, az_env):
    urls = [f"{raw}/a.jsonl", f"{raw}/b.jsonl", f"{raw}/c.parquet"]
    proc = subprocess.run(cmd(urls, tmp_path / "out"), env=az_env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    same_dataset(tmp_path / "out", reference)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [i["path"] for i in manifest["provenance"]["inputs"]] == urls


def test_python_pack_of_a_remote_glob_and_folder(tmp_path, raw, reference, local_corpus, azurite):
    opts = {"connection_string": azurite["conn"], "allow_insecure": True}
    result = fastdata.pack(f"{raw}/*.jsonl", tmp_path / "glob", storage_options=opts, shard_size="16KB",
                           workers=1)
    subprocess.run(cmd([local_corpus / "a.jsonl", local_corpus / "b.jsonl"], tmp_path / "ref"),
                   check=True, timeout=120)
    same_dataset(tmp_path / "glob", tmp_path / "ref")
    assert result.docs == 2800
    abfs = raw.replace("az://", "abfs://")
    fastdata.pack(abfs, tmp_path / "folder", storage_options=opts, shard_size="16KB", workers=2)
    same_dataset(tmp_path / "folder", reference)


def test_missing_remote_input_names_the_redacted_url(tmp_path, raw, azurite):
    opts = {"connection_string": azurite["conn"], "allow_insecure": True}
    url = f"{raw}/nope.jsonl?sv=2024-01-01&sig=TOPSECRETSIG"
    with pytest.raises(fastdata.FastdataInputError) as e:
        fastdata.pack(url, tmp_path / "out", storage_options=opts)
    message = str(e.value)
    assert f"{raw}/nope.jsonl?<redacted>: input does not exist" in message
    assert "TOPSECRETSIG" not in message and azurite["conn"].split("AccountKey=")[1][:12] not in message
    with pytest.raises(fastdata.FastdataInputError, match=r"raw/\*\.txt: input does not exist"):
        fastdata.pack(f"{raw}/*.txt", tmp_path / "out", storage_options=opts)
    with pytest.raises(fastdata.FastdataInputError, match=r"az://no-such-container/x\.jsonl: input does"):
        fastdata.pack("az://no-such-container/x.jsonl", tmp_path / "out", storage_options=opts)


def test_killed_remote_pack_resumes_to_the_same_bytes(tmp_path, raw, reference, az_env):
    out = tmp_path / "ds"
    urls = [f"{raw}/a.jsonl", f"{raw}/b.jsonl", f"{raw}/c.parquet"]
    kill_at("mid_shard", 40, cmd(urls, out), tmp_path)
    assert not (out / "manifest.json").exists()
    finished = json.loads((out / ".fastdata-pack.json").read_text())["shards"]
    assert finished
    proc = subprocess.run(cmd(urls, out), env=az_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"resumed after {len(finished)} finished shards" in proc.stdout
    same_dataset(out, reference)


@pytest.mark.slow
def test_ray_engine_reads_az_inputs(tmp_path, raw, reference, azurite):
    pytest.importorskip("ray")
    opts = {"connection_string": azurite["conn"], "allow_insecure": True}
    urls = [f"{raw}/a.jsonl", f"{raw}/b.jsonl", f"{raw}/c.parquet"]
    result = fastdata.pack(urls, tmp_path / "ray", engine="ray", workers=2, shard_size="16KB",
                           storage_options=opts)
    same_dataset(tmp_path / "ray", reference)
    assert result.docs == 2600 + 200 + 800


def test_https_style_input_retries_503s_and_keeps_its_query_out_of_messages(tmp_path, local_corpus):
    """An http(s) URL with a SAS-style query: the read path's retries (503 + Retry-After) and
    redaction apply to inputs; the dataset is the local copy's."""
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "a.jsonl").write_bytes((local_corpus / "a.jsonl").read_bytes())
    subprocess.run(cmd([local_corpus / "a.jsonl"], tmp_path / "ref"), check=True, timeout=120)
    with RangeServer(str(tmp_path / "srv")) as server:
        server.fault("/a.jsonl").throttle = 3
        server.fault("/a.jsonl").retry_after = 0.05
        url = f"{server.url}/a.jsonl?sv=1&sig=TOPSECRETSIG"
        fastdata.pack(url, tmp_path / "out", storage_options={"allow_insecure": True},
                      shard_size="16KB", workers=2)
        assert [r.status for r in server.requests()][:3] == [503, 503, 503]
        assert all("sig=TOPSECRETSIG" in r.path for r in server.requests())  # the query is sent
        with pytest.raises(fastdata.FastdataInputError) as e:
            fastdata.pack(f"{server.url}/missing.jsonl?sig=TOPSECRETSIG", tmp_path / "x",
                          storage_options={"allow_insecure": True})
    same_dataset(tmp_path / "out", tmp_path / "ref")
    assert "missing.jsonl?<redacted>: input does not exist" in str(e.value)
    assert "TOPSECRETSIG" not in str(e.value)
