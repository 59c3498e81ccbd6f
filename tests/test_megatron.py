"""Megatron-Core ``.bin``/``.idx`` datasets: read in place, imported, and streamed from Azurite.

The fixtures are written by megatron-core's own ``IndexedDatasetBuilder`` and read back by
its ``IndexedDataset``, in a subprocess (its import takes ~15 s and installs warning filters
and torch state that the rest of the suite should not inherit); fastdata must return
exactly what Megatron returns.
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

import fastdata
import fastdata.megatron.source as megatron_source
from fastdata.cli.main import main as cli
from fastdata.errors import (
    FastdataConfigError,
    FastdataFormatError,
    FastdataInputError,
    FastdataIntegrityError,
)
from fastdata.format.reader import gather, open_token_range
from fastdata.megatron import megatron_prefix, open_megatron, plan_shards
from fastdata.megatron.index import HEADER_SIZE
from fastdata.reader import verify_dataset

pytestmark = pytest.mark.timeout(300)

SHARD = 4096  # bytes of .bin per virtual shard in these tests: several shards per fixture

# Writes the fixtures with megatron-core and saves its own reads of them (argv: dir, spec JSON).
BUILD = r"""
import json, sys, warnings
import numpy as np
warnings.simplefilter("ignore")
import torch
from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

out, specs = sys.argv[1], json.loads(sys.argv[2])
for name, spec in specs.items():
    rng = np.random.default_rng(spec["seed"])
    dtype = getattr(np, spec["dtype"])
    mm = spec.get("multimodal", False)
    builder = IndexedDatasetBuilder(f"{out}/{name}.bin", dtype=dtype, multimodal=mm)
    for d in range(spec["docs"]):
        sizes = [int(n) for n in rng.integers(0, spec["max_len"], int(rng.integers(1, 4)))]
        tokens = rng.integers(spec["low"], spec["high"], sum(sizes))
        if d % 7 == 3:  # one item at a time, then end the document
            for part in np.split(tokens, np.cumsum(sizes)[:-1]):
                builder.add_item(torch.from_numpy(part.astype(np.int64)), mode=d % 3)
            builder.end_document()
        else:
            modes = [d % 3] * len(sizes) if mm else None
            builder.add_document(torch.from_numpy(tokens.astype(np.int64)), sizes, modes=modes)
    builder.finalize(f"{out}/{name}.idx")
    ds = IndexedDataset(f"{out}/{name}", multimodal=mm)
    reads = [ds[i][0] if mm else ds[i] for i in range(len(ds))]
    np.savez(f"{out}/{name}.reads.npz", tokens=np.concatenate(reads), lengths=[len(r) for r in reads],
             dtypes=[str(r.dtype) for r in reads], sequence_lengths=ds.sequence_lengths,
             sequence_pointers=ds.index.sequence_pointers, document_indices=ds.document_indices)
"""

SPECS = {
    "u16": {"dtype": "uint16", "seed": 1, "docs": 240, "max_len": 120, "low": 0, "high": 65500},
    "i32": {"dtype": "int32", "seed": 2, "docs": 200, "max_len": 120, "low": 0, "high": 200_000},
    "u8": {"dtype": "uint8", "seed": 3, "docs": 60, "max_len": 200, "low": 0, "high": 256},
    "i64": {"dtype": "int64", "seed": 4, "docs": 60, "max_len": 60, "low": 0, "high": 1 << 33},
    "neg": {"dtype": "int32", "seed": 5, "docs": 20, "max_len": 30, "low": -3, "high": 100},
    "mm": {"dtype": "uint16", "seed": 6, "docs": 80, "max_len": 60, "low": 0, "high": 99, "multimodal": True},
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Megatron-written datasets (prefix by name) and megatron-core's reads of them."""
    d = tmp_path_factory.mktemp("megatron")
    subprocess.run([sys.executable, "-c", BUILD, str(d), json.dumps(SPECS)], check=True, timeout=240)
    reads = {}
    for name in SPECS:
        r = np.load(d / f"{name}.reads.npz")
        starts = np.concatenate([[0], np.cumsum(r["lengths"])])
        reads[name] = {"docs": [r["tokens"][a:b] for a, b in zip(starts[:-1], starts[1:])],
                       "dtypes": list(r["dtypes"]), **{k: r[k] for k in r.files}}
    return {"dir": d, "prefix": {n: str(d / n) for n in SPECS}, "reads": reads}


