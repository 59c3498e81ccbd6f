#!/usr/bin/env bash
# Set up a fresh clone and run the main job end to end on the bundled corpus: pack, publish,
# train through the node cache, checkpoint, resume exactly in a new process, measure.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/python-env.sh
# The native reader, matplotlib for the `fastdata bench` plot (the `bench` extra), and
# aiohttp: fsspec's http(s) filesystem, for the demo's "remote" (a loopback HTTP server).
"$PY" -m pip install -q -e '.[bench]' aiohttp
exec "$PY" -P examples/quickstart.py "$@"
