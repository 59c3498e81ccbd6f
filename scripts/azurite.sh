#!/usr/bin/env bash
# Azurite (the Azure Storage emulator, from npm) for the test suite, on 127.0.0.1 only.
#
#   scripts/azurite.sh install          install azurite into $FASTDATA_AZURITE_PREFIX if missing
#   scripts/azurite.sh start DIR        start the Blob service on a free port, in-memory;
#                                       prints its PID; writes DIR/azurite.{pid,port,log}
#   scripts/azurite.sh stop DIR         SIGTERM the instance recorded in DIR (only if it is ours)
#
# Exit codes: 0 ok, 1 usage or missing node/npm, 2 install failed, 3 died at start, 4 timeout.
set -euo pipefail

PREFIX=${FASTDATA_AZURITE_PREFIX:-$HOME/.cache/fastdata/azurite}
VERSION=${FASTDATA_AZURITE_VERSION:-3.35.0}
TIMEOUT=${FASTDATA_AZURITE_TIMEOUT:-60}
MAIN="$PREFIX/node_modules/azurite/dist/src/blob/main.js"

say() { echo "azurite.sh: $*" >&2; }
fail() { local code=$1; shift; say "error: $*"; exit "$code"; }

install() {
  [ -f "$MAIN" ] && return 0
  command -v npm >/dev/null || fail 1 "npm not found (Azurite needs Node.js >= 18)"
  mkdir -p "$PREFIX"
  # npm refuses --prefix into a directory without a package.json
  [ -f "$PREFIX/package.json" ] || echo '{"name":"fastdata-azurite","private":true}' > "$PREFIX/package.json"
  for attempt in 1 2 3; do
    say "installing azurite@$VERSION into $PREFIX (attempt $attempt)"
    npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "azurite@$VERSION" >&2 && break
    sleep $((attempt * 5))
  done
  [ -f "$MAIN" ] || fail 2 "could not install azurite@$VERSION"
}

start() {
  local dir=$1
  install
  command -v node >/dev/null || fail 1 "node not found"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  ( cd "$dir" && exec node "$MAIN" --blobHost 127.0.0.1 --blobPort "$port" --inMemoryPersistence \
      --extentMemoryLimit 1024 --skipApiVersionCheck --loose --disableTelemetry --silent \
      >"$dir/azurite.log" 2>&1 </dev/null ) &
  local pid=$!
  echo "$pid" > "$dir/azurite.pid"
  echo "$port" > "$dir/azurite.port"
  local waited=0
  # ready when it answers HTTP at all (an unauthenticated list gets 403)
  until python3 - "$port" <<'PY' 2>/dev/null
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/devstoreaccount1?comp=list", timeout=2)
except urllib.error.HTTPError:
    pass
PY
  do
    kill -0 "$pid" 2>/dev/null || { cat "$dir/azurite.log" >&2; fail 3 "azurite exited at start"; }
    [ "$waited" -lt $((TIMEOUT * 10)) ] || { kill "$pid"; fail 4 "azurite not ready after ${TIMEOUT}s"; }
    sleep 0.1; waited=$((waited + 1))
  done
  echo "$pid"
}

stop() {
  local pidfile=$1/azurite.pid
  [ -f "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q 'blob/main.js'; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

case "${1:-}" in
  install) install ;;
  start) [ $# -eq 2 ] || fail 1 "usage: $0 start DIR"; start "$2" ;;
  stop) [ $# -eq 2 ] || fail 1 "usage: $0 stop DIR"; stop "$2" ;;
  *) fail 1 "usage: $0 install | start DIR | stop DIR" ;;
esac
