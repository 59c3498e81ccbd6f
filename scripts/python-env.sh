# Sourced by demo.sh and test.sh from the clone's root: pick the Python to install into and
# run with. An active virtual environment ($VIRTUAL_ENV) is used as it is; otherwise the
# clone's own .venv, created on first use and reused after, never the system interpreter.
if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
  PY="$VIRTUAL_ENV/bin/python"
else
  if [ ! -x .venv/bin/python ]; then
    echo "creating a virtual environment in $PWD/.venv (activate one first to use another)" >&2
    python3 -m venv .venv || {
      echo "python3 -m venv failed: install Python's venv module (Debian/Ubuntu: apt-get install python3-venv)" >&2
      exit 1
    }
  fi
  PY="$PWD/.venv/bin/python"
  export VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH"  # the fastdata command, for subprocesses
fi
echo "python: $PY" >&2
# torch: the CPU build (a bare `torch` would pull a multi-GB CUDA one); an installed torch is left alone.
"$PY" -c 'import torch' 2>/dev/null || "$PY" -m pip install -q torch==2.13.0
