#!/usr/bin/env bash
# What one policy costs under load: Frontdesk with a policy on ("test") vs
# the same binary with routing only ("plain") and the bare Pingora proxy
# ("bare"), interleaved in one run of the shared rig (../shared/bench/lib.sh:
# same pinning, noise guards, CPU accounting and summary as compare.sh).
# Every request carries the same header, so the routing-only gateway sees
# exactly the same bytes.
#
#   benches/policy-load.sh jwt|ratelimit|waf [--reps N] [--scenarios small,16k,close,varied] [--duration S]
#
#   jwt        routing + JWT (HS256) on one repeated token: the verified-token
#              cache path a returning client takes
#   ratelimit  routing + a per-IP rate limit that admits everything (what
#              checking a limit costs; target >= 0.95 of routing only)
#   waf        routing + the WAF with the shipped rules (rules/*.toml) on a
#              clean GET with a browser-like User-Agent (target >= 0.9)
#
# The last lines are the rig's ratios: ratio_vs_plain (>= 0.9 is the target
# for jwt) and ratio_vs_bare. Needs what benches/load.sh needs.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RIG=${RIG:-$ROOT/../shared/bench}
[[ -f $RIG/lib.sh ]] || { echo "load rig not found at $RIG (set RIG=...)" >&2; exit 2; }
POLICY=${1:?usage: policy-load.sh jwt|ratelimit|waf [--reps N] [--scenarios LIST]}
shift
: "${REPS:=3}" "${SCENARIOS:=small}"
# shellcheck source=benches/rig-options.sh
source "$ROOT/benches/rig-options.sh"
rig_options "$@"
export REPS SCENARIOS

cd "$ROOT"
BARE_DIR=$ROOT/target/bare-pingora
# SKIP_BUILD=1 measures the binaries already built (FRONTDESK_BIN, BARE_PINGORA).
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    cargo build --release
    CARGO_TARGET_DIR=$BARE_DIR cargo build --release --manifest-path "$RIG/bare-pingora/Cargo.toml"
fi
BARE=${BARE_PINGORA:-$BARE_DIR/release/bare-pingora}

case $POLICY in
    jwt)
        export FRONTDESK_BENCH_SECRET=bench-secret-bench-secret-bench-secret
        b64() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
        head=$(printf '{"alg":"HS256","typ":"JWT"}' | b64)
        body=$(printf '{"sub":"bench-user","roles":["staff"],"exp":%d}' $(($(date +%s) + 86400)) | b64)
        sig=$(printf '%s.%s' "$head" "$body" | openssl dgst -sha256 -hmac "$FRONTDESK_BENCH_SECRET" -binary | b64)
        BENCH_HEADER="Authorization: Bearer $head.$body.$sig"
        ;;
    ratelimit) BENCH_HEADER="X-Bench: ratelimit" ;;
    waf) BENCH_HEADER="User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0" ;;
    *) echo "unknown policy $POLICY (jwt, ratelimit, waf)" >&2; exit 2 ;;
esac

# shellcheck source=/dev/null
source "$RIG/lib.sh"
# Every request the rig sends (start-up probe, sanity check, load) carries the header.
curl() { command curl -H "$BENCH_HEADER" "$@"; }
# One scenario of our own besides the rig's: `varied`, GET / with a
# query that is new on every request (benches/conf/varied-query.lua), so a
# policy that remembers earlier requests gets no help from repetition.
wrk_once() {
    local port=$1 sc=$2 secs=$3 out=$4 path extra=()
    if [[ $sc == varied ]]; then
        path=/
        extra=(-s "$ROOT/benches/conf/varied-query.lua")
    else
        path=$(scenario_path "$sc")
    fi
    [[ $sc == close ]] && extra=(-H "Connection: close")
    pin "$LOAD_CPU" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${secs}s" --latency "${extra[@]}" \
        -H "$BENCH_HEADER" "http://127.0.0.1:$port$path" >"$out" 2>&1 || true
}
finish() { rig_cleanup; rm -rf "$RUN"; }
trap finish EXIT
trap 'exit 130' INT TERM

start_origin "$ORIGIN_PORT" "$LOAD_CPU"
start_cmd test 18094 "$ROOT/benches/run-frontdesk.sh $POLICY"
start_cmd plain 18095 "$ROOT/benches/run-frontdesk.sh plain"
start_cmd bare 18096 "$BARE --listen 127.0.0.1:{port} --upstream {upstream} --threads 1"
print_env
echo "# frontdesk $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown): test = $POLICY profile, plain = routing only, bare = bare Pingora"
run_matrix
write_rss
python3 "$PERF_DIR/summarize.py" "$RESULTS" --rss "$RUN/rss.tsv" --test test --vs plain=plain --vs bare=bare
