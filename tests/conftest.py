"""Fixtures shared by the test suite: a real Azurite server on loopback."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import uuid

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
AZURITE = ROOT / "scripts" / "azurite.sh"
# Azurite's published development key: public, not a secret.
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def connection_string(port: int) -> str:
    return ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={DEV_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """A running Azurite Blob service (started here, stopped at the end of the session)."""
    if shutil.which("node") is None:
        pytest.fail("Azurite needs Node.js on PATH; scripts/test.sh installs the rest")
    d = tmp_path_factory.mktemp("azurite")
    subprocess.run(["bash", str(AZURITE), "start", str(d)], check=True, timeout=180,
                   stdout=subprocess.DEVNULL)
    port = int((d / "azurite.port").read_text())
    yield {"port": port, "conn": connection_string(port)}
    subprocess.run(["bash", str(AZURITE), "stop", str(d)], check=False, timeout=30)


@pytest.fixture
def container(azurite):
    """A fresh, empty blob container; yields its name."""
    import fsspec

    name = f"t{uuid.uuid4().hex[:12]}"
    fs = fsspec.filesystem("az", connection_string=azurite["conn"], skip_instance_cache=True)
    fs.mkdir(name)
    yield name
    fs.rm(name, recursive=True)


@pytest.fixture
def az_env(azurite, monkeypatch):
    """Point adlfs at Azurite through the environment, as a CLI user would (plain HTTP: opted in)."""
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite["conn"])
    monkeypatch.setenv("FASTDATA_ALLOW_INSECURE", "1")
    return dict(os.environ)
