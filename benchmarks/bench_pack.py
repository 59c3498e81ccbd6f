"""Pack throughput: ``fastdata pack`` versus the Megatron-Core preprocessing path.

For each tokenizer (``bytes`` and a BPE ``tokenizer.json``) and each worker count, this runs

* fastdata: ``fastdata pack CORPUS -o OUT --tokenizer T --workers N --text-field text``
  in a subprocess;
* Megatron-Core: ``benchmarks/peers/megatron_pack.py`` with the peers venv's python, the
  re-creation of Megatron-LM's ``tools/preprocess_data.py`` (Pool of N tokenizing workers,
  ``--append-eod``, ``IndexedDatasetBuilder``), with the same tokenizer and EOS id;

alternately, config by config, so both see the same machine state. It reports wall time,
documents/s and tokens/s, tokens/s per worker and per CPU-second (user+sys of the
subprocess and its children), the fastdata/Megatron ratio, and checks that both produced
the same number of documents and tokens.

"wall" is the whole subprocess, interpreter start and imports included. "net" subtracts
each tool's fixed start-up: for fastdata the median time of ``fastdata pack --help``; for
Megatron the script's own timer from opening the input to the finalized index (so the
megatron.core/torch import, about 6 s on a small box, is excluded). On a small corpus
start-up dominates "wall"; "net" is the steady-state rate.

Writes a JSON file with every measurement and a Markdown section (``--md-out``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_PEERS_PY = HERE / ".venv-peers" / "bin" / "python"
MEGATRON_SCRIPT = HERE / "peers" / "megatron_pack.py"


def run_timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, str, str, int]:
    """Run ``cmd``: (wall s, CPU s of it and its children, stdout, stderr, return code)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout, proc.stderr, proc.returncode


def loadavg() -> float:
    return os.getloadavg()[0]


def startup_cost(cmd: list[str], repeat: int, env: dict | None = None) -> tuple[float, float]:
    """Median (wall s, CPU s) of a command that only starts the tool and exits."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu, _, err, rc = run_timed(cmd, env=env)
        if rc != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{err}")
        walls.append(wall)
        cpus.append(cpu)
    return statistics.median(walls), statistics.median(cpus)


def run_fastdata(fastdata: list[str], corpus: Path, out: Path, tokenizer: str,
                 workers: int, extra: list[str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [*fastdata, "pack", str(corpus), "-o", str(out), "--tokenizer", tokenizer,
           "--workers", str(workers), "--text-field", "text", *extra]
    load = loadavg()
    wall, cpu, stdout, stderr, rc = run_timed(cmd)
    if rc != 0:
        raise RuntimeError(f"fastdata pack failed (rc {rc}): {' '.join(cmd)}\n{stderr[-4000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    totals = manifest["totals"]
    return {
        "system": "fastdata", "workers": workers, "wall_s": wall, "cpu_s": cpu,
        "docs": int(totals["docs"]), "tokens": int(totals["tokens"]),
        "shards": int(totals["shards"]), "out_bytes": int(totals["stored_bytes"]),
        "dtype": manifest["dtype"], "eos_id": manifest["tokenizer"].get("eos_id"),
        "fingerprint": manifest.get("fingerprint"),
        "bos_id": manifest["tokenizer"].get("bos_id"), "load_before": load,
        "cmd": cmd, "stdout_tail": stdout[-2000:], "stderr_tail": stderr[-2000:],
    }


def run_megatron(peers_py: Path, corpus: Path, prefix: Path, tokenizer: str, workers: int,
                 eos_id: int) -> dict:
    for suffix in (".bin", ".idx"):
        Path(str(prefix) + suffix).unlink(missing_ok=True)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(peers_py), str(MEGATRON_SCRIPT), str(corpus), "--output-prefix", str(prefix),
           "--tokenizer", tokenizer, "--workers", str(workers), "--eos-id", str(eos_id)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    load = loadavg()
    wall, cpu, stdout, stderr, rc = run_timed(cmd, env=env)
    if rc != 0:
        raise RuntimeError(f"megatron pack failed (rc {rc}): {' '.join(cmd)}\n{stderr[-4000:]}")
    res = json.loads(stdout.strip().splitlines()[-1])
    res.update({"wall_s": wall, "cpu_s": cpu, "load_before": load, "cmd": cmd})
    return res


def tokenizer_ceiling(corpus: Path, tokenizer_json: Path, max_docs: int = 5000) -> dict:
    """Tokens/s of the ``tokenizers`` library alone, one thread, in this process.

    The upper bound for any packer that uses it, per core: ``encode`` one document at a
    time (as the Megatron path does) and ``encode_batch`` over the same documents (as
    fastdata does). Parsing JSON is excluded.
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    texts = []
    with corpus.open("rb") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if len(texts) >= max_docs:
                break
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    out = {"docs": len(texts), "bytes": nbytes}
    for name, fn in (
        ("encode", lambda: [tok.encode(t, add_special_tokens=False).ids for t in texts]),
        ("encode_batch", lambda: [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]),
    ):
        c0, t0 = time.process_time(), time.perf_counter()
        n = sum(len(ids) for ids in fn())
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        out[name] = {"tokens": n, "wall_s": wall, "cpu_s": cpu, "tokens_per_s": n / wall,
                     "tokens_per_cpu_s": n / cpu if cpu > 0 else float("nan")}
    return out


