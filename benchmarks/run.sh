#!/usr/bin/env bash
# Run the fastdata benchmark suite end to end:
#   1. set up benchmarks/.venv-peers (megatron-core, mosaicml-streaming, litdata, webdataset
#      beside torch 2.13) if it is missing;
#   2. generate the synthetic corpus and train the BPE tokenizer in benchmarks/.work/;
#   3. bench_pack.py: fastdata pack vs the Megatron-Core preprocessing path;
#   4. bench_reader.py: native gather vs numpy.memmap (vs Megatron IndexedDataset);
#   5. bench_loader.py: the training loader vs numpy.memmap, Megatron-Core, MosaicML
#      Streaming, LitData and WebDataset (in-process reads, DataLoader path, first batch,
#      a synthetic 10^9-sample dataset);
#   6. bench_remote.py: streaming from Azurite behind a shaping proxy (cold/warm epochs,
#      small cache, first batch at 50 ms, 2 nodes, data wait), LitData and MosaicML beside it;
#   7. append the machine, commit and tables to benchmarks/RESULTS.md; charts.py draws
#      benchmarks/charts/*.png when matplotlib is importable.
#
# Usage: benchmarks/run.sh [--quick] [--no-megatron|--no-peers] [--no-loader] [--loader-only]
#                          [--no-remote] [--remote-only] [--record] [--docs N] [--repeat N]
#                          [--loader-repeat N]
#   --quick        tiny corpus (300 docs), one repeat, few batches, a 2x10^4-shard synthetic
#                  dataset: a smoke test for CI. Results go to benchmarks/.work/quick/RESULTS.md
#                  unless --record.
#   --no-megatron  skip the peers venv and every peer run (--no-peers is the same).
#   --no-loader    skip bench_loader.py.
#   --loader-only  skip the pack and reader benchmarks (the corpus is still made if missing).
#   --no-remote    skip bench_remote.py (needs Node.js for Azurite).
#   --remote-only  just bench_remote.py (no corpus, pack, reader or loader benchmark).
#   --record       also append a --quick run to benchmarks/RESULTS.md.
#   --docs N       corpus size (default 20000, about 42 MB).
#   --repeat N     pack runs per config, best kept (default 1).
#   --loader-repeat N  DataLoader-path runs per system (default 2).
#
# fastdata must already be installed in the current python (pip install -e .); the
# command used is $FASTDATA (default: fastdata).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"

QUICK=0 MEGATRON=1 RECORD=0 DOCS=20000 REPEAT=1 LOADER=1 PACK_READER=1 LOADER_REPEAT=2 REMOTE=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --no-megatron|--no-peers) MEGATRON=0 ;;
    --no-loader) LOADER=0 ;;
    --loader-only) PACK_READER=0 LOADER=1 REMOTE=0 ;;
    --no-remote) REMOTE=0 ;;
    --remote-only) PACK_READER=0 LOADER=0 REMOTE=1 ;;
    --record) RECORD=1 ;;
    --docs) DOCS="$2"; shift ;;
    --repeat) REPEAT="$2"; shift ;;
    --loader-repeat) LOADER_REPEAT="$2"; shift ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

PY="${PYTHON:-python3}"
FASTDATA="${FASTDATA:-fastdata}"
PEERS_PY="$HERE/.venv-peers/bin/python"
WORK="$HERE/.work"
RESULTS="$HERE/RESULTS.md"
READER_BATCHES=2000 READER_ROUNDS=5 TITLE="full"
LOADER_ARGS=(--repeat "$LOADER_REPEAT")
# 128 MB (8 shards of 16 MB) keeps the remote step near 8 minutes at the node-cache speed
# fastdata had when this was written; bench_remote.py alone defaults to 256 MB
REMOTE_ARGS=(--tokens 6.4e7)
CHARTS="$HERE/charts"
if [[ $QUICK == 1 ]]; then
  WORK="$HERE/.work/quick"
  DOCS=300 REPEAT=1 READER_BATCHES=50 READER_ROUNDS=2 TITLE="quick (smoke test)"
  LOADER_ARGS=(--repeat 1 --inproc-batches 20 --inproc-rounds 1 --loader-batches 30
               --first-runs 1 --synthetic-shards 20000 --synthetic-samples 20000000
               --synthetic-runs 1)
  REMOTE_ARGS=(--quick --wait-steps 20)
  [[ $RECORD == 1 ]] || { RESULTS="$WORK/RESULTS.md"; CHARTS="$WORK/charts"; }
fi
if [[ $PACK_READER == 0 && $LOADER == 0 ]]; then TITLE="$TITLE, remote benchmark only"
elif [[ $PACK_READER == 0 ]]; then TITLE="$TITLE, loader benchmark only"
elif [[ $REMOTE == 0 ]]; then TITLE="$TITLE, no remote benchmark"
fi
mkdir -p "$WORK"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)"

# -- 1. peers venv ---------------------------------------------------------------------
MEG_ARGS=()
if [[ $MEGATRON == 1 ]]; then
  "$HERE/setup_peers.sh" 2>&1 | grep -v "^WARNING: Location" || {
    echo "peers venv setup failed; rerun with --no-peers to skip every peer" >&2; exit 1; }
  MEG_ARGS=(--peers-python "$PEERS_PY")
else
  MEG_ARGS=(--no-megatron)
fi

# -- 2. fastdata present? -----------------------------------------------------------------
if ! $FASTDATA pack --help >/dev/null 2>&1; then
  echo "'$FASTDATA pack --help' fails: install fastdata first (pip install -e .)" >&2
  $FASTDATA pack --help 2>&1 | tail -5 >&2 || true
  exit 1
fi

