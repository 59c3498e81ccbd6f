"""A dataset uploaded to a private Azurite container, and a read/list SAS token for it."""

from __future__ import annotations

import datetime

from conftest import DEV_KEY


def publish_with_sas(azurite: dict, container: str, local: str) -> dict:
    """Upload ``local`` to ``container/ds``; the token, its signature and where to reach it."""
    import fsspec
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    fs = fsspec.filesystem("az", connection_string=azurite["conn"], skip_instance_cache=True)
    fs.put(local, f"{container}/ds", recursive=True)
    sas = generate_container_sas(
        "devstoreaccount1", container, account_key=DEV_KEY,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1))
    sig = [p for p in sas.split("&") if p.startswith("sig=")][0].split("=", 1)[1]
    return {"sas": sas, "sig": sig, "container": container, "fs": fs, "port": azurite["port"],
            "endpoint": f"http://127.0.0.1:{azurite['port']}/devstoreaccount1"}