def copy_pair(corpus, name, dest, idx_from=None):
    """Copy fixture ``name`` (its .idx optionally from another fixture) to ``dest``/x.*."""
    os.makedirs(dest, exist_ok=True)
    shutil.copy(corpus["prefix"][name] + ".bin", os.path.join(dest, "x.bin"))
    shutil.copy(corpus["prefix"][idx_from or name] + ".idx", os.path.join(dest, "x.idx"))
    return os.path.join(str(dest), "x")


# ------------------------------------------------------------------ reading in place


@pytest.mark.parametrize("name", ["u16", "i32", "u8", "i64", "mm"])
def test_every_sequence_equals_megatron_read(corpus, name):
    reads = corpus["reads"][name]
    with open_megatron(corpus["prefix"][name] + ".idx", shard_bytes=SHARD) as ds:
        assert len(ds.shards) > 2  # several virtual shards, so shard boundaries are crossed
        assert ds.index.multimodal == (name == "mm")  # modes are accepted and ignored
        assert len(ds) == len(reads["docs"])
        for i, expected in enumerate(reads["docs"]):
            got = ds.doc(i)
            assert got.dtype == np.dtype(reads["dtypes"][i])
            np.testing.assert_array_equal(got, expected)
        # the gather path (what batches use) across every shard boundary
        np.testing.assert_array_equal(ds.tokens(0, ds.num_tokens), reads["tokens"])
        np.testing.assert_array_equal(ds.doc_lengths(), reads["lengths"])


def test_index_parse_matches_megatron(corpus):
    reads = corpus["reads"]["u16"]
    with open_megatron(corpus["prefix"]["u16"]) as ds:
        np.testing.assert_array_equal(ds.index.lengths, reads["sequence_lengths"])
        np.testing.assert_array_equal(ds.index.pointers, reads["sequence_pointers"])
        np.testing.assert_array_equal(ds.index.document_indices, reads["document_indices"])
        # documents group several sequences here; fastdata's documents are the sequences
        assert len(reads["document_indices"]) - 1 < len(ds) == len(reads["sequence_lengths"])
        assert ds.index.dtype == np.uint16 and not ds.index.multimodal


def test_source_forms(corpus, tmp_path):
    prefix = corpus["prefix"]["u16"]
    root = os.path.dirname(prefix)
    assert megatron_prefix(prefix + ".idx") == (root, "u16")
    assert megatron_prefix(prefix + ".bin") == (root, "u16")
    assert megatron_prefix(prefix) == (root, "u16")  # local bare prefix: u16.idx exists
    assert megatron_prefix("az://c/data/u16.idx") == ("az://c/data", "u16")
    assert megatron_prefix("az://c/data/u16") is None  # remote: name the .idx or .bin
    assert megatron_prefix(str(tmp_path)) is None
    hidden = tmp_path / ".hidden"
    for suffix in (".idx", ".bin"):  # a stem with a leading dot still gives valid cache names
        shutil.copy(prefix + suffix, str(hidden) + suffix)
    with open_megatron(str(hidden), shard_bytes=SHARD) as ds:
        assert ds.shards.name(0).startswith("hidden.bin.0-")
    shapes = set()
    for form in (prefix, prefix + ".idx", prefix + ".bin"):
        with open_megatron(form, shard_bytes=SHARD) as ds:
            shapes.add((ds.manifest.fingerprint, tuple(ds.shards.column("tokens"))))
    assert len(shapes) == 1


def test_virtual_shards_follow_the_plan(corpus):
    lengths = corpus["reads"]["i32"]["sequence_lengths"]
    bounds = plan_shards(lengths, 4, SHARD)
    with open_megatron(corpus["prefix"]["i32"], shard_bytes=SHARD) as ds:
        np.testing.assert_array_equal(ds.shards.column("docs"), np.diff(bounds))
        sizes = ds.shards.column("raw_bytes")
    # every shard but the last reaches the target, and would not without its last sequence
    cum = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]) * 4
    for j in range(len(bounds) - 2):
        lo, hi = bounds[j], bounds[j + 1]
        assert sizes[j] == cum[hi] - cum[lo] >= SHARD > cum[hi - 1] - cum[lo]
    assert sizes.sum() == os.path.getsize(corpus["prefix"]["i32"] + ".bin")


