"""fastdata.pack from Python: the same bytes as the CLI; iterables of dicts, Hugging Face
datasets and save_to_disk directories give the dataset a JSONL file of the same records gives."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _corpus import files_bytes, make_docs, train_bpe, write_jsonl
from test_pack_resume import kill_at

import fastdata
from fastdata.pack.api import build_config
from fastdata.pack.pipeline import PackProgress

pytestmark = pytest.mark.timeout(120)
datasets = pytest.importorskip("datasets")
datasets.disable_progress_bars()


def cli(inputs, out, *extra):
    proc = subprocess.run([sys.executable, "-P", "-m", "fastdata.cli.main", "pack", *map(str, inputs),
                           "-o", str(out), "-q", "--shard-size", "16KB", *extra],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


def shards(out) -> dict[str, bytes]:
    return {n: b for n, b in files_bytes(str(out)).items() if ".fds" in n}


def fingerprint(out) -> str:
    return json.loads((out / "manifest.json").read_text())["fingerprint"]


def same_dataset(out, ref) -> None:
    """Same shards, byte for byte, and the same dataset fingerprint."""
    assert shards(out) == shards(ref) and shards(ref)
    assert fingerprint(out) == fingerprint(ref)


@pytest.fixture(scope="module")
def docs():
    return make_docs(400, seed=5)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, docs):
    d = tmp_path_factory.mktemp("api-corpus")
    return write_jsonl(str(d / "c.jsonl"), docs)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus):
    """The local CLI pack of the corpus: what every other route must reproduce."""
    out = tmp_path_factory.mktemp("api-ref") / "ds"
    cli([corpus], out)
    return out


def test_python_pack_writes_the_cli_bytes_and_reports_counts(tmp_path, corpus, docs, bpe_path):
    ref = tmp_path / "cli"
    cli([corpus], ref, "--tokenizer", bpe_path, "--compression", "zstd", "--workers", "2", "--bos")
    seen: list[tuple[int, int]] = []

    def progress(p: PackProgress) -> None:
        seen.append((p.docs, p.shards))

    result = fastdata.pack(corpus, tmp_path / "py", tokenizer=bpe_path, compression="zstd", workers=2,
                           bos=True, shard_size="16KB", progress=progress)
    assert files_bytes(str(tmp_path / "py")) == files_bytes(str(ref))  # manifest included
    with fastdata.open_dataset(str(ref)) as ds:
        expected_tokens = ds.num_tokens
        assert result.docs == ds.num_docs == len(docs)
        assert result.shards == len(ds.shards) > 3
    assert result.tokens == expected_tokens
    assert result.bytes == sum(len(b) for b in shards(ref).values())
    assert result.skipped == {} and result.fingerprint == fingerprint(ref)
    # one call per input task (a 1 MiB block), running totals ending at the result's
    assert len(seen) == 1 and seen[-1] == (len(docs), result.shards)


def test_config_object_and_cli_flags_as_keywords(tmp_path, corpus, reference):
    config = build_config([corpus], tmp_path / "cfg", {"shard_size": "16KB"})
    fastdata.pack(config)
    assert files_bytes(str(tmp_path / "cfg")) == files_bytes(str(reference))
    with pytest.raises(fastdata.FastdataConfigError, match="either a PackConfig"):
        fastdata.pack(config, tmp_path / "other")
    with pytest.raises(fastdata.FastdataConfigError, match="unknown pack option 'text_feild'"):
        fastdata.pack(corpus, tmp_path / "x", text_feild="body")
    with pytest.raises(fastdata.FastdataConfigError, match="needs an output"):
        fastdata.pack(corpus)
    with pytest.raises(fastdata.FastdataConfigError, match="no input files found"):
        fastdata.pack([], tmp_path / "none")


def test_skipped_records_counted_by_reason(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "ok"}\n{"text": 5}\nnot json\n{"other": 1}\n{"text": "fine"}\n{"text": 7}\n')
    result = fastdata.pack(src, tmp_path / "out", on_error="skip")
    assert result.docs == 2
    assert result.skipped == {"field 'text' is not a string": 2, "invalid JSON": 1,
                              "missing field 'text'": 1}
    with pytest.raises(fastdata.FastdataInputError, match=r"bad\.jsonl:2: field 'text' is not a string"):
        fastdata.pack(src, tmp_path / "raise")


def test_iterable_of_dicts_gives_the_cli_dataset(tmp_path, docs, reference):
    result = fastdata.pack([{"text": d, "id": i} for i, d in enumerate(docs)], tmp_path / "list",
                           shard_size="16KB", workers=2)
    same_dataset(tmp_path / "list", reference)
    assert result.docs == len(docs)
    fastdata.pack(({"text": d} for d in docs), tmp_path / "gen", shard_size="16KB")  # a generator
    same_dataset(tmp_path / "gen", reference)
    bad = [{"text": docs[0]}, "not a dict", {"body": "x"}, {"text": docs[1]}]
    result = fastdata.pack(bad, tmp_path / "bad", on_error="skip")
    assert result.skipped == {"record is not a dict": 1, "missing field 'text'": 1} and result.docs == 2
    with pytest.raises(fastdata.FastdataInputError, match=r"list:record 1: record is not a dict"):
        fastdata.pack(bad, tmp_path / "raise")


def test_datasets_dataset_and_iterable_dataset(tmp_path, docs, reference):
    ds = datasets.Dataset.from_dict({"id": list(range(len(docs))), "body": docs})
    fastdata.pack(ds, tmp_path / "ds", text_field="body", shard_size="16KB", workers=2)
    same_dataset(tmp_path / "ds", reference)
    fastdata.pack(ds.to_iterable_dataset(num_shards=3), tmp_path / "it", text_field="body",
                  shard_size="16KB")
    same_dataset(tmp_path / "it", reference)
    with pytest.raises(fastdata.FastdataInputError, match=r"Dataset: no column 'text' \(columns: id, body\)"):
        fastdata.pack(ds, tmp_path / "nocol")


def test_chat_records_from_a_dataset(tmp_path, docs):
    chats = [[{"role": "user", "content": d[:30]}, {"role": "assistant", "content": d}] for d in docs[:80]]
    src = tmp_path / "chat.jsonl"
    src.write_text("".join(json.dumps({"messages": c}) + "\n" for c in chats))
    cli([src], tmp_path / "ref", "--chat")
    ds = datasets.Dataset.from_dict({"messages": chats})
    fastdata.pack(ds, tmp_path / "ds", chat=True, shard_size="16KB")
    same_dataset(tmp_path / "ds", tmp_path / "ref")
    ds.save_to_disk(str(tmp_path / "saved"))
    cli([tmp_path / "saved"], tmp_path / "from-saved", "--chat")
    same_dataset(tmp_path / "from-saved", tmp_path / "ref")
    with fastdata.open_dataset(str(tmp_path / "ds")) as got:
        assert got.manifest.has_loss_mask


def test_save_to_disk_directory_and_parquet_export_via_cli(tmp_path, docs, reference):
    ds = datasets.Dataset.from_dict({"body": docs, "n": list(range(len(docs)))})
    ds.save_to_disk(str(tmp_path / "saved"), num_shards=2)
    cli([tmp_path / "saved"], tmp_path / "from-saved", "--text-field", "body")
    same_dataset(tmp_path / "from-saved", reference)
    export = tmp_path / "export" / "default" / "train"
    export.mkdir(parents=True)
    half = len(docs) // 2  # an HF Parquet export: numbered files in a split folder
    ds.select(range(half)).to_parquet(str(export / "0000.parquet"), batch_size=50)
    ds.select(range(half, len(docs))).to_parquet(str(export / "0001.parquet"), batch_size=50)
    cli([tmp_path / "export"], tmp_path / "from-parquet", "--text-field", "body")
    same_dataset(tmp_path / "from-parquet", reference)
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dict"))
    proc = subprocess.run([sys.executable, "-P", "-m", "fastdata.cli.main", "pack", str(tmp_path / "dict"),
                           "-o", str(tmp_path / "x"), "-q"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "saved DatasetDict; pack one split directory" in proc.stderr
    assert os.path.join(str(tmp_path / "dict"), "train") in proc.stderr


def test_memory_urls_read_in_pieces_give_the_local_dataset(tmp_path, docs, bpe_path):
    """Remote inputs of every kind (fsspec memory store): JSONL blocks, Parquet row groups
    (footer plus one column's chunks), gzip and plain text give the local copy's shards."""
    import fsspec

    local = tmp_path / "local"
    local.mkdir()
    big = make_docs(2600, seed=9)  # about 1.7 MB: two 1 MiB blocks
    write_jsonl(str(local / "a.jsonl"), big)
    # row groups of ~250 KB, larger than the footer read: each task fetches its own chunks
    pq.write_table(pa.table({"n": list(range(len(big))), "text": big}), str(local / "b.parquet"),
                   row_group_size=400, compression="none")
    with gzip.open(local / "c.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": d}) + "\n" for d in docs[:50])
    (local / "d.txt").write_text(docs[3], encoding="utf-8")
    fs = fsspec.filesystem("memory")
    try:
        for p in sorted(local.iterdir()):
            fs.pipe_file(f"/h14-inputs/raw/{p.name}", p.read_bytes())
        cli([local], tmp_path / "ref", "--tokenizer", bpe_path)
        result = fastdata.pack("memory://h14-inputs/raw", tmp_path / "remote", tokenizer=bpe_path,
                               shard_size="16KB", workers=2)
        same_dataset(tmp_path / "remote", tmp_path / "ref")
        assert result.docs == 2 * len(big) + 50 + 1
        fastdata.pack("memory://h14-inputs/raw/*.parquet", tmp_path / "glob", shard_size="16KB")
        cli([local / "b.parquet"], tmp_path / "glob-ref")
        same_dataset(tmp_path / "glob", tmp_path / "glob-ref")
    finally:
        fs.rm("/h14-inputs", recursive=True)


RESUMABLE = """
import sys
sys.path.insert(0, {tests!r})
import datasets
import fastdata
from _corpus import make_docs

if __name__ == "__main__":
    datasets.disable_progress_bars()
    ds = datasets.Dataset.from_dict({{"text": make_docs(3000, seed=7)}})
    result = fastdata.pack(ds, {out!r}, shard_size="16KB", workers=2)
    print("resumed", result.progress.resumed_shards)
"""


@pytest.mark.multiprocess
def test_killed_pack_of_a_dataset_resumes(tmp_path):
    out = tmp_path / "ds"
    script = tmp_path / "pack_ds.py"
    script.write_text(RESUMABLE.format(tests=os.path.dirname(__file__), out=str(out)))
    kill_at("mid_shard", 30, [sys.executable, "-P", str(script)], tmp_path)
    finished = json.loads((out / ".fastdata-pack.json").read_text())["shards"]
    assert finished and not (out / "manifest.json").exists()
    proc = subprocess.run([sys.executable, "-P", str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"resumed {len(finished)}" in proc.stdout
    cli([write_jsonl(str(tmp_path / "same.jsonl"), make_docs(3000, seed=7))], tmp_path / "ref")
    same_dataset(out, tmp_path / "ref")


def test_root_import_stays_light_and_pack_is_callable():
    code = ("import sys, fastdata; assert 'fastdata.pack.pipeline' not in sys.modules; "
            "import fastdata.pack.pipeline; assert callable(fastdata.pack); "
            "assert fastdata.pack is sys.modules['fastdata.pack']; print('ok')")
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.fixture(scope="module")
def bpe_path(tmp_path_factory, docs):
    return train_bpe(str(tmp_path_factory.mktemp("api-tok") / "tokenizer.json"), docs)
