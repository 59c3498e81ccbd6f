"""The Markdown tables of ``bench_loader.py`` (``loader_markdown``) and ``bench_remote.py``
(``remote_markdown``), made from their result dicts (the ``--json-out`` files hold the same)."""

from __future__ import annotations

import statistics

from _common import FASTDATA_LOADERS, MB, PEER_LOADERS, PEERS, SEQ_LEN, STATEFUL_PEERS

# ============================================================================ bench_loader.py

def fmt_m(x: float | None) -> str:
    return "—" if x is None or x != x else f"{x / 1e6:,.1f}"


def best(rs: list[dict], key: str, hi: bool = True) -> float | None:
    vals = [r[key] for r in rs if "error" not in r and key in r]
    if not vals:
        return None
    return max(vals) if hi else min(vals)


def loader_markdown(res: dict) -> str:  # noqa: C901 - one table after another
    L: list[str] = ["### Training loader", ""]
    meta = res["meta"]
    src = res.get("source") or {}
    if src:
        dirty = src.get("uncommitted") or []
        L += [f"fastdata sources when this benchmark started: commit `{src.get('commit')}`"
              + (f", with uncommitted changes in {', '.join(f'`{f}`' for f in dirty)}" if dirty else "")
              + ".", ""]
    L.append(f"Data: the bench corpus packed by fastdata with the bytes tokenizer "
             f"({meta['shards']} shards, {meta['dataset_tokens']:,} tokens); {meta['samples']:,} "
             f"samples of {SEQ_LEN + 1} tokens (windows with stride {SEQ_LEN}, fastdata's packed "
             "samples), uint16 on disk, int64 batches of 8. Every peer format holds the same "
             "samples, one record per sample:")
    exp = res.get("export") or {}
    if exp.get("formats"):
        L.append("")
        L.append("| format | written by | size MB | write s | read back == stream |")
        L.append("|---|---|---:|---:|---|")
        writers = {"megatron": "IndexedDatasetBuilder (1 document per sample)",
                   "mosaicml": "MDSWriter, `tokens: ndarray:uint16:2049`, 64 MB shards",
                   "litdata": "`optimize(..., item_loader=TokensLoader())`, 1,024 samples/chunk",
                   "webdataset": "ShardWriter, 16 tar shards, member `.tok` = raw uint16"}
        for k, v in exp["formats"].items():
            L.append(f"| {k} | {writers.get(k, '')} | {v['bytes'] / 1e6:.1f} | {v['write_s']:.1f} | "
                     f"{v['check']} ({v['samples']:,} samples) |")
    elif exp.get("error"):
        L += ["", f"**Peer export failed:** {exp['error']}"]

    ip = res.get("inproc")
    if ip:
        L += ["", "#### In-process reads (no DataLoader), M tokens/s",
              "", f"{ip['batches']:,} batches of 8 x 2049 per round after {ip.get('warmup', 1)} untimed "
              f"batches (construction excluded), each batch a fresh int64 array; median of "
              f"{ip['rounds']} rounds. fastdata and numpy.memmap "
              "alternate round by round in one process; peers run in the peers venv.", ""]
        base = ip["rows"].get("numpy.memmap (fastdata's python)", {})
        L.append("| system | sequential | shuffled | seq. vs numpy.memmap | shuffled vs numpy.memmap "
                 "| data check |")
        L.append("|---|---:|---:|---:|---:|---|")
        for label, row in ip["rows"].items():
            cells = []
            for p in ("sequential", "shuffled"):
                cells.append(fmt_m(row.get(p, {}).get("tokens_per_s")) if "error" not in row.get(p, {})
                             else "failed")
            ratios = []
            for p in ("sequential", "shuffled"):
                a, b = row.get(p, {}).get("tokens_per_s"), base.get(p, {}).get("tokens_per_s")
                ratios.append(f"{a / b:.2f}x" if a and b else "—")
            check = row.get("shuffled", {}).get("data_check", "")
            L.append(f"| {label} | {cells[0]} | {cells[1]} | {ratios[0]} | {ratios[1]} | {check} |")

    ld = res.get("loader")
    if ld:
        L += ["", "#### DataLoader path: batch 8 x 2049, 2 workers, shuffled",
              "", f"{ld['batches']:,} batches ({ld['tokens'] / 1e6:.1f} M tokens) per run, each run a "
              f"fresh process; {ld['repeat']} runs per system, systems alternating (order reversed "
              "every run). The consumer copies inputs and shifted labels out of every batch. "
              "**steady** = tokens/s from the first batch to the last; **incl. start-up** = from "
              "process spawn. RSS = peak of the main process.", ""]
        peer_best = {s: best(ld["runs"].get(s, []), "steady_tokens_per_s") for s in PEERS}
        peer_best = {s: v for s, v in peer_best.items() if v}
        top = max(peer_best.items(), key=lambda kv: kv[1]) if peer_best else None
        st_best = {s: best(ld["runs"].get(s, []), "steady_tokens_per_s") for s in STATEFUL_PEERS}
        st_best = {s: v for s, v in st_best.items() if v}
        st_top = max(st_best.items(), key=lambda kv: kv[1]) if st_best else None
        L.append("| system | loader | steady M tok/s (best) | all runs | incl. start-up | first batch "
                 "from spawn s | after import torch s | main RSS MiB | vs best peer |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for s, rs in ld["runs"].items():
            desc = FASTDATA_LOADERS.get(s) or PEER_LOADERS.get(s, "")
            ok = [r for r in rs if "error" not in r]
            if not ok:
                err = rs[0].get("error") if rs else "not run"
                L.append(f"| {s} | {desc} | failed: {err} | | | | | | |")
                continue
            b = best(ok, "steady_tokens_per_s")
            allr = " / ".join(fmt_m(r["steady_tokens_per_s"]) for r in ok)
            base = st_top if "stateful" in s else top  # stateful loaders: against stateful peers
            ratio = f"{b / base[1]:.2f}x" if base else "—"
            L.append(f"| {s} | {desc} | {fmt_m(b)} | {allr} | {fmt_m(best(ok, 'total_tokens_per_s'))} | "
                     f"{best(ok, 'first_from_spawn_s', False):.2f} | "
                     f"{best(ok, 'first_after_torch_s', False):.2f} | "
                     f"{best(ok, 'rss_main_mib', False):.0f} | {ratio} |")
        if top:
            L += ["", f"Best peer on the DataLoader path in this run: **{top[0]}**, "
                  f"{top[1] / 1e6:.1f} M tokens/s."]
            per_run = []
            for rep in range(ld["repeat"]):
                def at(s: str, rep: int = rep) -> float | None:
                    rs = ld["runs"].get(s, [])
                    ok = rep < len(rs) and "error" not in rs[rep]
                    return rs[rep]["steady_tokens_per_s"] if ok else None
                peers_rep = {s: at(s) for s in PEERS if at(s)}
                if at("fastdata") and peers_rep:
                    name, v = max(peers_rep.items(), key=lambda kv: kv[1])
                    per_run.append(f"run {rep + 1}: {at('fastdata') / v:.2f}x ({name})")
            if per_run:
                L.append("fastdata.DataLoader (threads) / best peer of the same run: "
                         + "; ".join(per_run) + ".")
            L += ["", "The stock loaders' rows (`fastdata-torch-dl*`, `fastdata-stateful-dl*`) are "
                  "divided by the best peer under the same kind of loader: the torch DataLoader rows "
                  "by the best of " + ", ".join(PEERS) + " (all run the stock DataLoader or a "
                  "subclass); the StatefulDataLoader rows by the best of the resumable loaders, "
                  + ", ".join(STATEFUL_PEERS)
                  + (f" (here **{st_top[0]}**, {st_top[1] / 1e6:.1f} M tokens/s)." if st_top else ".")]
        fr = ld.get("first", {})
        ref = [r for r in fr.get("reference", []) if "error" not in r]
        fdf = [r for r in fr.get("fastdata", []) if "error" not in r]
        if ref and fdf:
            pairs = [(f, r) for f, r in zip(fr["fastdata"], fr["reference"])
                     if "error" not in f and "error" not in r]
            d_spawn = statistics.median(f["first_from_spawn_s"] - r["first_from_spawn_s"] for f, r in pairs)
            d_torch = statistics.median(f["first_after_torch_s"] - r["first_after_torch_s"] for f, r in pairs)
            L += ["", "#### Time to first batch from a cold process (page cache warm)", "",
                  f"{len(pairs)} alternating pairs of fresh processes (same python, same script); "
                  "\"reference\" = `import torch` + one numpy.memmap batch of 8 x 2049 into int64; "
                  "fastdata = `import torch`, `import fastdata`, `TokenDataset` + `fastdata.DataLoader` "
                  "(threads) and its first batch. Medians.", "",
                  "| process | from spawn s | import torch s | after import torch s | runs (from spawn) |",
                  "|---|---:|---:|---:|---|"]
            for name, rs in (("reference", ref), ("fastdata.DataLoader (threads)", fdf)):
                L.append(f"| {name} | {statistics.median(r['first_from_spawn_s'] for r in rs):.2f} | "
                         f"{statistics.median(r['torch_import_s'] for r in rs):.2f} | "
                         f"{statistics.median(r['first_after_torch_s'] for r in rs):.2f} | "
                         + ", ".join(f"{r['first_from_spawn_s']:.2f}" for r in rs) + " |")
            L += ["", f"fastdata's first batch comes {d_spawn:+.2f} s after the reference's from "
                  f"spawn (median of the paired differences) and {d_torch:+.2f} s after it counted from "
                  "the end of `import torch` (target: within 0.3 s). `import torch` alone varies by "
                  "seconds between runs on a loaded box, so the second figure is the steadier one."]

    sy = res.get("synthetic")
    if sy:
        L += ["", "#### 10^9 samples: construction, first batch, RSS", ""]
        if "error" in sy:
            L.append(f"**Failed:** {sy['error']}")
        else:
            st = sy["stamp"]
            L.append(f"Synthetic dataset: {st['shards']:,} shards x {st['samples_per_shard']:,} packed "
                     f"samples ({st['tokens']:,} tokens); inline manifest {st['manifest_bytes'] / 1e6:.0f} "
                     "MB of JSON (one entry per shard). Every shard file exists as a hard link to one of "
                     "a few sparse template shards (valid header and index, zero tokens), so the loader "
                     "can open whichever shards the order picks. Fresh process each run; "
                     "`TokenDataset(path, seq_len=2048, shuffle=True)` then the first batch of "
                     "`fastdata.DataLoader(ds, 8, num_workers=2)`.")
            if st.get("table"):
                L.append(f"Binary variant: fastdata's own `Manifest.serialize()` output "
                         f"({st['table']['manifest_bytes'] / 1e3:.1f} kB JSON + "
                         f"{st['table']['table_bytes'] / 1e6:.0f} MB `shards.bin`).")
            elif st.get("table_error"):
                L.append(f"Binary shard table variant not generated: {st['table_error']}")
            L += ["", "| manifest | samples | construct s | first batch s | total s | RSS after "
                  "import MiB | RSS built MiB | peak RSS MiB |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
            for label, rs in sy["variants"].items():
                ok = [r for r in rs if "error" not in r]
                if not ok:
                    L.append(f"| {label} | failed: {rs[0].get('error')} | | | | | | |")
                    continue
                r = min(ok, key=lambda r: r["construct_and_first_s"])
                L.append(f"| {label} | {r['samples']:,} | {r['construct_s']:.3f} | "
                         f"{r['first_batch_s']:.3f} | {r['construct_and_first_s']:.3f} | "
                         f"{r['rss_base_mib']:.0f} | {r['rss_built_mib']:.0f} | {r['rss_peak_mib']:.0f} |")
            pl = [r for r in sy.get("planning", []) if "error" not in r]
            if pl:
                r = min(pl, key=lambda r: r["construct_s"])
                L += ["", "Planning layer alone (`EpochOrder` over `document_space(np.full("
                      f"{st['shards']:,}, {st['samples_per_shard']:,}))`, "
                      f"global batch 8, shuffled): {r['samples']:,} samples, {r['construct_s']:.3f} s to "
                      f"build, {r['first_slots_s'] * 1e3:.1f} ms for the first batch's sample ids, peak "
                      f"RSS {r['rss_peak_mib']:.0f} MiB (python + numpy + fastdata, no torch)."]
    L.append("")
    return "\n".join(L)


# ============================================================================ bench_remote.py

def fmt(x: float | None, spec: str = ".1f") -> str:
    return "—" if x is None or x != x else format(x, spec)


def shaping(latency: float, cap: float | None) -> str:
    if not latency and not cap:
        return "unshaped"
    parts = [f"{latency * 1e3:.0f} ms latency"] if latency else []
    if cap:
        parts.append(f"{cap / MB:.0f} MB/s cap")
    return " + ".join(parts)


def _mode(res: dict) -> str:
    a, info = res["args"], res["dataset"]
    block = (f"{info['block_size'] / 1024:,.0f} KiB blocks" if info.get("block_size")
             else "no block table (v1)")
    how = {"on": "`CacheConfig(blocks=True)` (block-granular fetches)", "off": "`CacheConfig(blocks=False)` "
           "(whole shards)"}.get(a.get("blocks") or "", "fastdata's default cache mode")
    return f"{how}; shards of {block}"


def epoch_rows(label: str, res: dict, local_tps: float | None, cap: float | None) -> list[str]:
    if "error" in res:
        return [f"| {label} | failed: {res['error']} | | | | | | |"]
    rows = []
    for i, e in enumerate(res["epochs"]):
        kind = "cold" if i == 0 else "warm"
        vs_cap = f"{e['mb_per_s'] * MB / cap:.0%}" if cap and e["bytes"] and i == 0 else "—"
        vs_local = f"{e['tokens_per_s'] / local_tps:.2f}x" if local_tps else "—"
        rows.append(f"| {label} | {kind} (epoch {i + 1}) | {e['wall_s']:.1f} | "
                    f"{fmt(e['tokens_per_s'] / 1e6)} | "
                    f"{fmt((e['bytes'] or 0) / MB, '.0f')} | {fmt(e['mb_per_s'])} | {vs_cap} | {vs_local} |")
    return rows


def remote_markdown(res: dict) -> str:  # noqa: C901 - one table after another
    info, a = res["dataset"], res["args"]
    cap, lat = a["cap"], a["latency"]
    L = ["### Remote streaming (Azurite behind a proxy)", ""]
    if res.get("quick"):
        L += ["**`--quick` smoke test: a tiny dataset and short runs; these numbers are not results.**", ""]
    if res.get("command"):
        L += [f"Command: `{res['command']}`; fastdata sources at commit `{res['source']['commit']}`"
              + (f" with uncommitted changes in {', '.join(res['source']['uncommitted'])}"
                 if res["source"].get("uncommitted") else "") + ".", ""]
    L.append(f"Data: {info['tokens'] / 1e6:,.0f} M random uint16 tokens packed by `fastdata pack` into "
             f"{info['shards']} shards of ~{a['shard_size']} ({info['bytes'] / MB:,.0f} MB), uploaded to "
             f"an in-memory Azurite on loopback ({fmt(res.get('upload_mb_per_s'))} MB/s upload). Clients "
             "reach it through a TCP proxy (`tests/_faultproxy.py`) with one bandwidth cap for the whole "
             "link and a per-direction delay (a request costs at least 2x the latency). fastdata: "
             "`TokenDataset(az://..., seq_len=2048, shuffle=True, cache_dir, cache_limit)` + "
             f"`fastdata.DataLoader(batch_size=8, num_workers=2)` (threads), remote reads with "
             f"{_mode(res)}, a fresh process and a fresh "
             f"node cache per row (cache limit {res['cache_limit'] / MB:,.0f} MB unless stated); epochs "
             "timed from `iter(loader)` to the last batch; MB/s = bytes through the proxy during the epoch "
             "/ epoch time.")
    local = res.get("local", {})
    local_tps = local.get("tokens_per_s")
    L += ["", "| run | epoch | s | M tokens/s | MB down | MB/s | of cap | vs local dir |",
          "|---|---|---:|---:|---:|---:|---:|---:|"]
    if local_tps:
        L.append(f"| local directory (mmap, page cache warm) | best of 2 | "
                 f"{min(e['wall_s'] for e in local['epochs']):.1f} | {fmt(local_tps / 1e6)} | 0 | — | — "
                 "| 1.00x |")
    for key, label, c in (("unshaped", "Azurite, unshaped", None),
                          ("shaped", f"Azurite, {shaping(lat, cap)}", cap)):
        if key in res:
            L += epoch_rows(label, res[key], local_tps, c)
    sc = res.get("small_cache")
    if sc and "error" in sc:
        L += ["", f"**Small cache** failed: {sc['error']}"]
    elif sc and sc.get("epochs"):
        e = sc["epochs"][0]
        share, part = sc["cache_limit"] / info["total_bytes"], e["consumed_bytes"] / info["bytes"]
        L += ["", f"**Small cache** ({shaping(sc['latency_s'], sc['cap_bps'])}, cache limit "
              f"{sc['cache_limit'] / MB:,.0f} MB = {share:.0%} of the dataset, cold, stopped after "
              f"{e['wall_s']:.0f} s): {e['batches']:,} batches ({e['consumed_bytes'] / MB:,.1f} MB of "
              f"tokens, {part:.0%} of an epoch) took {fmt((e['bytes'] or 0) / MB, '.0f')} MB of downloads "
              f"at {fmt(e['mb_per_s'])} MB/s: **{fmt(e['amplification'], '.2f')} bytes downloaded per "
              f"byte of samples** (with a cache that holds the dataset: about 1), "
              f"{fmt(e['tokens_per_s'] / 1e6)} M tokens/s."]
    tt = res.get("ttfb")
    if tt:
        ok = [r for r in tt["runs"] if "error" not in r]
        L += ["", f"**Time to first batch** at {tt['latency_s'] * 1e3:.0f} ms latency (no cap), fresh "
              f"cache and process, {len(ok)} runs: construction (manifest) + first batch "
              + ", ".join(f"{r['construct_and_first_s']:.2f}" for r in ok) + " s (construction "
              + ", ".join(f"{r['construct_s']:.2f}" for r in ok) + " s); from process spawn "
              + ", ".join(f"{r['from_spawn_s']:.2f}" for r in ok) + " s."]
        for r in tt["runs"]:
            if "error" in r:
                L.append(f"A run failed: {r['error']}")
    tn = res.get("two_nodes")
    if tn:
        L += ["", f"**Two nodes** (2 processes, WORLD_SIZE=2, FASTDATA_NODE_ID 0/1, own cache and own "
              f"proxy each, {shaping(tn['latency_s'], tn['cap_bps'])} per node), one epoch:", "",
              "| node | MB downloaded | share of dataset | cache MB | batches | epoch s | MB/s |",
              "|---|---:|---:|---:|---:|---:|---:|"]
        for i, n in enumerate(tn["nodes"]):
            if "error" in n:
                L.append(f"| {i} | failed: {n['error']} | | | | | |")
                continue
            L.append(f"| {i} | {n['bytes'] / MB:,.0f} | {n['bytes'] / info['total_bytes']:.0%} | "
                     f"{n['cache_bytes'] / MB:,.0f} | {n['batches']} | {n['wall_s']:.1f} | "
                     f"{fmt(n['mb_per_s'])} |")
        L.append("Target: about half the dataset per node per epoch.")
    dw = res.get("data_wait")
    if dw:
        if "error" in dw:
            L += ["", f"**Data wait** failed: {dw['error']}"]
        else:
            L += ["", f"**Data wait** ({shaping(dw['latency_s'], dw['cap_bps'])}, cold cache): a simulated "
                  f"training step of {dw['step_s'] * 1e3:.0f} ms consuming {dw['tokens_per_step']:,} tokens "
                  f"(8 x 2049), {dw['steps']} steps. First batch after {dw['first_batch_s']:.2f} s; then "
                  f"{dw['wait_after_first_s'] * 1e3:.0f} ms of waiting in {dw['after_first_s']:.1f} s = "
                  f"**{dw['share']:.2%}** of the time (target < 1 %), longest single wait "
                  f"{dw['max_wait_s'] * 1e3:.1f} ms."]
    L += targets_markdown(res)
    pe = res.get("peers")
    if pe:
        L += ["", "#### Peers, same samples (8 x 2049 batches, 2 workers, shuffled)", ""]
        if "error" in pe:
            L.append(f"Peers not run: {pe['error']}")
        else:
            L += ["| system | source | epoch | s | M tokens/s | MB down | MB/s | of cap "
                  "| vs fastdata (same source) |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|"]
            for label, r in pe["runs"].items():
                if "error" in r:
                    L.append(f"| {label} | failed: {r['error']} | | | | | | | |")
                    continue
                ref = res.get(r.get("compare") or "", {})
                for i, e in enumerate(r["epochs"]):
                    c = r.get("cap_bps")
                    vs_cap = f"{e['mb_per_s'] * MB / c:.0%}" if c and e["bytes"] and i == 0 else "—"
                    ref_e = ref.get("epochs", [])
                    vs = (f"{ref_e[i]['tokens_per_s'] / e['tokens_per_s']:.2f}x"
                          if i < len(ref_e) and e["tokens_per_s"] else "—")
                    kind = "cold" if i == 0 else "warm"
                    L.append(f"| {label} | {r['source']} | {kind} | {e['wall_s']:.1f} | "
                             f"{fmt(e['tokens_per_s'] / 1e6)} | {fmt((e['bytes'] or 0) / MB, '.0f')} | "
                             f"{fmt(e['mb_per_s']) if e['bytes'] else '—'} | {vs_cap} | {vs} |")
            L.append("")
            L.append("\"vs fastdata\" = fastdata's tokens/s in the same epoch of the matching row above "
                     "÷ the peer's (above 1: fastdata faster). " + " ".join(pe.get("notes", [])))
    L.append("")
    return "\n".join(L)


# ---------------------------------------------------------------------------- issue 11's targets

def _ok(flag: bool | None) -> str:
    return "—" if flag is None else ("**met**" if flag else "**missed**")


def _reqs(q: dict | None) -> str:
    return "—" if not q else f"{q['data_gets']:,} / {q['meta_gets']:,} / {q['requests']:,}"


def _fd_requests(e: dict) -> str:
    d = e.get("metrics_delta") or {}
    if "fetch.requests" in d:
        return f"{d['fetch.requests']:,.0f}"
    return f"({d['fetch.shards']:,.0f} shards)" if "fetch.shards" in d else "—"


def sweep_rows(sw: dict, total: int) -> tuple[list[str], list[tuple[str, float | None, bool]]]:
    """The cache-limit sweep's table, and per row (label, wire/consumed, finished)."""
    L = [f"**Cache limit sweep** ({shaping(sw['latency_s'], sw['cap_bps'])}, fresh cache, one cold "
         f"epoch, stopped after {sw['max_s']:.0f} s). Bytes on the wire and requests are counted at the "
         "proxy; \"sample MB\" is 2 bytes x the tokens of the batches consumed. Requests: data GETs (a "
         "shard's payload) / metadata GETs (ranged, inside the metadata section) / all HTTP requests of "
         "the epoch. The accepted minimum is probed: " + f"`{sw['minimum']['message'][:300]}`.", "",
         "| cache limit | MB | of dataset | epoch s | of epoch | wire MB | sample MB | wire / samples "
         "| requests (proxy) | fastdata fetch.requests | vs ample |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    ample = next((r["epochs"][0]["wall_s"] for r in sw["rows"] if r["label"] == "ample" and r.get("epochs")),
                 None)
    out = []
    for r in sw["rows"]:
        head = f"| {r['label']} | {r['cache_limit'] / MB:,.1f} | {r['share']:.0%} |"
        if "refused" in r or "error" in r:
            why = f"refused: below the accepted minimum ({sw['minimum']['minimum'] / MB:,.1f} MB)" \
                if "refused" in r else f"failed: {r['error']}"
            L.append(f"{head} {why} | | | | | | | |")
            out.append((r["label"], None, False))
            continue
        e = r["epochs"][0]
        frac = e["batches"] / e["steps"] if e.get("steps") else None
        done = frac is None or frac >= 0.999
        wall = f"{e['wall_s']:.1f}" if done else f"> {e['wall_s']:.0f} (stopped)"
        vs = f"{e['wall_s'] / ample:.2f}x" if ample and done else ("> " + f"{e['wall_s'] / ample:.1f}x"
                                                                  if ample else "—")
        L.append(f"{head} {wall} | {fmt(frac, '.0%') if frac is not None else '—'} | "
                 f"{fmt((e['bytes'] or 0) / MB, '.1f')} | {e['consumed_bytes'] / MB:,.1f} | "
                 f"{fmt(e['amplification'], '.2f')}x | {_reqs(e.get('requests'))} | {_fd_requests(e)} | "
                 f"{vs} |")
        out.append((r["label"], e["amplification"], done))
    return L, out


def link_rows(lk: dict) -> list[str]:
    L = ["**Cold epoch against the link** (fresh cache, limit above the dataset; 2 ranks = two processes "
         "of one node sharing one cache dir and one proxy; MB/s = bytes through the proxy from the first "
         "rank's epoch start to the last rank's epoch end / that time):", "",
         "| link | ranks | epoch s | wire MB | MB/s | of link | requests (proxy) | target ≥ 90 % |",
         "|---|---:|---:|---:|---:|---:|---|---|"]
    for r in lk["rows"]:
        link = shaping(r["latency_s"], r["cap_bps"])
        if "error" in r:
            L.append(f"| {link} | {r['ranks']} | failed: {r['error']} | | | | | |")
            continue
        share = r["mb_per_s"] * MB / r["cap_bps"]
        L.append(f"| {link} | {r['ranks']} | {r['wall_s']:.1f} | {(r['bytes'] or 0) / MB:,.0f} | "
                 f"{r['mb_per_s']:.1f} | {share:.0%} | {_reqs(r.get('requests'))} | {_ok(share >= 0.9)} |")
    return L


def targets_markdown(res: dict) -> list[str]:  # noqa: C901 - one target after another
    info = res["dataset"]
    L, T = [], []  # T: (target, measured, status)
    sw = res.get("sweep")
    if sw and "error" not in sw:
        rows, per = sweep_rows(sw, info["total_bytes"])
        L += ["", *rows]
        amp = [a for _, a, _ in per if a is not None]
        worst = max(amp, default=None)
        T.append(("bytes on the wire ≤ 1.1x the sample bytes, every limit from the minimum up",
                  ", ".join(f"{lbl}: {fmt(a, '.2f') + 'x' if a is not None else 'refused/failed'}"
                            for lbl, a, _ in per), _ok(bool(per) and all(a is not None for _, a, _ in per)
                                                       and worst is not None and worst <= 1.1)))
        ample = next((r["epochs"][0]["wall_s"] for r in sw["rows"] if r["label"] == "ample"
                      and r.get("epochs")), None)
        mid = [r for r in sw["rows"] if r["label"] in ("15%", "35%")]
        if mid and ample:
            txt, good = [], True
            for r in mid:
                if not r.get("epochs"):
                    txt.append(f"{r['label']}: refused/failed")
                    good = False
                    continue
                e = r["epochs"][0]
                done = not e.get("steps") or e["batches"] >= e["steps"]
                txt.append(f"{r['label']}: {'' if done else '> '}{e['wall_s'] / ample:.2f}x "
                           f"({e['wall_s']:.1f} s, {_reqs(e.get('requests'))} requests)")
                good = good and done and e["wall_s"] <= 2 * ample
            T.append((f"epoch at 15–35 % cache ≤ 2x the ample cold epoch ({ample:.1f} s)", "; ".join(txt),
                      _ok(good)))
    elif sw:
        L += ["", f"**Cache limit sweep** failed: {sw['error']}"]
    lk = res.get("link")
    if lk:
        L += ["", *link_rows(lk)]
        for r in lk["rows"]:
            if "error" not in r:
                share = r["mb_per_s"] * MB / r["cap_bps"]
                link = shaping(r["latency_s"], r["cap_bps"])
                T.append((f"cold epoch ≥ 90 % of {link}, {r['ranks']} rank(s)",
                          f"{share:.0%} ({r['mb_per_s']:.1f} MB/s)", _ok(share >= 0.9)))
    tn = res.get("two_nodes")
    if tn and all("error" not in n for n in tn["nodes"]):
        shares = [n["bytes"] / info["total_bytes"] for n in tn["nodes"]]
        T.append(("two fake nodes each fetch only their own share (≤ 55 % of the dataset each)",
                  " / ".join(f"{s:.0%}" for s in shares), _ok(max(shares) <= 0.55)))
    tt = res.get("ttfb")
    ok = [r for r in (tt or {}).get("runs", []) if "error" not in r]
    if ok:
        r = min(ok, key=lambda r: r["construct_and_first_s"])
        rate = res["args"]["cap"]  # the shaped link's rate: a bound that does not depend on fastdata's speed
        allow = min(r["first_bytes"], 2 * 8 * (info.get("block_size") or 0))
        bound = 1 + allow / rate
        T.append((f"first batch from a cold cache at {tt['latency_s'] * 1e3:.0f} ms < 1 s + the first "
                  "step's transfer",
                  f"construction {r['construct_s']:.2f} s + first batch {r['first_batch_s']:.2f} s = "
                  f"{r['construct_and_first_s']:.2f} s; {r['first_bytes'] / MB:,.1f} MB on the wire "
                  "before it "
                  f"(bound {bound:.2f} s: 1 s + up to 2 blocks per sample at {rate / MB:.0f} MB/s)",
                  _ok(r["construct_and_first_s"] < bound)))
    lt = (res.get("local") or {}).get("tokens_per_s")
    sh, rr = res.get("shaped") or {}, res.get("rerun") or {}
    if lt and len(sh.get("epochs") or []) > 1:
        v = sh["epochs"][1]["tokens_per_s"] / lt
        T.append(("warm epoch (ample cache, same process) ≥ 0.95x the local directory", f"{v:.2f}x",
                  _ok(v >= 0.95)))
    if rr.get("epochs"):
        e, pq = rr["epochs"][0], rr.get("process_requests") or {}
        v = e["tokens_per_s"] / lt if lt else None
        L += ["", f"**Warm re-run** (a new process on the shaped run's warm cache, one epoch): "
              f"{e['wall_s']:.1f} s, {fmt(v, '.2f')}x the local directory; requests through the proxy "
              f"over the whole process (construction included): {_reqs(pq)} (data / metadata / all); "
              f"{(e['bytes'] or 0) / MB:,.1f} MB during the epoch."]
        T.append(("warm re-run (new process, warm cache) makes 0 data GETs",
                  f"{pq.get('data_gets')} data GETs, {pq.get('meta_gets')} metadata GETs, "
                  f"{pq.get('requests')} requests in all (its epoch: {fmt(v, '.2f')}x the local directory)",
                  _ok(pq.get("data_gets") == 0)))
    pe = res.get("peers")
    T.append(("peers side by side (LitData, MosaicML)", "run" if pe and "error" not in pe
              else f"not run: {(pe or {}).get('error', 'phase not selected')}", "—"))
    L += ["", "#### Targets (issue 11)", "", "| target | measured | status |", "|---|---|---|"]
    L += [f"| {t} | {m} | {s} |" for t, m, s in T]
    return L
