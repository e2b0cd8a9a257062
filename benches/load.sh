#!/usr/bin/env bash
# Load comparison on this machine: Frontdesk vs NGINX, HAProxy and a bare
# Pingora proxy (the quick-start shape, our speed floor), each a plain reverse
# proxy with upstream keepalive and one worker, driven in turn by wrk through
# the shared rig (../shared/bench/compare.sh). Prints req/s, p99, proxy CPU
# µs/request and the ratios; the last lines are the geometric means.
#
#   benches/load.sh [plain|policies] [compare.sh options, e.g. --reps 3 --scenarios small]
#
# Needs (Debian 12): apt-get install nginx-light haproxy wrk curl procps util-linux python3
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RIG=${RIG:-$ROOT/../shared/bench}
PROFILE=plain
if [[ ${1:-} == plain || ${1:-} == policies ]]; then PROFILE=$1; shift; fi
[[ -x $RIG/compare.sh ]] || { echo "load rig not found at $RIG (set RIG=...)" >&2; exit 2; }

cd "$ROOT"
BARE_DIR=$ROOT/target/bare-pingora
# SKIP_BUILD=1 measures the binaries already built (FRONTDESK_BIN, BARE_PINGORA).
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    cargo build --release
    CARGO_TARGET_DIR=$BARE_DIR cargo build --release --manifest-path "$RIG/bare-pingora/Cargo.toml"
fi
BARE=${BARE_PINGORA:-$BARE_DIR/release/bare-pingora}

echo "# frontdesk profile: $PROFILE ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown))"
exec "$RIG/compare.sh" \
    --peer "$BARE --listen 127.0.0.1:{port} --upstream {upstream} --threads 1" \
    "$@" -- "$ROOT/benches/run-frontdesk.sh $PROFILE"
