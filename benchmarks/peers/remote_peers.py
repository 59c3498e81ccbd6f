"""The peer side of ``bench_remote.py``: LitData and MosaicML Streaming streaming the same samples
from Azurite (through the benchmark's proxy) or from a local directory, two epochs.

Run with the peers venv: ``remote_peers.py CONFIG_JSON``. The samples were exported by
``loader_peers.py export`` (MDS: column ``tokens: ndarray:uint16:2049``; LitData: chunks of
1,024 ``TokensLoader`` blocks) and uploaded by the parent to ``az://CONTAINER/{mds,litdata}``.

* **LitData**: ``StreamingDataset("azure://CONTAINER/litdata", storage_options=...)``, in its
  default configuration. The index comes through its synchronous Azure downloader, which
  builds ``BlobServiceClient(**storage_options)`` (``account_url`` = the proxy); the chunks
  through its asynchronous prefetch, obstore's ``AzureStore(container,
  credential_provider=AzureCredentialProvider())``, which is not given ``storage_options``
  (without more it fails with "Account must be specified") but reads obstore's emulator
  settings from the environment: ``AZURE_STORAGE_USE_EMULATOR=true`` and
  ``AZURITE_BLOB_STORAGE_URL`` = the proxy.
* **MosaicML Streaming**: ``azure://`` builds ``https://{account}.blob.core.windows.net`` from
  the URL (or ``AZURE_ACCOUNT_NAME``), with no endpoint setting. Source ``local`` uses the
  exported folder as the remote (its LocalDownloader copies shards into ``local``); source
  ``azure-patched`` replaces only ``AzureDownloader._create_azure_client`` so the client goes to
  the proxy's http URL, leaving the download code (``download_blob().readinto``) as it is.

Prints ``{"event": "start"|"end", "epoch": i}`` lines (the parent reads the proxy's byte count
then) and one JSON result line last, in the layout of ``bench_remote.py``'s fastdata child.
"""

from __future__ import annotations

import time

T_MAIN = time.time()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

warnings.filterwarnings("ignore")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loader_peers  # noqa: E402  (the same helpers as the local loader benchmark)


def litdata_loader(cfg: dict):
    # chunks: obstore (async prefetch, the default), which takes no storage_options but reads
    # the emulator settings from the environment; the index: the sync BlobServiceClient path
    os.environ["AZURE_STORAGE_USE_EMULATOR"] = "true"
    os.environ["AZURITE_BLOB_STORAGE_URL"] = cfg["endpoint"].rsplit("/", 1)[0]
    from litdata import StreamingDataLoader, StreamingDataset  # noqa: PLC0415
    from litdata.streaming.item_loader import TokensLoader  # noqa: PLC0415

    if cfg["source"] != "azure":
        raise SystemExit(f"litdata: source {cfg['source']!r} not supported here")
    options = {"account_url": cfg["endpoint"],
               "credential": {"account_name": cfg["account"], "account_key": cfg["key"]}}
    ds = StreamingDataset(f"azure://{cfg['container']}/litdata", cache_dir=cfg["cache_dir"],
                          item_loader=TokensLoader(block_size=cfg["seq_len"] + 1), shuffle=True, seed=0,
                          drop_last=True, storage_options=options, transform=loader_peers._to_int64_tensor)
    return StreamingDataLoader(ds, batch_size=cfg["batch"], num_workers=cfg["workers"], drop_last=True)


def mosaic_loader(cfg: dict):
    from streaming import StreamingDataLoader, StreamingDataset  # noqa: PLC0415

    loader_peers.clean_mosaic_shm()
    if cfg["source"] == "local":
        remote = os.path.join(cfg["formats"], "mds")
    elif cfg["source"] == "azure-patched":
        import streaming.base.storage.download as download  # noqa: PLC0415

        endpoint, credential = cfg["endpoint"], {"account_name": cfg["account"], "account_key": cfg["key"]}

        def _create_azure_client(self, remote: str) -> None:
            from azure.storage.blob import BlobServiceClient  # noqa: PLC0415

            self._azure_client = BlobServiceClient(account_url=endpoint, credential=credential)

        download.AzureDownloader._create_azure_client = _create_azure_client
        os.environ["AZURE_ACCOUNT_NAME"] = cfg["account"]
        os.environ["AZURE_ACCOUNT_ACCESS_KEY"] = cfg["key"]  # so __init__ skips azure.identity
        remote = f"azure://{cfg['account']}/{cfg['container']}/mds"
    else:
        raise SystemExit(f"mosaicml: source {cfg['source']!r} not supported here")

    class TokenSamples(StreamingDataset):
        def __getitem__(self, idx: int):
            return loader_peers._to_int64_tensor(super().__getitem__(idx)["tokens"])

    ds = TokenSamples(remote=remote, local=cfg["cache_dir"], shuffle=True, shuffle_seed=0,
                      batch_size=cfg["batch"])
    return StreamingDataLoader(ds, batch_size=cfg["batch"], num_workers=cfg["workers"], drop_last=True)


def run(cfg: dict) -> dict:
    import torch  # noqa: PLC0415

    t_import = time.time()
    make = {"litdata": litdata_loader, "mosaicml": mosaic_loader}[cfg["system"]]
    loader = make(cfg)
    t_built = time.time()
    b, seq = cfg["batch"], cfg["seq_len"]
    x = torch.empty((b, seq), dtype=torch.int64)
    y = torch.empty((b, seq), dtype=torch.int64)
    epochs = []
    for epoch in range(cfg["epochs"]):
        print(json.dumps({"event": "start", "epoch": epoch}), flush=True)
        waits: list[float] = []
        t0 = time.perf_counter()
        t_start = time.time()
        it = iter(loader)
        while True:
            tw = time.perf_counter()
            batch = next(it, None)
            if batch is None:
                break
            waits.append(time.perf_counter() - tw)
            x.copy_(batch[:, :-1])
            y.copy_(batch[:, 1:])
        wall = time.perf_counter() - t0
        del it
        print(json.dumps({"event": "end", "epoch": epoch}), flush=True)
        n = len(waits)
        epochs.append({"batches": n, "tokens": n * b * (seq + 1), "wall_s": wall,
                       "first_batch_s": waits[0] if waits else None,
                       "first_batch_abs": t_start + (waits[0] if waits else 0),
                       "wait_after_first_s": sum(waits[1:]),
                       "after_first_s": wall - (waits[0] if waits else 0),
                       "max_wait_after_first_s": max(waits[1:], default=0.0)})
    return {"import_s": t_import - T_MAIN, "built_s": t_built - t_import, "t_import": t_import,
            "t_main": T_MAIN, "epochs": epochs, "rss_peak_mib": loader_peers.rss_mib()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = json.loads(argv[0])
    sys.stdout.write(json.dumps(run(cfg)) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
