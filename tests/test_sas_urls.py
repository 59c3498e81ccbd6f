"""Dataset URLs carrying a SAS token (what the Azure portal hands out), on real Azurite: the
query applies to every object, and the token never shows in a message, repr, log, state or
pickle."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
from _loader import packed_dataset
from _sas import publish_with_sas

import fastdata

pytestmark = pytest.mark.timeout(90)
SEQ = 31


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    return packed_dataset(str(tmp_path_factory.mktemp("sas")), docs=150, shard_size=4096)


@pytest.fixture
def published(azurite, container, local):
    return publish_with_sas(azurite, container, local)


def batches(source: str, **options) -> tuple[list[np.ndarray], fastdata.TokenDataset]:
    ds = fastdata.TokenDataset(source, seq_len=SEQ, shuffle=True, seed=3, batch_size=4, **options)
    return [b["input_ids"].numpy().copy() for b in ds], ds


def no_secret(sig: str, *texts: str | bytes) -> None:
    from urllib.parse import quote

    for text in texts:
        raw = text if isinstance(text, bytes) else text.encode()
        for form in {sig, quote(sig, safe="")}:
            assert form.encode() not in raw


def check_reads_and_redaction(source: str, options: dict, local: str, sig: str, caplog) -> None:
    want, _ = batches(local)
    caplog.set_level(logging.DEBUG, logger="fastdata")
    got, ds = batches(source, storage_options=options, cache_dir=None)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    state = ds.state_dict()
    no_secret(sig, repr(ds), repr(ds.sources), repr(ds.datasets[0]), repr(ds.datasets[0].store),
              pickle.dumps(ds), pickle.dumps(ds.datasets[0]), repr(state), caplog.text)


def test_https_style_sas_url_reads_every_object(published, local, caplog):
    source = f"{published['endpoint']}/{published['container']}/ds?{published['sas']}"
    check_reads_and_redaction(source, {"allow_insecure": True}, local, published["sig"], caplog)


def test_az_url_with_sas_query(published, local, caplog):
    source = f"az://{published['container']}/ds?{published['sas']}"
    options = {"connection_string": f"BlobEndpoint={published['endpoint']};", "allow_insecure": True}
    check_reads_and_redaction(source, options, local, published["sig"], caplog)


def test_missing_dataset_error_names_the_bare_url(published):
    source = f"{published['endpoint']}/{published['container']}/nope?{published['sas']}"
    with pytest.raises(fastdata.FastdataError) as err:
        fastdata.open_dataset(source, storage_options={"allow_insecure": True})
    message = str(err.value)
    assert f"/{published['container']}/nope/manifest.json" in message
    no_secret(published["sig"], message)


def test_without_the_sas_the_private_container_is_refused(published):
    source = f"{published['endpoint']}/{published['container']}/ds"
    with pytest.raises(fastdata.FastdataError):
        fastdata.open_dataset(source, storage_options={"allow_insecure": True})


def test_query_on_a_scheme_without_sas_is_refused():
    with pytest.raises(fastdata.FastdataConfigError, match="not a credential") as err:
        fastdata.open_dataset("s3://bucket/ds?X-Amz-Signature=SIGCANARY123")
    assert "SIGCANARY123" not in str(err.value)
