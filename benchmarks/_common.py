"""Plumbing shared by ``bench_loader.py`` and ``bench_remote.py``: logging, RSS, disk usage,
child processes that print a JSON result, the token-stream export, result output, and the
Azurite service and shaping proxy of the remote benchmark.

Only standard-library modules are imported at the top: the benchmarks' child processes
import this module before they time anything.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_PEERS_PY = HERE / ".venv-peers" / "bin" / "python"
SEQ_LEN, BATCH, WORKERS = 2048, 8, 2
MB = 1e6

# ---------------------------------------------------------------------- the loader systems

PEER_LOADERS = {
    "numpy-memmap": "torch DataLoader, map-style Dataset over np.memmap, int64 samples",
    "numpy-memmap-u16": "same, uint16 samples out of the workers, cast by the consumer",
    "megatron": "torch DataLoader, map-style Dataset over IndexedDataset (1 doc = 1 sample)",
    "mosaicml": "StreamingDataset(local=...) + StreamingDataLoader",
    "litdata": "StreamingDataset(TokensLoader(2049)) + StreamingDataLoader",
    "webdataset": "WebDataset(shardshuffle).shuffle(1000).batched(8) + WebLoader",
    "numpy-memmap-stateful": "torchdata StatefulDataLoader, map-style Dataset over np.memmap, int64 samples",
}
FASTDATA_LOADERS = {
    "fastdata": "fastdata.DataLoader(ds, 8, num_workers=2) (threads, the default)",
    "fastdata-processes": 'fastdata.DataLoader(..., backend="processes")',
    "fastdata-torch-dl": "TokenDataset(batch_size=8) + torch DataLoader(batch_size=None)",
    "fastdata-torch-dl-sample": "TokenDataset() (one sample per item) + torch DataLoader(batch_size=8)",
    "fastdata-stateful-dl": "TokenDataset(batch_size=8) + torchdata StatefulDataLoader(batch_size=None)",
    "fastdata-stateful-dl-sample": "TokenDataset() (one sample per item) + StatefulDataLoader(batch_size=8)",
}
PEERS = ("numpy-memmap", "megatron", "mosaicml", "litdata", "webdataset")  # ratio baselines
#: Peers whose loader keeps a resumable state (torchdata's StatefulDataLoader, and the
#: Streaming loaders of LitData and MosaicML, which have state_dict/load_state_dict): the
#: baselines of fastdata's StatefulDataLoader rows.
STATEFUL_PEERS = ("numpy-memmap-stateful", "litdata", "mosaicml")
#: Peers that run in fastdata's python (they need only numpy, torch and torchdata).
LOCAL_PEERS = ("numpy-memmap-stateful",)

# ---------------------------------------------------------------------- process plumbing


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _status_mib(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def rss_now_mib() -> float:
    return _status_mib("VmRSS")


def rss_peak_mib() -> float:
    """Peak RSS of this process (VmHWM; ru_maxrss would carry the parent's peak across exec)."""
    return _status_mib("VmHWM")


def du(path: Path) -> int:
    """Bytes of the files under ``path`` (LMDB bookkeeping excluded)."""
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.endswith(".lmdb")]
        for n in files:
            try:
                total += os.lstat(os.path.join(root, n)).st_size
            except FileNotFoundError:
                pass
    return total


