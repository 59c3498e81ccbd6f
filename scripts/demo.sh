#!/usr/bin/env bash
# Set up a fresh clone and run the main job end to end on the bundled corpus: pack, publish,
# train through the node cache, checkpoint, resume exactly in a new process, measure.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/python-env.sh
# The native reader, and matplotlib for the `fastdata bench` plot (the `bench` extra).
"$PY" -m pip install -q -e '.[bench]'
exec "$PY" -P examples/quickstart.py "$@"