def rates(r: dict, net_s: float, startup_cpu_s: float) -> dict:
    w = r["workers"]
    net_cpu = r["cpu_s"] - startup_cpu_s
    return {
        "net_cpu_s": net_cpu,
        "net_s": net_s,
        "docs_per_s": r["docs"] / net_s,
        "tokens_per_s": r["tokens"] / net_s,
        "tokens_per_s_wall": r["tokens"] / r["wall_s"],
        "tokens_per_s_per_worker": r["tokens"] / net_s / w,
        "tokens_per_cpu_s": r["tokens"] / net_cpu if net_cpu > 0 else float("nan"),
    }


def fmt_rate(x: float) -> str:
    if x != x:  # nan
        return "n/a"
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:.2f} {unit}"
    return f"{x:.1f}"


def markdown(results: dict) -> str:
    lines = ["### Pack throughput", ""]
    c = results["corpus"]
    lines.append(f"Corpus: {c['docs']:,} documents, {c['bytes'] / 1e6:.1f} MB JSONL "
                 f"(`{Path(c['path']).name}`). fastdata start-up (`fastdata pack --help`): "
                 f"{results['fastdata_startup_s']:.2f} s wall, "
                 f"{results['fastdata_startup_cpu_s']:.2f} CPU-s.")
    if results.get("megatron_startup_s") is not None:
        lines[-1] += (f" Megatron start-up (python + import megatron.core): "
                      f"{results['megatron_startup_s']:.2f} s wall, "
                      f"{results['megatron_startup_cpu_s']:.2f} CPU-s.")
    lines[-1] += f" Repeats per config: {results['repeat']} (best kept)."
    lines.append("")
    lines.append("| tokenizer | workers | system | wall s | net s | docs/s | tokens/s | "
                 "tokens/s/worker | tokens/CPU-s | tokens | check |")
    lines.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for cfg in results["configs"]:
        for key in ("fastdata", "megatron"):
            r = cfg.get(key)
            if r is None:
                continue
            lines.append(
                f"| {cfg['tokenizer_label']} | {cfg['workers']} | {r['system']} | "
                f"{r['wall_s']:.2f} | {r['net_s']:.2f} | {fmt_rate(r['docs_per_s'])} | "
                f"{fmt_rate(r['tokens_per_s'])} | {fmt_rate(r['tokens_per_s_per_worker'])} | "
                f"{fmt_rate(r['tokens_per_cpu_s'])} | {r['tokens']:,} | "
                f"{cfg.get('check', '') if key == 'fastdata' else ''} |")
    lines.append("")
    for label, same in results.get("deterministic", {}).items():
        lines.append(f"fastdata output for {label} identical across worker counts "
                     f"(manifest fingerprint): {'yes' if same else 'NO'}.")
    lines.append("")
    ceil = results.get("tokenizer_ceiling")
    if ceil:
        e, b = ceil["encode"], ceil["encode_batch"]
        lines.append(
            f"Reference: the `tokenizers` library alone on the BPE tokenizer, in-process, "
            f"first {ceil['docs']:,} documents ({ceil['bytes'] / 1e6:.1f} MB, no JSON parsing): "
            f"`encode` per document {fmt_rate(e['tokens_per_s'])} tokens/s "
            f"({fmt_rate(e['tokens_per_cpu_s'])} tokens/CPU-s); `encode_batch` "
            f"{fmt_rate(b['tokens_per_s'])} tokens/s ({fmt_rate(b['tokens_per_cpu_s'])} "
            f"tokens/CPU-s). This is the per-core ceiling of both packers on bpe-8k.")
        lines.append("")
    have = [cfg for cfg in results["configs"] if "ratio_net" in cfg]
    if have:
        lines.append("fastdata / Megatron-Core (same run; > 1 means fastdata is faster):")
        lines.append("")
        lines.append("| tokenizer | workers | tokens/s ratio (net) | ratio (wall) | "
                     "tokens/CPU-s ratio |")
        lines.append("|---|---:|---:|---:|---:|")
        for cfg in have:
            lines.append(f"| {cfg['tokenizer_label']} | {cfg['workers']} | "
                         f"{cfg['ratio_net']:.2f}x | {cfg['ratio_wall']:.2f}x | "
                         f"{cfg['ratio_cpu']:.2f}x |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--tokenizer-json", type=Path, default=None,
                    help="BPE tokenizer.json (benchmarks/corpus.py --tokenizer-out)")
    ap.add_argument("--tokenizers", default="bytes,bpe",
                    help="comma list from: bytes, bpe (default both)")
    ap.add_argument("--workers", default="1,2", help="comma list of worker counts")
    ap.add_argument("--work-dir", type=Path, default=HERE / ".work" / "pack")
    ap.add_argument("--repeat", type=int, default=1, help="runs per config; the best is kept")
    ap.add_argument("--fastdata", default="fastdata",
                    help="command that runs the fastdata CLI (default: fastdata)")
    ap.add_argument("--fastdata-arg", action="append", default=[],
                    help="extra argument for fastdata pack (repeatable)")
    ap.add_argument("--peers-python", type=Path, default=DEFAULT_PEERS_PY)
    ap.add_argument("--no-megatron", action="store_true")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--md-out", type=Path, default=None)
    args = ap.parse_args(argv)

    fastdata = args.fastdata.split()
    meta_path = args.corpus.with_suffix(".meta.json")
    corpus_meta = (json.loads(meta_path.read_text()) if meta_path.exists()
                   else {"path": str(args.corpus), "docs": None,
                         "bytes": args.corpus.stat().st_size})
    corpus_meta["path"] = str(args.corpus)
    if corpus_meta.get("docs") is None:
        with args.corpus.open("rb") as f:
            corpus_meta["docs"] = sum(1 for _ in f)
    # Read the corpus once so every run starts from the page cache.
    with args.corpus.open("rb") as f:
        while f.read(1 << 24):
            pass

    use_megatron = not args.no_megatron
    if use_megatron and not args.peers_python.exists():
        print(f"note: {args.peers_python} missing; run benchmarks/setup_peers.sh. "
              "Skipping Megatron.", file=sys.stderr)
        use_megatron = False

    startup, startup_cpu = startup_cost([*fastdata, "pack", "--help"], 3)
    mg_startup = mg_startup_cpu = None
    if use_megatron:
        mg_startup, mg_startup_cpu = startup_cost(
            [str(args.peers_python), str(MEGATRON_SCRIPT), "--import-only"], 1,
            env=dict(os.environ, PYTHONWARNINGS="ignore"))
    results = {"corpus": corpus_meta, "fastdata_startup_s": startup,
               "fastdata_startup_cpu_s": startup_cpu, "megatron_startup_s": mg_startup,
               "megatron_startup_cpu_s": mg_startup_cpu, "repeat": args.repeat,
               "configs": [], "nproc": os.cpu_count()}
    tok_specs = []
    for name in args.tokenizers.split(","):
        name = name.strip()
        if name == "bytes":
            tok_specs.append(("bytes", "bytes"))
        elif name == "bpe":
            if args.tokenizer_json is None:
                ap.error("--tokenizers bpe needs --tokenizer-json")
            tok_specs.append(("bpe-8k", str(args.tokenizer_json.resolve())))
        else:
            ap.error(f"unknown tokenizer {name!r}")

    if any(label == "bpe-8k" for label, _ in tok_specs):
        results["tokenizer_ceiling"] = tokenizer_ceiling(args.corpus, args.tokenizer_json)
        print(f"tokenizers alone: {results['tokenizer_ceiling']['encode']['tokens_per_s']:.0f} "
              "tokens/s (encode)", file=sys.stderr)

    for label, spec in tok_specs:
        for workers in (int(w) for w in args.workers.split(",")):
            cfg = {"tokenizer_label": label, "tokenizer": spec, "workers": workers}
            fd_out = args.work_dir / f"fastdata-{label}-w{workers}"
            mg_prefix = args.work_dir / f"megatron-{label}-w{workers}" / "data_text_document"
            best_fd = best_mg = None
            for rep in range(args.repeat):
                fd = run_fastdata(fastdata, args.corpus, fd_out, spec, workers, args.fastdata_arg)
                fd.update(rates(fd, max(fd["wall_s"] - startup, 1e-9), startup_cpu))
                if best_fd is None or fd["net_s"] < best_fd["net_s"]:
                    best_fd = fd
                print(f"[{label} w={workers} rep {rep}] fastdata: {fd['wall_s']:.2f} s wall, "
                      f"{fmt_rate(fd['tokens_per_s'])} tok/s net, {fd['tokens']:,} tokens",
                      file=sys.stderr)
                if use_megatron:
                    eos = fd["eos_id"]
                    mg = run_megatron(args.peers_python, args.corpus, mg_prefix, spec, workers, eos)
                    mg.update(rates(mg, mg["pack_s"], mg_startup_cpu))
                    if best_mg is None or mg["net_s"] < best_mg["net_s"]:
                        best_mg = mg
                    print(f"[{label} w={workers} rep {rep}] megatron: {mg['wall_s']:.2f} s wall, "
                          f"{fmt_rate(mg['tokens_per_s'])} tok/s net, {mg['tokens']:,} tokens",
                          file=sys.stderr)
            cfg["fastdata"] = best_fd
            cfg["fastdata_dir"] = str(fd_out)
            if best_mg is not None:
                cfg["megatron"] = best_mg
                cfg["megatron_prefix"] = str(mg_prefix)
                same = (best_fd["docs"] == best_mg["docs"]
                        and best_fd["tokens"] == best_mg["tokens"])
                if same:
                    cfg["check"] = "tokens equal"
                else:
                    diff = best_fd["tokens"] - best_mg["tokens"]
                    cfg["check"] = (f"MISMATCH: docs {best_fd['docs']} vs {best_mg['docs']}, "
                                    f"tokens differ by {diff:+,}")
                    print(f"WARNING [{label} w={workers}]: {cfg['check']}", file=sys.stderr)
                cfg["ratio_net"] = best_fd["tokens_per_s"] / best_mg["tokens_per_s"]
                cfg["ratio_wall"] = best_mg["wall_s"] / best_fd["wall_s"]
                cfg["ratio_cpu"] = best_fd["tokens_per_cpu_s"] / best_mg["tokens_per_cpu_s"]
            results["configs"].append(cfg)
        prints = {c["workers"]: c["fastdata"]["fingerprint"] for c in results["configs"]
                  if c["tokenizer_label"] == label}
        results.setdefault("deterministic", {})[label] = len(set(prints.values())) == 1

    md = markdown(results)
    print(md)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    if args.md_out:
        args.md_out.parent.mkdir(parents=True, exist_ok=True)
        args.md_out.write_text(md + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
