"""Storage and cache settings as frozen objects (``fastdata.config``): validated once, never
showing credentials, and equivalent to the loose keywords they group."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch
from _loader import ids_of, packed_dataset

import fastdata
from fastdata import CacheConfig, FastdataConfigError, SampleConfig, StorageConfig
from fastdata.config import resolve
from fastdata.storage.download import RetryPolicy

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return packed_dataset(str(tmp_path_factory.mktemp("cfg")), docs=300)


def test_storage_config_hides_its_options_and_cannot_change():
    config = StorageConfig(options={"account_key": "s3cr3t-key", "anon": False})
    assert "s3cr3t" not in repr(config) and "s3cr3t" not in str(config)
    assert repr(config) == f"StorageConfig(options=<2 keys>, retry={RetryPolicy()})"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.options = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.options["anon"] = True  # type: ignore[index]


@pytest.mark.parametrize(("make", "field"), [
    (lambda: CacheConfig(limit=0), "CacheConfig.limit"),
    (lambda: CacheConfig(limit="ten"), "invalid size 'ten'"),
    (lambda: CacheConfig(wait_timeout=-1), "CacheConfig.wait_timeout"),
    (lambda: CacheConfig(wait_timeout=float("nan")), "CacheConfig.wait_timeout"),
    (lambda: StorageConfig(options=["a"]), "StorageConfig.options"),
    (lambda: StorageConfig(retry=RetryPolicy(attempts=0)), "StorageConfig.retry"),
    (lambda: StorageConfig(retry=RetryPolicy(base_backoff=9, max_backoff=1)), "StorageConfig.retry"),
])
def test_bad_settings_name_the_field(make, field):
    with pytest.raises(FastdataConfigError, match=field):
        make()


def test_sizes_are_parsed_once():
    assert CacheConfig(limit="400MB").limit == 400_000_000
    assert CacheConfig(limit=4096).limit == 4096


def test_resolve_takes_either_form_but_not_both():
    storage, cache = resolve(None, None, storage_options={"anon": True}, cache_dir="/tmp/c",
                             cache_limit="1GiB")
    assert dict(storage.options) == {"anon": True} and cache == CacheConfig(dir="/tmp/c", limit=1 << 30)
    with pytest.raises(FastdataConfigError, match="not both"):
        resolve(StorageConfig(), None, storage_options={})
    with pytest.raises(FastdataConfigError, match="not both"):
        resolve(None, CacheConfig(), cache_limit=10)


def test_token_dataset_with_config_objects_equals_the_loose_keywords(data, tmp_path):
    policy = RetryPolicy(attempts=2, range_bytes=1 << 16)
    grouped = fastdata.TokenDataset(data, seq_len=32, seed=3, sampling=SampleConfig(seq_len=32),
                                    storage=StorageConfig(retry=policy),
                                    cache=CacheConfig(dir=str(tmp_path / "c")))
    loose = fastdata.TokenDataset(data, seq_len=32, seed=3, cache_dir=str(tmp_path / "c"))
    assert grouped.data.files.policy is policy  # the retry policy reaches the shard files
    assert loose.data.files.policy == RetryPolicy()
    one = ids_of(fastdata.DataLoader(grouped, batch_size=4, num_workers=0))
    two = ids_of(fastdata.DataLoader(loose, batch_size=4, num_workers=0))
    assert one == two and len(one) > 100
    assert grouped.state_dict() == loose.state_dict()


def test_a_sample_config_must_agree_with_seq_len(data):
    with pytest.raises(FastdataConfigError, match=r"seq_len=16\) disagrees with seq_len=32"):
        fastdata.TokenDataset(data, seq_len=32, sampling=SampleConfig(seq_len=16))
    ds = fastdata.TokenDataset(data, seq_len=32, sampling=SampleConfig(seq_len=32, position_ids=True),
                               batch_size=2)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=None)))
    assert batch["position_ids"].shape == (2, 32)


def test_open_dataset_takes_a_cache_config(data, tmp_path):
    opened = fastdata.open_dataset(data, cache=CacheConfig(dir=str(tmp_path / "c")))
    assert opened.files.in_place and opened.num_docs == 300
    with pytest.raises(FastdataConfigError, match="not both"):
        fastdata.open_dataset(data, cache=CacheConfig(), cache_dir=str(tmp_path))
    assert not os.path.exists(tmp_path / "c" / opened.manifest.fingerprint)  # in place: nothing copied
