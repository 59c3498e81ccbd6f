"""Bad input to fastdata pack: named errors, or skipped and counted (E9, F2)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from _corpus import make_docs, wordlevel_tokenizer, write_jsonl

import fastdata
from fastdata.pack.encode import EncodeOptions
from fastdata.pack.pipeline import PackConfig, pack
from fastdata.pack.sources import ReadOptions
from fastdata.pack.tokenizers import TokenizerSpec

pytestmark = pytest.mark.timeout(120)


def config(src, out, *, skip=False, tokenizer="bytes", dtype="auto", read=None, **spec):
    encode = EncodeOptions(read or ReadOptions(), TokenizerSpec(tokenizer, **spec), skip_bad=skip)
    return PackConfig(inputs=(str(src),), output=str(out), encode=encode, dtype=dtype)


@pytest.fixture
def dirty(tmp_path):
    """A JSONL file with one invalid-JSON line, one missing field and one invalid UTF-8 line."""
    good = [json.dumps({"text": f"document {i}"}).encode() for i in range(6)]
    lines = good[:2] + [b'{"text": "unterminated'] + good[2:4] + [b'{"body": "x"}'] + \
        [b'{"text": "bad \xff byte"}'] + good[4:]
    path = tmp_path / "dirty.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


BAD_LINES = {
    "invalid JSON": b'{"text": "unterminated',
    "missing field 'text'": b'{"body": "x"}',
    "invalid UTF-8": b'{"text": "bad \xff byte"}',
}


@pytest.mark.parametrize("reason", list(BAD_LINES))
def test_bad_record_raises_naming_file_and_line(tmp_path, reason):
    lines = [json.dumps({"text": f"document {i}"}).encode() for i in range(5)]
    lines.insert(3, BAD_LINES[reason])
    src = tmp_path / "one.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(fastdata.FastdataInputError) as err:
        pack(config(src, tmp_path / "out"))
    assert f"{src}:4: {reason}" in str(err.value)
    assert "--on-error skip" in str(err.value)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_line_numbers_are_absolute_in_later_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr("fastdata.pack.sources.BLOCK_BYTES", 64)
    lines = [json.dumps({"text": f"doc {i}"}) for i in range(40)]
    lines[33] = "{broken"
    src = tmp_path / "c.jsonl"
    src.write_text("\n".join(lines) + "\n")
    with pytest.raises(fastdata.FastdataInputError, match=r"c\.jsonl:34: invalid JSON"):
        pack(config(src, tmp_path / "out"))


def test_skip_counts_each_reason(tmp_path, dirty):
    result = pack(config(dirty, tmp_path / "out", skip=True))
    assert result.manifest.num_docs == 6
    assert result.progress.skipped == {"invalid JSON": 1, "missing field 'text'": 1,
                                       "invalid UTF-8": 1}
    assert any(":3:" in s for s in result.progress.first_skipped)


def test_skip_summary_in_cli(tmp_path, dirty):
    proc = subprocess.run(
        [sys.executable, "-P", "-m", "fastdata.cli.main", "pack", str(dirty), "-o",
         str(tmp_path / "out"), "--on-error", "skip", "--workers", "1"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "skipped 3 records" in proc.stdout
    assert "1 invalid JSON" in proc.stdout and "1 invalid UTF-8" in proc.stdout


def test_cli_error_exit_code_and_message(tmp_path, dirty):
    proc = subprocess.run(
        [sys.executable, "-P", "-m", "fastdata.cli.main", "pack", str(dirty), "-o",
         str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"{dirty}:3: invalid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_vocab_too_big_for_uint16_is_refused_before_writing(tmp_path):
    tok = wordlevel_tokenizer(str(tmp_path / "tokenizer.json"), 70001)
    src = write_jsonl(str(tmp_path / "c.jsonl"), ["w1 w69999 w5"])
    out = tmp_path / "out"
    with pytest.raises(fastdata.FastdataConfigError, match="token id 70000 does not fit uint16"):
        pack(config(src, out, tokenizer=tok, dtype="uint16"))
    assert not out.exists()
    result = pack(config(src, out, tokenizer=tok))
    assert result.manifest.dtype == "uint32"
    with fastdata.open_dataset(str(out)) as ds:
        assert ds.doc(0).tolist() == [1, 69999, 5, 70000]


def test_pretokenized_id_outside_vocab(tmp_path):
    src = tmp_path / "ids.jsonl"
    src.write_text(json.dumps({"ids": [1, 2]}) + "\n" + json.dumps({"ids": [1, 70000]}) + "\n")
    read = ReadOptions(text_field="ids", pretokenized=True)
    with pytest.raises(fastdata.FastdataInputError, match=r"ids\.jsonl:2: token id 70000"):
        pack(config(src, tmp_path / "out", tokenizer="none", vocab_size=1000, read=read))
    with pytest.raises(fastdata.FastdataInputError, match="not a list of integer"):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps({"ids": "text"}) + "\n")
        pack(config(bad, tmp_path / "out2", tokenizer="none", vocab_size=1000, read=read))


def test_unknown_inputs_and_tokenizers(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(fastdata.FastdataConfigError, match="unknown input type"):
        pack(config(tmp_path / "x.csv", tmp_path / "out"))
    with pytest.raises(fastdata.FastdataConfigError, match="does not exist"):
        pack(config(tmp_path / "missing.jsonl", tmp_path / "out"))
    src = write_jsonl(str(tmp_path / "c.jsonl"), ["a"])
    with pytest.raises(fastdata.FastdataConfigError, match="unknown tokenizer"):
        pack(config(src, tmp_path / "out", tokenizer="no/such/tokenizer.json"))
    with pytest.raises(fastdata.FastdataConfigError, match="not available locally|needs the"):
        pack(config(src, tmp_path / "out", tokenizer="tiktoken:no_such_encoding"))


def test_parquet_missing_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "a.parquet")
    with pytest.raises(fastdata.FastdataInputError, match=r"no column 'text' \(columns: body\)"):
        pack(config(tmp_path / "a.parquet", tmp_path / "out"))


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare for a private tmpfs")
def test_disk_full_during_pack(tmp_path):
    """F2: a 1 MiB tmpfs fills up; exit non-zero naming the path; a re-run with space works."""
    src = write_jsonl(str(tmp_path / "c.jsonl"), make_docs(3000, seed=3))
    mnt = tmp_path / "small"
    mnt.mkdir()
    out = mnt / "ds"
    pack_cmd = f"{sys.executable} -P -m fastdata.cli.main pack {src} -o {out} --shard-size 64KB --workers 1"
    digests = tmp_path / "digests.txt"
    # fill the disk; then grow it (tmpfs keeps its files) and run the same command again into the
    # same output: it resumes (E8) and must give the bytes of a pack that never failed
    script = (f"mount -t tmpfs -o size=1m none {mnt} && {pack_cmd}; echo rc=$?; ls -a {out}; "
              f"mount -o remount,size=64m {mnt} && {pack_cmd}; echo second_rc=$?; "
              f"cd {out} && sha256sum * > {digests}")
    probe = subprocess.run(["unshare", "-Urm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("unprivileged user namespaces are not available here")
    proc = subprocess.run(["unshare", "-Urm", "sh", "-c", script], capture_output=True,
                          text=True, timeout=90)
    assert "rc=3" in proc.stdout, proc.stdout + proc.stderr
    assert str(out) in proc.stderr and "No space left" in proc.stderr
    assert "manifest.json" not in proc.stdout
    first_listing = proc.stdout.split("second_rc=")[0]
    assert ".fastdata-tmp" not in first_listing  # the failed temp file was removed
    assert "second_rc=0" in proc.stdout, proc.stdout + proc.stderr
    # a pack that never failed (same command, enough space): the resumed output has exactly its
    # shards, byte for byte
    ok = tmp_path / "ok"
    subprocess.run([sys.executable, "-P", "-m", "fastdata.cli.main", "pack", str(src), "-o", str(ok),
                    "--shard-size", "64KB", "--workers", "1"], check=True, timeout=90, capture_output=True)
    import hashlib

    want = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in ok.iterdir()
            if p.name.endswith(".fds")}
    got = {name: digest for digest, name in (line.split() for line in digests.read_text().splitlines())
           if name.endswith(".fds")}
    assert len(want) > 10 and got == want
