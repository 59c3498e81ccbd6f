"""The peer runs of ``bench_remote.py``: export the dataset's samples to MDS and LitData
(cached), upload them to the benchmark's Azurite and run ``peers/remote_peers.py`` (in the
peers venv) through the same shaping proxy as fastdata."""

from __future__ import annotations

import json
from pathlib import Path

from _common import (
    ACCOUNT,
    BATCH,
    CONTAINER,
    DEV_KEY,
    SEQ_LEN,
    WORKERS,
    Child,
    conn_string,
    du,
    ensure_stream,
    fresh_dir,
    log,
    run_json,
    summarize_epochs,
    upload,
)
from render import shaping

HERE = Path(__file__).resolve().parent
PEERS_SCRIPT = HERE / "peers" / "remote_peers.py"


def prepare_peers(args, dataset: Path, az_conn: str) -> dict:
    """Export the dataset's samples to MDS and LitData (cached) and upload them to Azurite."""
    work = args.work_dir / "peers"
    work.mkdir(parents=True, exist_ok=True)
    meta = ensure_stream(dataset, work)
    cmd = [str(args.peers_python), str(HERE / "peers" / "loader_peers.py"), "export", "--stream",
           str(work / "stream.u16"), "--samples", str(meta["samples"]), "--seq-len", str(SEQ_LEN),
           "--out", str(work / "formats"), "--key", meta["xxh3_128"], "--systems", "mosaicml", "litdata"]
    log("exporting the samples to MDS and LitData (skipped when already done)")
    r = run_json(cmd, timeout=1800, log_path=work / "export.log")
    if "error" in r:
        return {"error": f"export failed: {r['error']}", "stderr": r.get("stderr", "")}
    up = {}
    for system, folder in (("mosaicml", "mds"), ("litdata", "litdata")):
        up[system] = upload(az_conn, work / "formats" / folder, f"{CONTAINER}/{folder}")
    return {"meta": meta, "export": r, "upload_mb_per_s": up, "formats": str(work / "formats")}


def phase_peer(args, system: str, source: str, proxy, latency: float, cap: float | None,  # noqa: PLR0913
               formats: str) -> dict:
    if proxy is not None:
        proxy.shape(latency, cap)
    cache = fresh_dir(args.work_dir / "cache" / f"peer-{system}-{source}")
    cfg = {"system": system, "source": source, "cache_dir": str(cache), "formats": formats,
           "container": CONTAINER, "epochs": 2, "batch": BATCH, "workers": WORKERS, "seq_len": SEQ_LEN,
           "account": ACCOUNT, "key": DEV_KEY,
           "endpoint": f"http://127.0.0.1:{proxy.port}/{ACCOUNT}" if proxy is not None else None}
    cmd = [str(args.peers_python), str(PEERS_SCRIPT), json.dumps(cfg)]
    r = Child(cmd, [proxy] if proxy is not None else []).wait(args.timeout)
    if proxy is not None:
        proxy.shape()
    if "error" in r:
        return r
    return {"latency_s": latency, "cap_bps": cap, "epochs": summarize_epochs(r, proxy),
            "cache_bytes": du(cache), "note": r.get("note", "")}


NOTES = [
    "LitData reaches Azurite in its default configuration: the index through `storage_options` "
    "(`BlobServiceClient(account_url=proxy, credential=...)`), the chunks through its async "
    "prefetch (obstore), which ignores `storage_options` and is pointed at the proxy with "
    "obstore's `AZURE_STORAGE_USE_EMULATOR=true` + `AZURITE_BLOB_STORAGE_URL`.",
    "MosaicML Streaming's `azure://` backend builds `https://{account}.blob.core.windows.net` "
    "from the URL or `AZURE_ACCOUNT_NAME` (no endpoint setting), so unpatched it cannot reach "
    "Azurite: it is run over a local directory as its remote (shards copied into its cache) "
    "and, with `_create_azure_client` patched to the proxy's http URL (its download code "
    "unchanged), from Azurite.",
]


def run_peers(args, res: dict, az, proxy) -> dict:
    prep = prepare_peers(args, Path(res["dataset_path"]), conn_string(az.port))
    if "error" in prep:
        log(f"peers: {prep['error']}\n{prep.get('stderr', '')[-1500:]}")
        return {"error": prep["error"]}
    runs, lat, cap = {}, args.latency, args.cap
    plan = [("litdata", "azure", "unshaped", 0.0, None), ("litdata", "azure", "shaped", lat, cap),
            ("mosaicml", "azure-patched", "shaped", lat, cap), ("mosaicml", "local", "local", 0.0, None)]
    for system, source, compare, la, c in plan:
        label = f"{system} ({shaping(la, c) if source != 'local' else 'local dir as remote'})"
        r = phase_peer(args, system, source, proxy if source != "local" else None, la, c, prep["formats"])
        r["source"] = {"azure": "Azurite via its Azure backend", "azure-patched":
                       "Azurite, account URL patched", "local": "local directory"}[source]
        r["compare"] = compare
        r["short"] = f"{system}\n" + {"azure": shaping(la, c).replace(" + ", "\n"),
                                       "azure-patched": "patched URL\n" + shaping(la, c).replace(" + ", "\n"),
                                       "local": "local dir"}[source]
        runs[label] = r
        if "error" in r:
            log(f"[peers] {label}: FAILED {r['error']}\n{r.get('stderr', '')[-2000:]}")
        else:
            log(f"[peers] {label}: " + ", ".join(
                f"{e['wall_s']:.1f} s {e['mb_per_s']:.0f} MB/s" for e in r["epochs"]))
    return {"runs": runs, "notes": NOTES, "upload_mb_per_s": prep["upload_mb_per_s"]}
