#!/usr/bin/env bash
# Set up a fresh clone and run the whole test suite (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
# torch: the CPU build on this machine's disk; an installed torch is left alone.
python3 -c 'import torch' 2>/dev/null || python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e '.[test]'
# DeepSpeed (for examples/deepspeed_train.py) is an sdist: build none of its kernels, after torch.
python3 -c 'import deepspeed' 2>/dev/null || DS_BUILD_OPS=0 python3 -m pip install -q --no-build-isolation deepspeed
# Azurite (the Azure Storage emulator, from npm) for the blob tests, which start and stop it.
bash scripts/azurite.sh install
# -P keeps the source tree off sys.path so the installed package (with its compiled
# extension) is the one tested.
exec python3 -P -m pytest "$@"
