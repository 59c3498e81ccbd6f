#!/usr/bin/env bash
# Create benchmarks/.venv-peers: a separate virtual environment holding the peer systems the
# benchmarks compare fastdata against (today: megatron-core's IndexedDatasetBuilder /
# IndexedDataset). fastdata itself is NOT installed here, so the two never share packages.
#
# torch is installed first and pinned exactly (torch==2.13.0, the CPU wheel): a bare `torch`
# or an open range pulls a multi-GB CUDA build. Everything after it is installed with a
# constraints file that holds torch at that version.
#
# Idempotent: if the venv exists and already imports torch, megatron.core, tokenizers and
# numpy, nothing is installed. Pass --force to rebuild from scratch.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${PEERS_VENV:-$HERE/.venv-peers}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"

if [[ "${1:-}" == "--force" ]]; then
  rm -rf "$VENV"
fi

check() {
  PYTHONWARNINGS=ignore "$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
import numpy, tokenizers, torch  # noqa: F401
from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder  # noqa: F401
for pkg in ("torch", "megatron-core", "tokenizers", "numpy"):
    print(f"  {pkg:14s} {md.version(pkg)}")
EOF
}

if [[ -x "$VENV/bin/python" ]] && check >/dev/null 2>&1; then
  echo "peers venv already set up at $VENV:"
  check
  exit 0
fi

echo "creating peers venv at $VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip

echo "installing torch==$TORCH_VERSION (CPU wheel)"
"${PIP[@]}" install -q "torch==$TORCH_VERSION"

CONSTRAINTS="$VENV/constraints.txt"
echo "torch==$TORCH_VERSION" >"$CONSTRAINTS"

echo "installing megatron-core, tokenizers, numpy (torch held at $TORCH_VERSION)"
"${PIP[@]}" install -q -c "$CONSTRAINTS" megatron-core tokenizers numpy

echo "peers venv ready at $VENV:"
check