def run_json(cmd: list[str], timeout: float, env: dict | None = None, log_path: Path | None = None
             ) -> dict:
    """Run a child that prints one JSON line last; {'error': ...} if it fails."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                              env=dict(os.environ, PYTHONWARNINGS="ignore", **(env or {})))
    except subprocess.TimeoutExpired as e:
        return {"error": f"timed out after {timeout:.0f} s", "stderr": str(e.stderr or "")[-2000:]}
    if log_path is not None:
        with open(log_path, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{proc.stderr}\n")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}", "stderr": proc.stderr[-3000:]}
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": "no JSON result", "stderr": proc.stderr[-3000:]}


def source_state() -> dict:
    """The commit and the uncommitted files of fastdata's sources when the benchmark starts
    (others may commit or edit while it runs; report.py records the commit at the end)."""
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True,
                                  check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return ""
    changed = git("status", "--porcelain", "--", "fastdata", "csrc").splitlines()  # "XY path"
    return {"commit": git("rev-parse", "--short", "HEAD").strip() or "unknown",
            "uncommitted": [line[3:] for line in changed if len(line) > 3]}


def check_peers_python(args: argparse.Namespace) -> None:
    """No peers venv: run without peers (``--no-peers``), saying so."""
    if not args.no_peers and not args.peers_python.exists():
        log(f"note: {args.peers_python} missing: running without peers (setup_peers.sh makes it)")
        args.no_peers = True


def write_results(args: argparse.Namespace, res: dict, md: str) -> None:
    """The Markdown on stdout; the results as JSON (``--json-out``) and the Markdown (``--md-out``)."""
    print(md)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    if args.md_out:
        args.md_out.parent.mkdir(parents=True, exist_ok=True)
        args.md_out.write_text(md + "\n")


# ---------------------------------------------------------------------- data


def ensure_stream(dataset: Path, work: Path) -> dict:
    """Export the dataset's token stream (whole samples only) to a raw uint16 file."""
    import numpy as np  # noqa: PLC0415
    import xxhash  # noqa: PLC0415

    import fastdata  # noqa: PLC0415

    data = fastdata.open_dataset(str(dataset))
    if np.dtype(data.dtype) != np.dtype("<u2"):
        raise SystemExit("the loader benchmark expects a uint16 dataset (bytes tokenizer)")
    samples = (data.num_tokens - 1) // SEQ_LEN
    n_tokens = samples * SEQ_LEN + 1
    tokens = data.tokens(0, n_tokens)
    digest = xxhash.xxh3_128_hexdigest(memoryview(np.ascontiguousarray(tokens)).cast("B"))
    path = work / "stream.u16"
    meta_path = work / "stream.json"
    meta = {"dataset": str(dataset), "samples": samples, "tokens": n_tokens, "seq_len": SEQ_LEN,
            "xxh3_128": digest, "shards": len(data.shards), "dataset_tokens": data.num_tokens}
    old = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if old.get("xxh3_128") != digest or not path.exists() or path.stat().st_size != 2 * n_tokens:
        tmp = path.with_suffix(".tmp")
        tokens.astype("<u2").tofile(tmp)
        os.replace(tmp, path)
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    return meta


# ---------------------------------------------------------------------- Azurite

AZURITE_SH = ROOT / "scripts" / "azurite.sh"
AZURITE_MAIN = Path(os.environ.get("FASTDATA_AZURITE_PREFIX", Path.home() / ".cache/fastdata/azurite")) \
    / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"
ACCOUNT = "devstoreaccount1"
# Azurite's published development key: public, not a secret.
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CONTAINER = "fdbench"


def conn_string(port: int) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};")


def free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Azurite:
    """An in-memory Azurite Blob service started (and stopped) by this benchmark."""

    def __init__(self, work: Path, memory_mb: int) -> None:
        import urllib.error  # noqa: PLC0415
        import urllib.request  # noqa: PLC0415

        subprocess.run(["bash", str(AZURITE_SH), "install"], check=True, stdout=subprocess.DEVNULL)
        self.port = free_port()
        self.dir = work / "azurite"
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "azurite.log", "w") as logf:
            self.proc = subprocess.Popen(
                ["node", str(AZURITE_MAIN), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                 "--inMemoryPersistence", "--extentMemoryLimit", str(memory_mb), "--skipApiVersionCheck",
                 "--loose", "--disableTelemetry", "--silent"],
                cwd=self.dir, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"azurite exited at start: {(self.dir / 'azurite.log').read_text()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/{ACCOUNT}?comp=list", timeout=2)
                break
            except urllib.error.HTTPError:
                break  # any HTTP answer means it is up
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit("azurite not ready after 60 s") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def upload(conn: str, local: Path, remote: str) -> float:
    """Copy the folder ``local`` to ``az://remote``; returns MB/s."""
    import fsspec  # noqa: PLC0415

    fs = fsspec.filesystem("az", connection_string=conn, skip_instance_cache=True)
    container = remote.split("/", 1)[0]
    if not fs.exists(container):
        fs.mkdir(container)
    t0 = time.perf_counter()
    size = 0
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.put_file(str(path), f"{remote}/{path.relative_to(local).as_posix()}")
            size += path.stat().st_size
    return size / MB / (time.perf_counter() - t0)


