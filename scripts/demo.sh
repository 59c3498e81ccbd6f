#!/usr/bin/env bash
# Set up a fresh clone and run the main job end to end on the bundled corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import torch' 2>/dev/null || python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e .
exec python3 -P examples/quickstart.py "$@"
