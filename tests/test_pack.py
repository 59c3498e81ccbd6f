"""fastdata pack: every input kind round-trips, and the output is deterministic (E7)."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from _corpus import files_bytes, make_docs, train_bpe, write_jsonl

import fastdata
from fastdata.format.spec import MANIFEST_NAME
from fastdata.pack.encode import EncodeOptions
from fastdata.pack.pipeline import PackConfig, pack
from fastdata.pack.sources import ReadOptions
from fastdata.pack.tokenizers import TokenizerSpec, load_tokenizer

pytestmark = pytest.mark.timeout(120)


def run_pack(inputs, out, *, tokenizer="bytes", workers=1, shard_size=4096, read=None, **kw):
    encode = EncodeOptions(read or ReadOptions(), TokenizerSpec(tokenizer),
                           add_eos=kw.pop("add_eos", True), add_bos=kw.pop("add_bos", False),
                           skip_bad=kw.pop("skip_bad", False))
    config = PackConfig(inputs=tuple(inputs), output=str(out), encode=encode, workers=workers,
                        shard_size=shard_size, **kw)
    return pack(config)


def expected_ids(tok_spec: str, text: str, *, eos=True, bos=False) -> list[int]:
    tok = load_tokenizer(TokenizerSpec(tok_spec))
    ids = [int(i) for i in tok.encode_batch([text])[0]]
    return ([tok.info.bos_id] if bos else []) + ids + ([tok.info.eos_id] if eos else [])


def read_all(out) -> list[list[int]]:
    with fastdata.open_dataset(str(out)) as ds:
        return [ds.doc(i).tolist() for i in range(ds.num_docs)]


@pytest.fixture(scope="module")
def docs():
    return make_docs(300, seed=1)


@pytest.fixture(scope="module")
def bpe(tmp_path_factory, docs):
    return train_bpe(str(tmp_path_factory.mktemp("tok") / "tokenizer.json"), docs)


def test_jsonl_round_trip_bytes_and_bpe(tmp_path, docs, bpe):
    src = write_jsonl(str(tmp_path / "c.jsonl"), docs)
    for spec in ("bytes", bpe):
        out = tmp_path / f"out-{os.path.basename(spec)}"
        result = run_pack([src], out, tokenizer=spec)
        got = read_all(out)
        assert len(got) == len(docs)
        for i, text in enumerate(docs):
            assert got[i] == expected_ids(spec, text), f"document {i}"
        m = result.manifest
        assert m.num_docs == len(docs)
        assert m.num_tokens == sum(len(g) for g in got)
        assert len(m.shards) > 3  # 4 KB shards: the stream was really cut
    tok = load_tokenizer(TokenizerSpec(bpe))
    assert tok.decode(read_all(tmp_path / "out-tokenizer.json")[5][:-1]) == docs[5]


def test_eos_bos_policy(tmp_path, docs):
    src = write_jsonl(str(tmp_path / "c.jsonl"), docs[:20])
    run_pack([src], tmp_path / "a", add_eos=False, add_bos=True)
    got = read_all(tmp_path / "a")
    assert got[3] == expected_ids("bytes", docs[3], eos=False, bos=True)
    assert got[1] == [257]  # the empty document keeps its BOS


def test_compressed_jsonl_parquet_text_tar(tmp_path, docs):
    part = docs[:40]
    gz = tmp_path / "a.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": d}) + "\n" for d in part)
    zst = tmp_path / "b.jsonl.zst"
    raw = "".join(json.dumps({"text": d}) + "\n" for d in part).encode()
    zst.write_bytes(zstandard.ZstdCompressor().compress(raw))
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"body": part}), parquet, row_group_size=7)
    lines = tmp_path / "d.txt"
    nonblank = [d.replace("\n", " ") for d in part if d.strip()]
    lines.write_text("\n\n".join(nonblank) + "\n", encoding="utf-8")
    whole = tmp_path / "e.md"
    whole.write_text(part[0] + "\nsecond line", encoding="utf-8")
    tar = tmp_path / "f.tar"
    with tarfile.open(tar, "w") as t:
        for i, d in enumerate(part):
            data = d.encode()
            info = tarfile.TarInfo(f"sample{i:04d}.txt")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))

    cases = [
        ([gz, zst], ReadOptions(), part + part),
        ([parquet], ReadOptions(text_field="body"), part),
        ([lines], ReadOptions(text_mode="line"), nonblank),
        ([whole], ReadOptions(), [part[0] + "\nsecond line"]),
        ([tar], ReadOptions(), part),
    ]
    for n, (inputs, read, expect) in enumerate(cases):
        out = tmp_path / f"out{n}"
        run_pack([str(p) for p in inputs], out, read=read)
        got = read_all(out)
        assert got == [expected_ids("bytes", t) for t in expect], f"case {n}: {inputs}"


def test_pretokenized_jsonl_and_parquet(tmp_path):
    rows = [[1, 2, 3], [], [999, 0, 5, 7], [42] * 100]
    src = tmp_path / "ids.jsonl"
    src.write_text("".join(json.dumps({"ids": r}) + "\n" for r in rows))
    pq.write_table(pa.table({"ids": rows}), tmp_path / "ids.parquet")
    for name in ("ids.jsonl", "ids.parquet"):
        out = tmp_path / f"out-{name}"
        encode = EncodeOptions(ReadOptions(text_field="ids", pretokenized=True),
                               TokenizerSpec("none", vocab_size=1000, eos_id=999))
        pack(PackConfig(inputs=(str(tmp_path / name),), output=str(out), encode=encode))
        assert read_all(out) == [r + [999] for r in rows]
        with fastdata.open_dataset(str(out)) as ds:
            assert ds.manifest.dtype == "uint16"
            assert ds.manifest.tokenizer.kind == "pretokenized"


def test_chat_loss_mask(tmp_path):
    convo = [{"role": "system", "content": "Be brief."},
             {"role": "user", "content": "Hi ✨"},
             {"role": "assistant", "content": "Hello!"}]
    src = tmp_path / "chat.jsonl"
    src.write_text(json.dumps({"messages": convo}) + "\n" + json.dumps({"messages": convo[1:]}) + "\n")
    run_pack([str(src)], tmp_path / "out", read=ReadOptions(chat=True))
    with fastdata.open_dataset(str(tmp_path / "out")) as ds:
        assert ds.manifest.has_loss_mask
        ids, mask = ds.doc(0).tolist(), ds.loss_mask(0).tolist()
    tok = load_tokenizer(TokenizerSpec("bytes"))
    text = tok.decode(ids)
    assert text == ("<|system|>\nBe brief.<|eos|><|user|>\nHi ✨<|eos|>"
                    "<|assistant|>\nHello!<|eos|>")
    trained = [i for i, m in zip(ids, mask) if m]
    assert tok.decode(trained) == "Hello!<|eos|>"
    assert len(mask) == len(ids)


@pytest.mark.slow
def test_output_identical_for_any_worker_count(tmp_path, docs, bpe):
    """E7: workers=1 and workers=2 give byte-identical shards and manifest, with and without
    compression (each compression compared across worker counts, never across codecs)."""
    srcs = []
    for k in range(3):
        srcs.append(write_jsonl(str(tmp_path / f"in{k}.jsonl"), make_docs(400, seed=k)))
    outputs = {}
    for compression in (None, "zstd"):
        for workers in (1, 2):
            out = tmp_path / f"out-{compression}-{workers}"
            run_pack(srcs, out, tokenizer=bpe, workers=workers, shard_size=16 << 10,
                     compression=compression)
            outputs[compression, workers] = files_bytes(str(out))
        one, two = outputs[compression, 1], outputs[compression, 2]
        assert sorted(one) == sorted(two), compression
        for name in one:
            assert one[name] == two[name], f"{name} differs between 1 and 2 workers ({compression})"
    plain, packed = outputs[None, 1], outputs["zstd", 1]
    assert len([n for n in plain if n.endswith(".fds")]) > 2  # several shards, so the split matters
    assert json.loads(plain[MANIFEST_NAME])["totals"]["docs"] == 1200
    # compression changes only the container: the same documents come back
    assert read_all(tmp_path / "out-None-1") == read_all(tmp_path / "out-zstd-2")
    assert any(name.endswith(".fds.zst") for name in packed)


def test_block_splitting_does_not_change_output(tmp_path, monkeypatch, docs):
    """Cutting a big JSONL file into many tasks gives the same documents in order."""
    src = write_jsonl(str(tmp_path / "c.jsonl"), docs)
    run_pack([src], tmp_path / "one")
    monkeypatch.setattr("fastdata.pack.sources.BLOCK_BYTES", 1000)
    monkeypatch.setattr("fastdata.pack.pipeline.BLOCK_BYTES", 1000)
    run_pack([src], tmp_path / "many", workers=2)
    assert read_all(tmp_path / "one") == read_all(tmp_path / "many")


def test_manifest_counts_and_hashes_match_files(tmp_path, docs):
    from fastdata.format.hashing import hash_file

    src = write_jsonl(str(tmp_path / "c.jsonl"), docs)
    result = run_pack([src], tmp_path / "out")
    with fastdata.open_dataset(str(tmp_path / "out")) as ds:
        for i, s in enumerate(result.manifest.shards):
            path = tmp_path / "out" / s.name
            assert path.stat().st_size == s.stored_bytes
            assert hash_file(str(path)) == s.xxh3_128
            assert ds.shard(i).num_docs == s.docs
    assert not [n for n in os.listdir(tmp_path / "out") if n.startswith(".")]


def test_memory_filesystem_output(tmp_path, docs):
    """Output to a non-local fsspec URL: shards uploaded, manifest last, readable back."""
    import fsspec

    src = write_jsonl(str(tmp_path / "c.jsonl"), docs[:50])
    url = "memory://fastdata-test/pack-out"
    try:
        run_pack([src], url, compression="zstd")
        fs = fsspec.filesystem("memory")
        names = sorted(os.path.basename(p) for p in fs.ls("/fastdata-test/pack-out", detail=False))
        assert MANIFEST_NAME in names and ".fastdata-pack.json" not in names
        with fastdata.open_dataset(url, cache_dir=str(tmp_path / "cache")) as ds:
            got = [ds.doc(i).tolist() for i in range(ds.num_docs)]
        assert got == [expected_ids("bytes", d) for d in docs[:50]]
    finally:
        fsspec.filesystem("memory").rm("/fastdata-test", recursive=True)


def test_existing_dataset_needs_overwrite(tmp_path, docs):
    src = write_jsonl(str(tmp_path / "c.jsonl"), docs[:10])
    run_pack([src], tmp_path / "out")
    with pytest.raises(fastdata.FastdataConfigError, match="--overwrite"):
        run_pack([src], tmp_path / "out")
    run_pack([src], tmp_path / "out", overwrite=True, shard_size=1 << 20)
    assert len([n for n in os.listdir(tmp_path / "out") if n.endswith(".fds")]) == 1


def test_global_token_ranges_cross_shards(tmp_path, docs):
    src = write_jsonl(str(tmp_path / "c.jsonl"), docs)
    run_pack([src], tmp_path / "out")
    every = np.concatenate([np.asarray(d) for d in read_all(tmp_path / "out")])
    with fastdata.open_dataset(str(tmp_path / "out")) as ds:
        assert len(ds.shards) > 3
        for start, stop in [(0, 10), (4000, 9000), (0, ds.num_tokens), (ds.num_tokens, ds.num_tokens)]:
            assert ds.tokens(start, stop).tolist() == every[start:stop].tolist()
        with pytest.raises(IndexError):
            ds.tokens(0, ds.num_tokens + 1)
        with pytest.raises(IndexError):
            ds.doc(ds.num_docs)
        assert ds.doc(-1).tolist() == ds.doc(ds.num_docs - 1).tolist()


def test_jsonl_escapes_blank_lines_crlf_and_extra_fields(tmp_path):
    """The Arrow fast path and the line-by-line reader agree on awkward but valid JSONL."""
    docs = ["tab\tquote\" back\\slash", "line\u2028sep é 🚀", "", "x" * 10000, "\u0000nul"]
    lines = [json.dumps({"meta": {"n": i}, "text": d}, ensure_ascii=(i % 2 == 0))
             for i, d in enumerate(docs)]
    body = ("\r\n".join(lines[:2]) + "\r\n\r\n" + "\n".join(lines[2:])).encode()
    (tmp_path / "a.jsonl").write_bytes(body)  # CRLF, a blank line, no final newline
    from fastdata.pack.sources import _arrow_texts, plan_tasks

    (task,) = plan_tasks([str(tmp_path / "a.jsonl")], ReadOptions())
    assert _arrow_texts(task, ReadOptions()) == docs  # the fast path takes this file
    run_pack([str(tmp_path / "a.jsonl")], tmp_path / "fast")
    assert read_all(tmp_path / "fast") == [expected_ids("bytes", d) for d in docs]
    # one non-string value sends the block down the line-by-line path: same result + skip
    (tmp_path / "b.jsonl").write_bytes(body + b'\n{"text": 5}\n')
    result = run_pack([str(tmp_path / "b.jsonl")], tmp_path / "slow", skip_bad=True)
    assert read_all(tmp_path / "slow") == read_all(tmp_path / "fast")
    assert result.progress.skipped == {"field 'text' is not a string": 1}