# ---------------------------------------------------------------------- the shaping proxy


def _load_faultproxy():
    """tests/_faultproxy.py, imported by path (the benchmark does not copy it)."""
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.spec_from_file_location("_bench_faultproxy", ROOT / "tests" / "_faultproxy.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


class Pacer:
    """One token bucket for all of a proxy's server-to-client bytes (a node's link)."""

    def __init__(self) -> None:
        self.rate: float | None = None
        self._t = 0.0

    async def take(self, n: int) -> None:
        import asyncio  # noqa: PLC0415

        if not self.rate or n <= 0:
            return
        now = time.monotonic()
        # no credit for idle time beyond 10 ms: the average never exceeds the rate
        self._t = max(self._t, now - 0.01) + n / self.rate
        if self._t > now:
            await asyncio.sleep(self._t - now)


class _PacedWriter:
    """A StreamWriter whose drain() also waits for the proxy's shared bandwidth budget."""

    def __init__(self, writer, pacer: Pacer) -> None:
        self._w, self._pacer, self._n = writer, pacer, 0

    def write(self, data: bytes) -> None:
        self._n += len(data)
        self._w.write(data)

    async def drain(self) -> None:
        await self._w.drain()
        n, self._n = self._n, 0
        await self._pacer.take(n)

    def __getattr__(self, name: str):
        return getattr(self._w, name)


def make_proxy(target_port: int):
    """A started FaultProxy in front of ``target_port`` with a proxy-wide bandwidth cap."""
    fp = _load_faultproxy()

    class LinkProxy(fp.FaultProxy):
        def __init__(self, port: int) -> None:
            super().__init__(port)
            self.pacer = Pacer()

        def shape(self, latency_s: float = 0.0, cap_bps: float | None = None) -> None:
            self.faults.latency_s = latency_s
            self.faults.rate_bps = None  # the per-connection cap stays off; the link cap is ours
            self.pacer.rate = cap_bps

        async def _pump(self, r, w, down, faulty, peer, conn):  # noqa: PLR0913 - the base signature
            if down:
                w = _PacedWriter(w, self.pacer)
            return await super()._pump(r, w, down, faulty, peer, conn)

    return LinkProxy(target_port).start()


# ---------------------------------------------------------------------- children and the proxy's counts


class Child:
    """A child process printing event lines; the parent snapshots the proxies' byte and
    request counts at each event, so bytes and requests per epoch exclude construction
    (manifest) and the other epochs. ``ev["bytes"]`` is relative to the child's start,
    ``ev["abs"]`` / ``ev["reqs"]`` are the proxies' absolute byte counts and request-log
    lengths (children sharing one proxy compare on those)."""

    def __init__(self, cmd: list[str], proxies: list, env: dict | None = None, spawn: float | None = None
                 ) -> None:
        import threading  # noqa: PLC0415

        self.proxies, self.events, self.result, self.stderr, self.last = proxies, [], None, "", None
        self.spawn = spawn or time.time()
        self.base = [p.counters.bytes_down for p in proxies]
        self.base_reqs = [len(p.counters.requests) for p in proxies]
        full_env = dict(os.environ, PYTHONWARNINGS="ignore", **(env or {}))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=full_env)
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._err.start()
        self._out = threading.Thread(target=self._read_out, daemon=True)
        self._out.start()

    def _bytes(self) -> list[int]:
        return [p.counters.bytes_down - b for p, b in zip(self.proxies, self.base)]

    def _read_err(self) -> None:
        self.stderr = self.proc.stderr.read()

    def _read_out(self) -> None:
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith('{"event"'):
                ev = json.loads(line)
                ev["t"], ev["bytes"] = time.time(), self._bytes()
                ev["abs"] = [p.counters.bytes_down for p in self.proxies]
                ev["reqs"] = [len(p.counters.requests) for p in self.proxies]
                self.events.append(ev)
            elif line:
                self.last = line

    def wait(self, timeout: float) -> dict:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._out.join(5)
            return {"error": f"timed out after {timeout:.0f} s", "stderr": self.stderr[-2000:]}
        self._out.join(10)
        self._err.join(10)
        if self.proc.returncode != 0 or not self.last:
            return {"error": f"exit {self.proc.returncode}", "stderr": self.stderr[-3000:]}
        r = json.loads(self.last)
        r["events"], r["bytes_total"], r["spawn"] = self.events, self._bytes(), self.spawn
        r["reqs_span"] = [[b, len(p.counters.requests)] for p, b in zip(self.proxies, self.base_reqs)]
        return r


