"""PNG charts of a benchmark run, from the JSON files the benchmarks wrote.

``run.sh`` calls this at the end when matplotlib is importable. Each chart is drawn only
when its input exists in ``--work-dir``:

* ``pack.png`` (``pack.json``): tokens/s (net) of ``fastdata pack`` and the Megatron-Core
  preprocessing path, per tokenizer and worker count, with the ratio;
* ``loader.png`` (``loader.json``): the DataLoader path (steady tokens/s, best run) of every
  system, and each one's ratio to the best peer; in-process shuffled reads beside it;
* ``remote.png`` (``remote.json``): cold-epoch MB/s against the link cap, and cold / warm
  epoch tokens/s against the local directory, for fastdata and the peers.

Usage: ``python benchmarks/charts.py --work-dir benchmarks/.work --out benchmarks/charts``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
FASTDATA_COLOR, PEER_COLOR, REF_COLOR = "#1f77b4", "#9e9e9e", "#ff7f0e"
PEERS = ("numpy-memmap", "megatron", "mosaicml", "litdata", "webdataset")


def load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def label_bars(ax, bars, texts: list[str]) -> None:
    for bar, text in zip(bars, texts):
        if text:
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")


def save(fig, out: Path, note: str) -> Path:
    if note:
        fig.text(0.01, 0.005, note, fontsize=7, color="#555555", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def chart_pack(res: dict, out: Path, note: str) -> Path:
    configs = res["configs"]
    labels = [f"{c['tokenizer_label']}\n{c['workers']} worker{'s' if c['workers'] > 1 else ''}"
              for c in configs]
    fd = [c.get("fastdata", {}).get("tokens_per_s", 0) / 1e6 for c in configs]
    mg = [c.get("megatron", {}).get("tokens_per_s", 0) / 1e6 for c in configs]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    xs = range(len(configs))
    w = 0.38
    b1 = ax.bar([x - w / 2 for x in xs], fd, w, label="fastdata pack", color=FASTDATA_COLOR)
    b2 = ax.bar([x + w / 2 for x in xs], mg, w, label="Megatron-Core preprocess path", color=PEER_COLOR)
    label_bars(ax, b1, [f"{c['ratio_net']:.1f}x" if c.get("ratio_net") else "" for c in configs])
    label_bars(ax, b2, ["" for _ in configs])
    ax.set_xticks(list(xs), labels)
    ax.set_yscale("log")
    ax.set_ylabel("M tokens/s (net of start-up, log scale)")
    ax.set_title("Packing JSONL into token shards (ratio = fastdata / Megatron)")
    ax.legend(frameon=False)
    return save(fig, out, note)


def chart_loader(res: dict, out: Path, note: str) -> Path:
    runs = res["loader"]["runs"]

    def best(rs: list[dict]) -> float:
        vals = [r["steady_tokens_per_s"] for r in rs if "error" not in r and r.get("steady_tokens_per_s")]
        return max(vals) if vals else 0.0

    vals = {s: best(rs) / 1e6 for s, rs in runs.items()}
    top = max((vals[s] for s in PEERS if s in vals), default=0.0)
    systems = sorted(vals, key=lambda s: -vals[s])
    inproc = res.get("inproc", {}).get("rows", {})
    fig, axes = plt.subplots(1, 2 if inproc else 1, figsize=(12 if inproc else 7.5, 4.5), squeeze=False)
    ax = axes[0][0]
    colors = [FASTDATA_COLOR if s.startswith("fastdata") else PEER_COLOR for s in systems]
    bars = ax.bar(range(len(systems)), [vals[s] for s in systems], color=colors)
    label_bars(ax, bars, [f"{vals[s] / top:.2f}x" if top else "" for s in systems])
    ax.set_xticks(range(len(systems)), systems, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("M tokens/s (steady, best run)")
    ax.set_title("DataLoader path, 8 x 2049, 2 workers, shuffled\n(label: ratio to the best peer)",
                 fontsize=10)
    if inproc:
        ax2 = axes[0][1]
        names = [n for n in inproc if "shuffled" in inproc[n] and inproc[n]["shuffled"].get("tokens_per_s")]
        names.sort(key=lambda n: -inproc[n]["shuffled"]["tokens_per_s"])
        v = [inproc[n]["shuffled"]["tokens_per_s"] / 1e6 for n in names]
        colors = [FASTDATA_COLOR if inproc[n].get("side") == "fastdata" and "numpy" not in n else PEER_COLOR
                  for n in names]
        ax2.bar(range(len(names)), v, color=colors)
        ax2.set_xticks(range(len(names)), [n.replace(" (", "\n(") for n in names], rotation=30, ha="right",
                       fontsize=7)
        ax2.set_ylabel("M tokens/s")
        ax2.set_title("In-process shuffled reads (no DataLoader), median", fontsize=10)
    return save(fig, out, note)


def chart_remote(res: dict, out: Path, note: str) -> Path:
    cap = res["args"]["cap"] / 1e6
    rows: list[tuple[str, dict, bool]] = []  # (label, result, is fastdata)
    for key, label in (("unshaped", "fastdata\nunshaped"), ("shaped", "fastdata\nshaped")):
        if key in res and "error" not in res[key]:
            rows.append((label, res[key], True))
    for label, r in (res.get("peers") or {}).get("runs", {}).items():
        if "error" not in r:
            rows.append((r.get("short") or label.replace(" (", "\n("), r, False))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    remote_rows = [(lbl, r, f) for lbl, r, f in rows if r["epochs"] and r["epochs"][0].get("bytes")]
    mbps = [r["epochs"][0]["mb_per_s"] for _, r, _ in remote_rows]
    bars = ax1.bar(range(len(remote_rows)), mbps,
                   color=[FASTDATA_COLOR if f else PEER_COLOR for _, _, f in remote_rows])
    label_bars(ax1, bars, [f"{m / cap:.0%}" if r.get("cap_bps") else ""
                           for m, (_, r, _) in zip(mbps, remote_rows)])
    ax1.axhline(cap, color=REF_COLOR, lw=1, ls="--", label=f"cap {cap:.0f} MB/s")
    ax1.axhline(0.9 * cap, color=REF_COLOR, lw=1, ls=":", label="90 % of cap (target)")
    ax1.set_xticks(range(len(remote_rows)), [lbl for lbl, _, _ in remote_rows], fontsize=7)
    ax1.set_ylabel("MB/s through the proxy, cold epoch")
    ax1.set_title("Cold first epoch from Azurite (label: share of the cap, shaped runs)", fontsize=10)
    ax1.legend(frameon=False, fontsize=8)

    local = (res.get("local") or {}).get("tokens_per_s")
    xs, w = range(len(rows)), 0.38
    cold = [r["epochs"][0]["tokens_per_s"] / 1e6 if r["epochs"] else 0 for _, r, _ in rows]
    warm = [r["epochs"][1]["tokens_per_s"] / 1e6 if len(r["epochs"]) > 1 else 0 for _, r, _ in rows]
    ax2.bar([x - w / 2 for x in xs], cold, w, label="cold (epoch 1)", color="#aec7e8")
    b = ax2.bar([x + w / 2 for x in xs], warm, w, label="warm (epoch 2)", color=FASTDATA_COLOR)
    if local:
        ax2.axhline(local / 1e6, color=REF_COLOR, lw=1, ls="--", label="fastdata, local directory")
        label_bars(ax2, b, [f"{v / (local / 1e6):.2f}x" for v in warm])
    ax2.set_xticks(list(xs), [lbl for lbl, _, _ in rows], fontsize=7)
    ax2.set_ylabel("M tokens/s over the epoch")
    ax2.set_title("Epoch throughput (label: warm / fastdata local directory)", fontsize=10)
    ax2.legend(frameon=False, fontsize=8)
    return save(fig, out, note)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work-dir", type=Path, default=HERE / ".work")
    ap.add_argument("--out", type=Path, default=HERE / "charts")
    ap.add_argument("--note", default="", help="a footer line (date, commit, machine, load)")
    args = ap.parse_args(argv)
    made = []
    for name, fn in (("pack", chart_pack), ("loader", chart_loader), ("remote", chart_remote)):
        res = load(args.work_dir / f"{name}.json")
        if res is None:
            continue
        try:
            made.append(fn(res, args.out / f"{name}.png", args.note))
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
            print(f"charts: {name}.json has no chartable results ({type(e).__name__}: {e})", file=sys.stderr)
    for path in made:
        print(f"chart: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