# ------------------------------------------------------------------ import


@pytest.fixture(scope="module")
def imported(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported")
    paths = {}
    for name in ("u16", "i32", "u8"):
        paths[name] = str(out / name)
        assert cli(["import", "megatron", corpus["prefix"][name], "-o", paths[name], "--shard-size",
                    str(SHARD), "-q"]) == 0
    return paths


@pytest.mark.parametrize(("name", "dtype"), [("u16", "uint16"), ("i32", "uint32"), ("u8", "uint16")])
def test_import_equals_megatron_reads_with_checksums(corpus, imported, name, dtype):
    reads = corpus["reads"][name]
    with fastdata.open_dataset(imported[name]) as ds, \
            open_megatron(corpus["prefix"][name], shard_bytes=SHARD) as source:
        assert ds.manifest.dtype == dtype
        assert ds.tokenizer.vocab_size == int(reads["tokens"].max()) + 1
        np.testing.assert_array_equal(ds.shards.column("docs"), source.shards.column("docs"))
        np.testing.assert_array_equal(ds.shards.column("tokens"), source.shards.column("tokens"))
        for i, expected in enumerate(reads["docs"]):
            np.testing.assert_array_equal(ds.doc(i).astype(np.int64), expected.astype(np.int64))
    manifest, problems = verify_dataset(imported[name])
    assert problems == [] and len(manifest.shards) > 2
    provenance = manifest.provenance["megatron"]
    assert provenance["sequences"] == len(reads["docs"])
    assert provenance["documents"] == len(reads["document_indices"]) - 1


def test_import_refuses_ids_that_do_not_fit(corpus, tmp_path, capsys):
    # int64 ids up to 2**33 do not fit uint32; negative int32 ids fit no fastdata dtype
    assert cli(["import", "megatron", corpus["prefix"]["i64"], "-o", str(tmp_path / "a"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "does not fit uint32 (fastdata token ids are below 2**32)" in err and "i64.bin" in err
    assert "sequence" in err
    with pytest.raises(FastdataInputError, match=r"holds token id -\d.*unsigned"):
        from fastdata.megatron.convert import ImportConfig, import_megatron
        import_megatron(ImportConfig(corpus["prefix"]["neg"], str(tmp_path / "b")))
    assert not os.path.exists(tmp_path / "b" / "manifest.json")


def test_import_refuses_an_existing_dataset(corpus, imported, capsys):
    assert cli(["import", "megatron", corpus["prefix"]["u16"], "-o", imported["u16"], "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["packed", "document"])
def test_token_dataset_over_prefix_equals_imported_copy(corpus, imported, monkeypatch, mode):
    monkeypatch.setattr(megatron_source, "SHARD_BYTES", SHARD)  # the import's --shard-size
    opts = {"seq_len": 24, "batch_size": 3, "sampling": {"mode": mode}}
    a = fastdata.TokenDataset(corpus["prefix"]["i32"] + ".idx", shuffle=False, **opts)
    b = fastdata.TokenDataset(imported["i32"], shuffle=False, **opts)
    got, want = list(a), list(b)
    assert len(got) == len(want) > 5
    for x, y in zip(got, want):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].dtype == y[k].dtype and x[k].tolist() == y[k].tolist()
    # Shuffled, the two orders differ (the order is keyed by the dataset identity, and the
    # copy has checksums the .bin lacks) but every sample id must read the same tokens.
    shuffled = fastdata.TokenDataset(corpus["prefix"]["i32"] + ".idx", shuffle=True, seed=7, **opts)
    assembler = b.assembler()
    seen = []
    for batch in shuffled:
        ids = batch["sample_ids"].numpy()
        seen += ids.tolist()
        expected = assembler(ids)
        for k in batch:
            np.testing.assert_array_equal(batch[k].numpy(), expected[k])
    # (drop_last leaves out other samples in another order: compare counts, not sets)
    assert len(seen) == len(set(seen)) == sum(len(y["sample_ids"]) for y in want)
    assert set(seen) <= set(range(a.space.num_samples)) and seen != sorted(seen)


@pytest.mark.multiprocess
def test_resume_from_a_saved_state(corpus, monkeypatch):
    monkeypatch.setattr(megatron_source, "SHARD_BYTES", SHARD)
    url = corpus["prefix"]["u16"] + ".idx"
    full = [b["input_ids"].tolist() for b in fastdata.TokenDataset(url, seq_len=16, seed=4, batch_size=2)]
    first = fastdata.TokenDataset(url, seq_len=16, seed=4, batch_size=2)
    it = iter(first)
    head = [next(it)["input_ids"].tolist() for _ in range(7)]
    state = first.state_dict()
    again = fastdata.TokenDataset(url, seq_len=16, seed=4, batch_size=2)
    again.load_state_dict(state)
    assert head + [b["input_ids"].tolist() for b in again] == full


@pytest.mark.multiprocess
def test_worker_processes_read_megatron(corpus, monkeypatch):
    monkeypatch.setattr(megatron_source, "SHARD_BYTES", SHARD)
    ds = fastdata.TokenDataset(corpus["prefix"]["u16"] + ".bin", seq_len=16, seed=1, shuffle=True)
    single = [b["input_ids"].tolist() for b in fastdata.DataLoader(ds, batch_size=4, num_workers=0)]
    ds = fastdata.TokenDataset(corpus["prefix"]["u16"] + ".bin", seq_len=16, seed=1, shuffle=True)
    loader = fastdata.DataLoader(ds, batch_size=4, num_workers=2, backend="processes")
    assert [b["input_ids"].tolist() for b in loader] == single


def test_pickled_dataset_maps_the_index_again(corpus):
    with open_megatron(corpus["prefix"]["i32"], shard_bytes=SHARD) as ds:
        ds.doc(0)
        state = pickle.dumps(ds)
        lengths = corpus["reads"]["i32"]["sequence_lengths"].tobytes()
        assert lengths[:200] not in state  # the index arrays stay out of the pickle
        copy = pickle.loads(state)
    for i, expected in enumerate(corpus["reads"]["i32"]["docs"]):
        np.testing.assert_array_equal(copy.doc(i), expected)
    copy.close()


# ------------------------------------------------------------------ clear errors


def field_error(excinfo) -> tuple[str, int]:
    return excinfo.value.field, excinfo.value.byte_offset


def test_truncated_bin_is_a_clear_error(corpus, tmp_path):
    prefix = copy_pair(corpus, "u16", tmp_path)
    size = os.path.getsize(prefix + ".bin")
    os.truncate(prefix + ".bin", size - 10)
    with pytest.raises(FastdataFormatError) as e:
        open_megatron(prefix)
    message = str(e.value)
    assert f"x.bin: field 'size' at byte {size - 10}" in message
    assert f"the .bin is {size - 10} bytes" in message and f"ends at byte {size}" in message
    assert "truncated" in message and "x.idx" in message


def test_bin_truncated_after_opening_is_a_clear_error(corpus, tmp_path):
    prefix = copy_pair(corpus, "u16", tmp_path)
    ds = open_megatron(prefix, shard_bytes=SHARD)
    os.truncate(prefix + ".bin", int(ds.shards.column("raw_bytes")[:2].sum()) + 6)
    ds.shard(0)
    with pytest.raises(FastdataFormatError, match=r"x\.bin: field 'tokens' at byte \d+: .*truncated"):
        ds.shard(2)
    ds.close()


def test_idx_of_another_bin_is_a_clear_error(corpus, tmp_path):
    prefix = copy_pair(corpus, "i32", tmp_path / "a", idx_from="u16")
    with pytest.raises(FastdataFormatError, match=r"x\.bin: field 'size' .*\.idx written for another \.bin"):
        open_megatron(prefix)


def patched_idx(corpus, tmp_path, offset, value: bytes, name="u16"):
    prefix = copy_pair(corpus, name, tmp_path)
    with open(prefix + ".idx", "r+b") as f:
        f.seek(offset)
        f.write(value)
    return prefix


def test_idx_header_errors_name_field_and_offset(corpus, tmp_path):
    cases = [
        (0, b"XXIDIDX\x00\x00", ("magic", 0), "not a Megatron-Core .idx"),
        (9, struct.pack("<Q", 2), ("version", 9), "version 2 is not supported"),
        (17, bytes([7]), ("dtype", 17), "float32"),
        (17, bytes([9]), ("dtype", 17), "unknown dtype code 9"),
        (18, struct.pack("<Q", 10**6), ("sequence_count", 18), "truncated"),
    ]
    for i, (offset, value, where, text) in enumerate(cases):
        prefix = patched_idx(corpus, tmp_path / str(i), offset, value)
        with pytest.raises(FastdataFormatError, match=text) as e:
            open_megatron(prefix)
        assert field_error(e) == where
        assert str(e.value).startswith(prefix + ".idx: field")


def test_idx_truncated_is_a_clear_error(corpus, tmp_path):
    prefix = copy_pair(corpus, "u16", tmp_path)
    os.truncate(prefix + ".idx", os.path.getsize(prefix + ".idx") - 8)
    with pytest.raises(FastdataFormatError, match=r"need \d+ bytes .* but the file has \d+ \(truncated"):
        open_megatron(prefix)
    os.truncate(prefix + ".idx", 20)
    with pytest.raises(FastdataFormatError, match="shorter than the 34-byte header"):
        open_megatron(prefix)


def test_idx_array_errors_name_the_entry(corpus, tmp_path):
    n = len(corpus["reads"]["u16"]["sequence_lengths"])
    lengths_at, pointers_at = HEADER_SIZE, HEADER_SIZE + 4 * n
    docs_at = HEADER_SIZE + 12 * n
    cases = [
        (lengths_at + 4 * 5, struct.pack("<i", -1), ("sequence_lengths[5]", lengths_at + 20), "negative"),
        (pointers_at + 56, struct.pack("<q", 2), ("sequence_pointers[7]", pointers_at + 56), "back to back"),
        (docs_at, struct.pack("<q", 1), ("document_indices[0]", docs_at), "must be 0"),
        (docs_at + 8 * 3, struct.pack("<q", 0), ("document_indices[3]", docs_at + 24), "smaller than"),
    ]
    for i, (offset, value, where, text) in enumerate(cases):
        prefix = patched_idx(corpus, tmp_path / str(i), offset, value)
        with pytest.raises(FastdataFormatError, match=text) as e:
            open_megatron(prefix)
        assert field_error(e) == where, str(e.value)


def test_missing_files_and_non_megatron_sources(corpus, tmp_path):
    prefix = copy_pair(corpus, "u16", tmp_path)
    os.unlink(prefix + ".bin")
    with pytest.raises(FastdataFormatError, match=r"x\.bin does not exist: a Megatron dataset needs both"):
        open_megatron(prefix + ".idx")
    with pytest.raises(FastdataConfigError, match="does not name a Megatron dataset"):
        open_megatron(str(tmp_path))


# ------------------------------------------------------------------ Azurite


@pytest.fixture
def azure_pair(corpus, azurite, container):
    import fsspec

    fs = fsspec.filesystem("az", connection_string=azurite["conn"], skip_instance_cache=True)
    for suffix in (".idx", ".bin"):
        fs.put_file(corpus["prefix"]["i32"] + suffix, f"{container}/data/i32{suffix}")
    return {"url": f"az://{container}/data/i32.idx", "fs": fs,
            "options": {"connection_string": azurite["conn"], "allow_insecure": True}}


def test_stream_megatron_from_azurite_without_converting(corpus, azure_pair, tmp_path, monkeypatch):
    monkeypatch.setattr(megatron_source, "SHARD_BYTES", SHARD)
    local = fastdata.TokenDataset(corpus["prefix"]["i32"] + ".idx", seq_len=24, seed=5)
    want = [b["input_ids"].tolist() for b in fastdata.DataLoader(local, batch_size=4)]
    cache = tmp_path / "cache"
    sizes = local.data.shards.column("raw_bytes")
    limit = int(sizes.max()) * 5 + 1 + 4096
    ds = fastdata.TokenDataset(azure_pair["url"], seq_len=24, seed=5, cache_dir=str(cache), cache_limit=limit,
                               storage_options=azure_pair["options"])
    assert ds.fetches
    got = [b["input_ids"].tolist() for b in fastdata.DataLoader(ds, batch_size=4)]
    assert got == want
    # the .idx was fetched once into its own copy; .bin ranges live in the node cache as files
    copies = os.listdir(cache / "megatron-index")
    assert len(copies) == 1 and os.path.getsize(cache / "megatron-index" / copies[0]) == \
        os.path.getsize(corpus["prefix"]["i32"] + ".idx")
    ranges = os.listdir(cache / ds.data.manifest.fingerprint)
    assert ranges and all(n.startswith("i32.bin.") for n in ranges)
    assert sum(os.path.getsize(cache / ds.data.manifest.fingerprint / n) for n in ranges) <= limit


def test_remote_documents_equal_megatron_reads_and_import(corpus, azure_pair, tmp_path):
    reads = corpus["reads"]["i32"]
    with open_megatron(azure_pair["url"], storage_options=azure_pair["options"],
                       cache_dir=str(tmp_path / "c"), shard_bytes=SHARD) as ds:
        for i, expected in enumerate(reads["docs"]):
            np.testing.assert_array_equal(ds.doc(i), expected)
    out = tmp_path / "imported"
    assert cli(["import", "megatron", azure_pair["url"], "-o", str(out), "--shard-size", str(SHARD), "-q",
                "--storage-option", f"connection_string={azure_pair['options']['connection_string']}",
                "--storage-option", "allow_insecure=1"]) == 0
    with fastdata.open_dataset(str(out)) as copy:
        np.testing.assert_array_equal(copy.tokens(0, copy.num_tokens).astype(np.int64), reads["tokens"])


def test_remote_truncated_bin_is_a_clear_error(corpus, azure_pair, tmp_path):
    data = pathlib.Path(corpus["prefix"]["i32"] + ".bin").read_bytes()
    bin_path = azure_pair["url"].removeprefix("az://")[:-4] + ".bin"
    opened = open_megatron(azure_pair["url"], storage_options=azure_pair["options"], cache_dir=str(tmp_path),
                           shard_bytes=SHARD)
    azure_pair["fs"].pipe_file(bin_path, data[:-4])
    with pytest.raises(FastdataFormatError, match=r"i32\.bin: field 'size' .* truncated"):
        open_megatron(azure_pair["url"], storage_options=azure_pair["options"], cache_dir=str(tmp_path))
    # shrunk after it was opened: the last range comes back short
    with pytest.raises(FastdataIntegrityError, match=r"i32\.bin: bytes \d+-\d+ came back as \d+ bytes"):
        opened.shard(len(opened.shards) - 1)
    opened.close()


# ------------------------------------------------------------------ native raw token views


@pytest.fixture
def raw_file(tmp_path):
    tokens = np.arange(5000, dtype=np.int32) * 3 - 7
    path = tmp_path / "raw.bin"
    tokens.tofile(path)
    return str(path), tokens


def test_raw_view_maps_an_unaligned_range(raw_file):
    path, tokens = raw_file
    view = open_token_range(path, 4 * 1025, "int32", [0, 10, 10, 700])  # starts mid-page
    assert (view.num_docs, view.num_tokens, view.dtype, view.has_loss_mask) == (3, 700, "int32", False)
    first = view.doc(0)
    np.testing.assert_array_equal(first, tokens[1025:1035])
    assert view.doc(1).size == 0
    view.close()  # arrays keep their own reference to the mapping
    np.testing.assert_array_equal(first, tokens[1025:1035])
    view = open_token_range(path, 4 * 1025, "int32", [0, 10, 10, 700])
    out = np.empty(700, np.int64)
    gather([view], np.array([[0, 0, 700]]), out)
    np.testing.assert_array_equal(out, tokens[1025:1725])
    with pytest.raises(ValueError, match="int32 tokens, which do not fit a uint16 output"):
        gather([view], np.array([[0, 0, 5]]), np.empty(5, np.uint16))


def test_raw_view_refuses_bad_ranges_and_offsets(raw_file):
    path, _ = raw_file
    cases = [
        (2, "int32", [0, 4], "tokens", "not a multiple of the 4-byte int32"),
        (4 * 4990, "int32", [0, 11], "tokens", r"need bytes \[19960, 20004\) but the file is 20000 bytes"),
        (0, "int32", [1, 4], "doc_offsets[0]", "must be 0"),
        (0, "int32", [0, 4, 3], "doc_offsets[2]", "smaller than the previous one"),
    ]
    for offset, dtype, doc_offsets, field, text in cases:
        with pytest.raises(FastdataFormatError, match=text) as e:
            open_token_range(path, offset, dtype, doc_offsets)
        assert e.value.field == field and str(e.value).startswith(f"{path}: field '{field}'")
    with pytest.raises(ValueError, match="unsupported token dtype 'float32'"):
        open_token_range(path, 0, "float32", [0, 1])
    empty = open_token_range(path, 20000, "int64", [0, 0])  # an empty range at the very end
    assert empty.num_tokens == 0 and empty.doc(0).size == 0


def test_uint8_tokens_widen_into_uint16_output(tmp_path):
    path = tmp_path / "u8.bin"
    np.arange(256, dtype=np.uint8).tofile(path)
    view = open_token_range(str(path), 3, "uint8", [0, 200])
    out = np.empty(200, np.uint16)
    gather([view], np.array([[0, 0, 200]]), out)
    np.testing.assert_array_equal(out, np.arange(3, 203))


def test_blend_of_megatron_and_fastdata_sources(corpus, imported, monkeypatch):
    monkeypatch.setattr(megatron_source, "SHARD_BYTES", SHARD)
    sources = [fastdata.Source(corpus["prefix"]["u16"] + ".idx", 1.0), fastdata.Source(imported["i32"], 1.0)]
    blend = fastdata.TokenDataset(sources, seq_len=16, seed=2, batch_size=4)
    parts = [fastdata.TokenDataset(s.url, seq_len=16, seed=2, batch_size=4) for s in sources]
    offsets = np.cumsum([0] + [p.space.num_samples for p in parts])
    for batch in list(blend)[:20]:
        for row, sample in enumerate(batch["sample_ids"].tolist()):
            source = int(np.searchsorted(offsets, sample, side="right")) - 1
            expected = parts[source].assembler()(np.array([sample - offsets[source]]))
            assert batch["input_ids"][row].tolist() == expected["input_ids"][0].tolist()


def test_azurite_resets_and_warm_cache(corpus, azure_pair, azurite, tmp_path, monkeypatch):
    """Connection resets do not change the stream; the .idx is fetched once, and a warm node
    cache reads no .bin bytes at all; every .bin GET is a ranged read."""
    from _faultproxy import FaultProxy
    from conftest import connection_string

    monkeypatch.setattr(megatron_source, "SHARD_BYTES", SHARD)
    local = fastdata.TokenDataset(corpus["prefix"]["i32"] + ".idx", seq_len=24, seed=5, batch_size=4)
    want = [b["input_ids"].tolist() for b in local]
    proxy = FaultProxy(azurite["port"]).start()
    try:
        opts = {"connection_string": connection_string(proxy.port), "allow_insecure": True}
        cache = tmp_path / "cache"
        limit = os.path.getsize(corpus["prefix"]["i32"] + ".bin") * 2  # all of it fits: warm second run

        def run() -> list:
            ds = fastdata.TokenDataset(azure_pair["url"], seq_len=24, seed=5, cache_dir=str(cache),
                                       cache_limit=limit, storage_options=opts)
            return [b["input_ids"].tolist() for b in fastdata.DataLoader(ds, batch_size=4, num_workers=2)]

        proxy.faults.reset_after, proxy.faults.fault_conns = 2000, 6
        assert run() == want
        assert proxy.counters.faults >= 1
        gets = [r for r in proxy.requests if r.method == "GET"]
        assert [r for r in gets if r.path.endswith("i32.bin")] and all(
            r.range for r in gets if r.path.endswith("i32.bin"))
        proxy.faults.reset_after = None
        proxy.reset_counters()
        assert run() == want
        assert [r for r in proxy.requests if r.method == "GET"] == []  # .idx copy and ranges are warm
    finally:
        proxy.stop()