def _range_end(spec: str | None) -> int | None:
    """The last byte of ``bytes=a-b`` (None: no range, or an open one)."""
    if not spec or "=" not in spec:
        return None
    _, _, b = spec.split("=", 1)[1].partition("-")
    return int(b) if b.strip().isdigit() else None


def count_requests(reqs: list, meta_bytes: dict[str, int]) -> dict:
    """HTTP requests the proxy saw, by kind: ``data_gets`` (GETs of a shard's payload: no
    range, or a range that ends past the shard's metadata section), ``meta_gets`` (ranged
    GETs inside ``[0, meta_bytes)``), ``other`` (manifest, listings, HEADs, ...)."""
    out = {"requests": len(reqs), "data_gets": 0, "meta_gets": 0, "other": 0}
    for q in reqs:
        name = q.path.split("?", 1)[0].rsplit("/", 1)[-1]
        if q.method != "GET" or name not in meta_bytes:
            out["other"] += 1
            continue
        end = _range_end(q.range)
        meta = meta_bytes[name]
        out["meta_gets" if meta and end is not None and end < meta else "data_gets"] += 1
    return out


def requests_between(proxy, start: int, end: int, meta_bytes: dict[str, int]) -> dict:
    return count_requests(proxy.counters.requests[start:end], meta_bytes)


#: fastdata counters differenced per epoch (the child records a snapshot at each epoch's end).
METRIC_KEYS = ("fetch.requests", "fetch.bytes", "fetch.blocks", "fetch.shards", "reader.bytes",
               "reader.tokens", "cache.hits", "cache.misses", "cache.evictions", "fetch.retries")


def fresh_dir(path: Path) -> Path:
    import shutil  # noqa: PLC0415

    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def summarize_epochs(r: dict, proxy=None, idx: int = 0, meta_bytes: dict | None = None) -> list[dict]:
    """Per epoch: bytes through proxy ``idx`` between its start and end events, MB/s, the
    consumed sample bytes, their ratio, the proxy's requests by kind (``proxy`` given) and
    the epoch's increments of fastdata's counters (``METRIC_KEYS``)."""
    ev = {(e["event"], e["epoch"]): e for e in r.get("events", []) if e.get("bytes")}
    out, before = [], {}
    for i, e in enumerate(r.get("epochs", [])):
        s, t = ev.get(("start", i)), ev.get(("end", i))
        b = t["bytes"][idx] - s["bytes"][idx] if s and t else None
        reqs = (requests_between(proxy, s["reqs"][idx], t["reqs"][idx], meta_bytes or {})
                if proxy is not None and s and t else None)
        snap = e.get("metrics") or {}
        delta = {k: snap[k] - before.get(k, 0.0) for k in METRIC_KEYS if k in snap}
        before = snap or before
        consumed = e["tokens"] * 2
        out.append({**e, "bytes": b, "mb_per_s": (b / MB / e["wall_s"]) if b else 0.0,
                    "tokens_per_s": e["tokens"] / e["wall_s"], "consumed_bytes": consumed,
                    "amplification": (b / consumed) if b and consumed else None,
                    "requests": reqs, "metrics_delta": delta})
    return out
