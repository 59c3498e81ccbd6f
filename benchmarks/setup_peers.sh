#!/usr/bin/env bash
# Create benchmarks/.venv-peers: a separate virtual environment holding the peer systems the
# benchmarks compare fastdata against: megatron-core (IndexedDatasetBuilder / IndexedDataset),
# mosaicml-streaming (MDS shards, StreamingDataset), litdata (optimize + TokensLoader) and
# webdataset (tar shards). fastdata itself is NOT installed here, so the two never share
# packages.
#
# torch is installed first and pinned exactly (torch==2.13.0, the CPU wheel): a bare `torch`
# or an open range pulls a multi-GB CUDA build. Everything after it is installed with a
# constraints file that holds torch at that version.
#
# mosaicml-streaming imports torchvision at start-up, and PyPI's torchvision is a CUDA build
# that fails to import beside the CPU torch ("operator torchvision::nms does not exist"): the
# venv gets peers/torchvision_stub instead, an import-only stand-in (no benchmark here touches
# images).
#
# Idempotent: if the venv exists and already imports everything, nothing is installed; if it
# has the right torch but misses a peer, only the peers are (re)installed. Pass --force to
# rebuild from scratch.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${PEERS_VENV:-$HERE/.venv-peers}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"
# The peer versions RESULTS.md was measured with; pinned so reruns compare like with like.
STREAMING_VERSION="0.13.0"
LITDATA_VERSION="0.2.76"
WEBDATASET_VERSION="1.0.2"
CONSTRAINTS="$VENV/constraints.txt"

if [[ "${1:-}" == "--force" ]]; then
  rm -rf "$VENV"
fi

check() {
  PYTHONWARNINGS=ignore "$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
import numpy, tokenizers, torch  # noqa: F401
from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder  # noqa: F401
import streaming, webdataset  # noqa: F401  (streaming imports torchvision)
from litdata import StreamingDataLoader, StreamingDataset, optimize  # noqa: F401
from litdata.streaming.item_loader import TokensLoader  # noqa: F401
for pkg in ("torch", "megatron-core", "tokenizers", "numpy", "mosaicml-streaming", "litdata",
            "webdataset", "torchvision"):
    print(f"  {pkg:18s} {md.version(pkg)}")
EOF
}

has_torch() {
  "$VENV/bin/python" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" \
    >/dev/null 2>&1
}

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

install_peers() {
  echo "torch==$TORCH_VERSION" >"$CONSTRAINTS"
  echo "installing megatron-core, tokenizers, numpy, mosaicml-streaming==$STREAMING_VERSION,"
  echo "  litdata==$LITDATA_VERSION, webdataset==$WEBDATASET_VERSION (torch held at $TORCH_VERSION)"
  "${PIP[@]}" install -q -c "$CONSTRAINTS" megatron-core tokenizers numpy \
    "mosaicml-streaming==$STREAMING_VERSION" "litdata==$LITDATA_VERSION" \
    "webdataset==$WEBDATASET_VERSION"
  echo "replacing torchvision with the import-only stub (peers/torchvision_stub)"
  "${PIP[@]}" uninstall -q -y torchvision >/dev/null 2>&1 || true
  local tmp
  tmp="$(mktemp -d)"
  cp -r "$HERE/peers/torchvision_stub/." "$tmp/"  # build outside the tree: no build/ left here
  "${PIP[@]}" install -q --no-deps "$tmp"
  rm -rf "$tmp"
}

if [[ -x "$VENV/bin/python" ]] && check >/dev/null 2>&1; then
  echo "peers venv already set up at $VENV:"
  check
  exit 0
fi

if [[ -x "$VENV/bin/python" ]] && has_torch; then
  echo "peers venv at $VENV has torch $TORCH_VERSION but misses a peer: installing peers"
  install_peers
  echo "peers venv ready at $VENV:"
  check
  exit 0
fi

echo "creating peers venv at $VENV"
"$PYTHON" -m venv "$VENV"
"${PIP[@]}" install -q --upgrade pip

echo "installing torch==$TORCH_VERSION (CPU wheel)"
"${PIP[@]}" install -q "torch==$TORCH_VERSION"

install_peers
echo "peers venv ready at $VENV:"
check