# -- 3. corpus + tokenizer ------------------------------------------------------------------
if [[ $PACK_READER == 1 || $LOADER == 1 ]]; then
  "$PY" "$HERE/corpus.py" --out "$WORK/corpus.jsonl" --docs "$DOCS" \
    --tokenizer-out "$WORK/tokenizer.json" >/dev/null
fi

SECTIONS=()
if [[ $PACK_READER == 1 ]]; then
  # -- 4. pack --------------------------------------------------------------------------------
  "$PY" "$HERE/bench_pack.py" --corpus "$WORK/corpus.jsonl" --tokenizer-json "$WORK/tokenizer.json" \
    --work-dir "$WORK/pack" --repeat "$REPEAT" --fastdata "$FASTDATA" "${MEG_ARGS[@]}" \
    --json-out "$WORK/pack.json" --md-out "$WORK/pack.md"

  # -- 5. reader, on the bytes and the BPE datasets bench_pack wrote ----------------------------
  SECTIONS+=("$WORK/pack.md")
  for tok in bytes bpe-8k; do
    ds="$WORK/pack/fastdata-$tok-w2"
    [[ -f "$ds/manifest.json" ]] || ds="$WORK/pack/fastdata-$tok-w1"
    reader_meg=()
    meg="$WORK/pack/megatron-$tok-w2/data_text_document"
    if [[ $MEGATRON == 1 && -f "$meg.idx" ]]; then
      reader_meg=(--megatron-prefix "$meg" --peers-python "$PEERS_PY")
    fi
    "$PY" "$HERE/bench_reader.py" --dataset "$ds" --batches "$READER_BATCHES" \
      --rounds "$READER_ROUNDS" "${reader_meg[@]}" \
      --json-out "$WORK/reader-$tok.json" --md-out "$WORK/reader-$tok.md"
    SECTIONS+=("$WORK/reader-$tok.md")
  done
fi

# -- 6. training loader vs the peers ----------------------------------------------------------
if [[ $LOADER == 1 ]]; then
  peers_args=(--peers-python "$PEERS_PY")
  [[ $MEGATRON == 1 ]] || peers_args=(--no-peers)
  "$PY" "$HERE/bench_loader.py" --corpus "$WORK/corpus.jsonl" --work-dir "$WORK/loader" \
    --fastdata "$FASTDATA" "${peers_args[@]}" "${LOADER_ARGS[@]}" \
    --json-out "$WORK/loader.json" --md-out "$WORK/loader.md"
  SECTIONS+=("$WORK/loader.md")
fi

# -- 7. streaming from Azurite behind a proxy ---------------------------------------------------
if [[ $REMOTE == 1 ]]; then
  remote_peers=(--peers-python "$PEERS_PY")
  [[ $MEGATRON == 1 ]] || remote_peers=(--no-peers)
  "$PY" "$HERE/bench_remote.py" --work-dir "$WORK/remote" --fastdata "$FASTDATA" "${remote_peers[@]}" \
    "${REMOTE_ARGS[@]}" --json-out "$WORK/remote.json" --md-out "$WORK/remote.md"
  SECTIONS+=("$WORK/remote.md")
fi

# -- 8. record --------------------------------------------------------------------------------
VERSIONS="fastdata $("$PY" -c 'import importlib.metadata as m; print(m.version("fastdata"))' 2>/dev/null || echo '?')"
VERSIONS+=", numpy $("$PY" -c 'import numpy; print(numpy.__version__)')"
VERSIONS+=", tokenizers $("$PY" -c 'import tokenizers; print(tokenizers.__version__)')"
if [[ $MEGATRON == 1 ]]; then
  VERSIONS+=", megatron-core $("$PEERS_PY" -c 'import importlib.metadata as m; print(m.version("megatron-core"))')"
  VERSIONS+=", mosaicml-streaming $("$PEERS_PY" -c 'import importlib.metadata as m; print(m.version("mosaicml-streaming"))')"
  VERSIONS+=", litdata $("$PEERS_PY" -c 'import importlib.metadata as m; print(m.version("litdata"))')"
  VERSIONS+=", webdataset $("$PEERS_PY" -c 'import importlib.metadata as m; print(m.version("webdataset"))')"
  VERSIONS+=" (peers venv: torch $("$PEERS_PY" -c 'import importlib.metadata as m; print(m.version("torch"))')"
  VERSIONS+=", numpy $("$PEERS_PY" -c 'import numpy; print(numpy.__version__)'))"
fi
VERSIONS+="; torch $("$PY" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || echo '?') beside fastdata"
"$PY" "$HERE/report.py" --results "$RESULTS" --title "$TITLE" --load-before "$LOAD_BEFORE" \
  --versions "$VERSIONS" "${SECTIONS[@]}"

# -- 9. charts (PNG) from this run's JSON ---------------------------------------------------------
if "$PY" -c "import matplotlib" 2>/dev/null; then
  NOTE="$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), "
  NOTE+="$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
  charts_in="$WORK"
  [[ $QUICK == 1 ]] || charts_in="$(mktemp -d)"
  if [[ $QUICK == 0 ]]; then  # only this run's JSON: a stale file from an earlier run is not drawn
    [[ $PACK_READER == 1 ]] && cp "$WORK/pack.json" "$charts_in/"
    [[ $LOADER == 1 ]] && cp "$WORK/loader.json" "$charts_in/"
    [[ $REMOTE == 1 ]] && cp "$WORK/remote.json" "$charts_in/"
  fi
  "$PY" "$HERE/charts.py" --work-dir "$charts_in" --out "$CHARTS" --note "$NOTE"
  [[ $QUICK == 1 ]] || rm -rf "$charts_in"
else
  echo "matplotlib not importable: no charts (pip install -e '.[bench]')" >&2
fi
