"""The main job end to end on the bundled corpus: pack, publish, train through the node cache,
checkpoint, resume exactly in a new process, measure.

    python examples/quickstart.py [OUTPUT_DIR]          # what `bash scripts/demo.sh` runs

1. ``fastdata pack`` the stdlib documentation corpus (JSONL + Parquet, byte tokenizer) and the
   chat sample (loss masks), ``inspect`` and ``verify`` them, read every document back.
2. Publish the dataset to a "remote": a directory served over HTTP on loopback, standing in
   for Blob Storage or S3 (a URL, so shards go through fastdata's download path).
3. Process 1 trains a tiny GPT on CPU from that URL: ``TokenDataset`` with a node cache
   (``cache_dir`` + ``cache_limit``) through ``fastdata.DataLoader``, and at step 20 saves the
   model, the optimizer and ``loader.state_dict()``; it goes on to step 40 uninterrupted.
4. Process 2, started fresh, loads the step-20 checkpoint and trains to step 40. Its batches'
   ``sample_ids`` and losses must equal process 1's steps 20-39, else this exits with 1.
5. ``fastdata bench`` on the URL for a few seconds writes a report and its PNG, and a summary
   prints tokens/s, data-wait % and cache hit % from ``DataLoader.metrics()``.

Needs aiohttp (fsspec's HTTP filesystem) and, for the PNG, matplotlib (the ``bench`` extra);
``scripts/demo.sh`` installs both.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

import fastdata

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
STEPS, SAVE_AT = 40, 20
MODEL = ["--seq-len", "128", "--batch-size", "8", "--d-model", "64", "--n-layers", "2", "--n-heads", "4",
         "--num-workers", "2", "--lr", "3e-3"]


OUT = ""  # the output directory, shown as $OUT in the echoed commands


def shown(arg: str) -> str:
    if OUT and arg.startswith(OUT):
        return "$OUT" + arg[len(OUT):]
    return os.path.relpath(arg) if os.path.isabs(arg) else arg


def sh(*args: str) -> str:
    """Run a command in a new process (``fastdata ...`` or an example), echo and return its output."""
    cmd = [sys.executable, "-P", "-m", "fastdata.cli.main", *args[1:]] if args[0] == "fastdata" else [
        sys.executable, "-P", *args]
    print(f"\n$ {' '.join(map(shown, args))}", flush=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")  # 2 cores: no oversubscribed OpenMP spinning
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(proc.stdout, end="", flush=True)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(args)}")
    return proc.stdout


def pack_and_check(out: str) -> str:
    web, chat = os.path.join(out, "stdlib"), os.path.join(out, "chat")
    sh("fastdata", "pack", os.path.join(CORPUS, "stdlib_docs.jsonl"),
       os.path.join(CORPUS, "stdlib_docs.parquet"), "-o", web, "--shard-size", "128KB", "--workers", "2",
       "--overwrite")
    sh("fastdata", "pack", os.path.join(CORPUS, "chat.jsonl"), "-o", chat, "--chat", "--overwrite",
       "--compression", "zstd")
    sh("fastdata", "inspect", web, "--docs", "1")
    sh("fastdata", "verify", web)
    sh("fastdata", "verify", chat)

    print("\n# reading back through the library")
    t0 = time.perf_counter()
    with fastdata.open_dataset(web) as ds:
        total = sum(len(ds.doc(i)) for i in range(ds.num_docs))
        per_doc = time.perf_counter() - t0
        first = bytes(ds.doc(0)[:-1].astype(np.uint8)).decode("utf-8")
        print(f"{ds}: doc(i) for all {ds.num_docs:,} documents, {total:,} tokens, in {per_doc * 1e3:.1f} ms "
              f"(zero-copy views); document 0: {first[:60]!r}")
    with fastdata.open_dataset(chat) as ds:
        mask = ds.loss_mask(0)
        print(f"{ds}: document 0 has {len(mask)} tokens, {int(mask.sum())} of them trained (assistant turns)")
    return web


def publish(dataset: str, root: str) -> str:
    """Copy the dataset under ``root`` as an object store receives it: the shards, then the
    manifest that makes them visible."""
    dest = os.path.join(root, os.path.basename(dataset))
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    names = sorted(os.listdir(dataset))
    for name in [n for n in names if n != "manifest.json"] + ["manifest.json"]:
        shutil.copyfile(os.path.join(dataset, name), os.path.join(dest, name))
    return dest


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def serve(root: str) -> tuple[http.server.ThreadingHTTPServer, str]:
    """A read-only HTTP server for ``root`` on loopback (the demo's stand-in for cloud storage)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=root))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def read_log(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def train(url: str, out: str, resume: bool) -> dict:
    name = "resumed" if resume else "train"
    log, report = os.path.join(out, f"{name}.jsonl"), os.path.join(out, f"{name}.json")
    for path in (log, report):
        if os.path.exists(path):
            os.remove(path)
    sh(os.path.join(HERE, "demo_train.py"), "--url", url, "--allow-insecure",
       "--cache-dir", os.path.join(out, "cache"), "--cache-limit", "16MB", "--out", os.path.join(out, "ckpt"),
       "--steps", str(STEPS), "--save-at", str(SAVE_AT), "--log", log, "--report", report,
       *(["--resume"] if resume else []), *MODEL)
    with open(report) as f:
        return {"log": read_log(log), **json.load(f)}


def check_resume(straight: list[dict], resumed: list[dict]) -> bool:
    print(f"\n# exact resume: process 2 against process 1 from step {SAVE_AT}")
    print(f"  uninterrupted step {SAVE_AT} sample ids: {straight[SAVE_AT]['sample_ids']}")
    print(f"  resumed       step {resumed[0]['step']} sample ids: {resumed[0]['sample_ids']}")
    same_ids = [a["sample_ids"] for a in straight[SAVE_AT:]] == [b["sample_ids"] for b in resumed]
    same_loss = [a["loss"] for a in straight[SAVE_AT:]] == [b["loss"] for b in resumed]
    steps = [b["step"] for b in resumed] == list(range(SAVE_AT, STEPS))
    ok = same_ids and same_loss and steps
    print(f"  steps {SAVE_AT}-{STEPS - 1}: sample ids {'identical' if same_ids else 'DIFFERENT'}, "
          f"losses {'bit-identical' if same_loss else 'DIFFERENT'} -> {'OK' if ok else 'FAILED'}")
    return ok


def figures(m: dict) -> str:
    hits, misses = m.get("cache.hits", 0), m.get("cache.misses", 0)
    return (f"{m.get('loader.tokens_per_second', 0):,.0f} tokens/s, "
            f"data-wait {100 * m.get('loader.data_wait_share', 0):.1f} %, "
            f"cache hit {100 * m.get('cache.hit_rate', 0):.1f} % ({hits:.0f} hits, {misses:.0f} misses), "
            f"{m.get('fetch.shards', 0):.0f} shards / {m.get('fetch.bytes', 0) / 1e6:.2f} MB fetched, "
            f"first batch after {m.get('loader.first_batch.p50', 0):.2f} s")


def main() -> None:
    global OUT
    if importlib.util.find_spec("aiohttp") is None:
        sys.exit("the demo's remote is an HTTP URL, read through fsspec, which needs aiohttp: "
                 "pip install aiohttp (scripts/demo.sh does)")
    started = time.perf_counter()
    out = OUT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                                tempfile.mkdtemp(prefix="fastdata-demo-"))
    os.makedirs(out, exist_ok=True)
    print(f"OUT={out}")
    shutil.rmtree(os.path.join(out, "ckpt"), ignore_errors=True)
    dataset = pack_and_check(out)

    remote = os.path.join(out, "remote")
    publish(dataset, remote)
    server, base = serve(remote)
    url = f"{base}/{os.path.basename(dataset)}"
    print(f"\n# published {shown(dataset)} to {url} (a directory served on loopback)")
    try:
        straight = train(url, out, resume=False)
        resumed = train(url, out, resume=True)
        ok = check_resume(straight["log"], resumed["log"])
        bench_out = sh("fastdata", "bench", url, "--seq-len", "128", "--batch-size", "8", "--step-ms", "5",
                       "--seconds", "3", "--interval", "0.25", "--cache-dir", os.path.join(out, "cache"),
                       "--cache-limit", "16MB", "--allow-insecure",
                       "--report", os.path.join(out, "bench.json"))
    finally:
        server.shutdown()
    plot = next((line.split(": ", 1)[1] for line in bench_out.splitlines() if line.startswith("plot: ")),
                "not written: matplotlib is not installed (pip install 'fastdata[bench]')")

    print("\n# summary (DataLoader.metrics())")
    print(f"  process 1, cold node cache, steps 0-{STEPS - 1}:  {figures(straight['metrics'])}")
    print(f"  process 2, warm node cache, steps {SAVE_AT}-{STEPS - 1}: {figures(resumed['metrics'])}")
    print(f"  loss {straight['log'][0]['loss']:.3f} at step 0 -> {straight['loss']:.3f} at step {STEPS}")
    print(f"  exact resume: {'OK' if ok else 'FAILED'}")
    print(f"  fastdata bench plot: {plot}")
    print(f"  output in {out}; {time.perf_counter() - started:.1f} s in all")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
