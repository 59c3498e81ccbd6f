"""fastdata inspect / verify, and the library's reading of damaged datasets."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from _corpus import make_docs, train_bpe, write_jsonl

import fastdata
from fastdata.format.hashing import hash_file

pytestmark = pytest.mark.timeout(120)


def cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-P", "-m", "fastdata.cli.main", *map(str, args)],
                          capture_output=True, text=True, timeout=100)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    d = tmp_path_factory.mktemp("ds")
    docs = make_docs(200, seed=5)
    src = write_jsonl(str(d / "c.jsonl"), docs)
    cli("pack", src, "-o", d / "plain", "--shard-size", "16KB", "--workers", "1")
    cli("pack", src, "-o", d / "zst", "--shard-size", "16KB", "--compression", "zstd")
    tok = train_bpe(str(d / "tokenizer.json"), docs)
    cli("pack", src, "-o", d / "bpe", "--tokenizer", tok, "--shard-size", "16KB")
    return d, docs


def test_inspect_shows_summary_histogram_and_decoded_docs(packed):
    d, docs = packed
    out = cli("inspect", d / "plain", "--docs", "3").stdout
    assert "documents   200" in out
    assert "tokenizer   bytes" in out
    assert "histogram" in out and "#" in out
    assert "--- document 0" in out
    assert docs[0][:40] in out  # decoded, not ids
    bpe = cli("inspect", d / "bpe", "--docs", "1").stdout
    assert "huggingface" in bpe and docs[0][:40] in bpe  # tokenizer.json shipped with the data


def test_verify_ok_and_bad_shard(packed, tmp_path):
    d, _ = packed
    assert "shards OK" in cli("verify", d / "plain").stdout
    assert cli("verify", d / "zst").returncode == 0
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(d / "plain", bad)
    victim = sorted(n for n in os.listdir(bad) if n.endswith(".fds"))[1]
    expected = hash_file(str(bad / victim))
    data = bytearray((bad / victim).read_bytes())
    data[-1] ^= 0xFF
    (bad / victim).write_bytes(bytes(data))
    actual = hash_file(str(bad / victim))
    proc = cli("verify", bad, check=False)
    assert proc.returncode == 1
    assert f"BAD {victim}" in proc.stdout
    assert expected in proc.stdout and actual in proc.stdout
    assert proc.stdout.count("BAD ") == 1


def test_flipped_byte_in_compressed_shard_is_caught_on_read(packed, tmp_path):
    d, _ = packed
    import shutil

    bad = tmp_path / "zbad"
    shutil.copytree(d / "zst", bad)
    victim = sorted(n for n in os.listdir(bad) if n.endswith(".zst"))[0]
    data = bytearray((bad / victim).read_bytes())
    data[len(data) // 2] ^= 0x01
    (bad / victim).write_bytes(bytes(data))
    with fastdata.open_dataset(str(bad), cache_dir=str(tmp_path / "cache")) as ds:
        with pytest.raises(fastdata.FastdataIntegrityError, match=f"{victim}: xxh3_128 is"):
            ds.doc(0)
    assert not [n for n in os.listdir(tmp_path / "cache" / ds.manifest.fingerprint)
                if n.endswith(".fds")]  # nothing published from the bad copy


def test_truncated_local_shard_fails_at_open_naming_sizes(packed, tmp_path):
    d, _ = packed
    import shutil

    bad = tmp_path / "trunc"
    shutil.copytree(d / "plain", bad)
    victim = bad / "shard-00000.fds"
    size = victim.stat().st_size
    with open(victim, "r+b") as f:
        f.truncate(size - 1)
    with fastdata.open_dataset(str(bad)) as ds, pytest.raises(fastdata.FastdataFormatError) as err:
        ds.doc(0)
    assert "shard-00000.fds" in str(err.value)
    assert str(size) in str(err.value) and str(size - 1) in str(err.value)


def test_inspect_missing_dataset_is_a_clear_error(tmp_path):
    proc = cli("inspect", tmp_path / "nothing", check=False)
    assert proc.returncode == 2
    assert "manifest.json does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_compressed_dataset_reads_like_plain(packed, tmp_path):
    d, _ = packed
    with fastdata.open_dataset(str(d / "plain")) as a, \
            fastdata.open_dataset(str(d / "zst"), cache_dir=str(tmp_path / "c")) as b:
        assert a.num_docs == b.num_docs == 200
        assert a.num_tokens == b.num_tokens
        for i in range(0, 200, 7):
            assert a.doc(i).tolist() == b.doc(i).tolist()
