#!/usr/bin/env bash
# Set up a fresh clone and run the whole test suite (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/python-env.sh
# The native reader is built with compiler warnings as errors here (CMake FASTDATA_WERROR).
"$PY" -m pip install -q -e '.[test]' -C cmake.define.FASTDATA_WERROR=ON
# DeepSpeed (for examples/deepspeed_train.py) is an sdist: build none of its kernels, after torch.
"$PY" -c 'import deepspeed' 2>/dev/null || DS_BUILD_OPS=0 "$PY" -m pip install -q --no-build-isolation deepspeed
# Azurite (the Azure Storage emulator, from npm) for the blob tests, which start and stop it.
bash scripts/azurite.sh install
# Lint and types first: ruff over the whole tree, mypy over the package (pyproject.toml).
"$PY" -m ruff check .
"$PY" -m mypy
# -P keeps the source tree off sys.path so the installed package (with its compiled
# extension) is the one tested.
exec "$PY" -P -m pytest "$@"
