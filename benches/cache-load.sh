#!/usr/bin/env bash
# Cache-hit comparison on this machine: Frontdesk answering from its cache vs
# NGINX proxy_cache and Varnish answering the same hit, and vs Frontdesk's own
# proxied (miss) path, on the shared load rig (../shared/bench/lib.sh):
# wrk + the origin on CPU 0, each proxy on CPU 1, one worker each (Varnish:
# one thread pool), interleaved A B C D A B C D. Every target is warmed with a
# request before measuring, so each measured request is a hit (or, for
# frontdesk-miss, a proxied request). Prints req/s, p99, proxy CPU µs/request
# and, last, the ratios of frontdesk-hit to each of the others.
#
#   benches/cache-load.sh [--reps N] [--scenarios small,16k] [--duration S]
#
# Needs (Debian 12): apt-get install nginx-light haproxy wrk curl procps util-linux python3 varnish
# SKIP_BUILD=1 FRONTDESK_BIN=... measures a binary you built.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RIG=${RIG:-$ROOT/../shared/bench}
[[ -f $RIG/lib.sh ]] || { echo "load rig not found at $RIG (set RIG=...)" >&2; exit 2; }
# shellcheck source=benches/rig-options.sh
source "$ROOT/benches/rig-options.sh"
rig_options "$@"
: "${SCENARIOS:=small,16k}"
if [[ ${SKIP_BUILD:-0} != 1 ]]; then (cd "$ROOT" && cargo build --release); fi
export FRONTDESK_BIN=${FRONTDESK_BIN:-$ROOT/target/release/frontdesk}

# shellcheck source=/dev/null
source "$RIG/lib.sh"
command -v varnishd >/dev/null || die "missing varnishd (apt-get install varnish)"
trap 'rig_cleanup; rm -rf "$RUN"' EXIT
trap 'exit 130' INT TERM

start_nginx_cache() { # <name> <port>
    local name=$1 port=$2
    render "$ROOT/benches/conf/nginx-cache.conf" "$RUN/$name.conf" RUN="$RUN" PORT="$port" UPSTREAM="127.0.0.1:$ORIGIN_PORT"
    start_bg "$name" "$PROXY_CPU" nginx -p "$RUN" -c "$RUN/$name.conf" -e "$RUN/$name.error.log"
    wait_http "$port" "$LAST_PID" "$name"
    add_target "$name" "$port" "$LAST_PID" "nginx $(nginx -v 2>&1 | sed 's|.*/||'), 1 worker, proxy_cache (10 min)"
}

start_varnish_cache() { # <name> <port>
    local name=$1 port=$2
    render "$ROOT/benches/conf/varnish-cache.vcl" "$RUN/$name.vcl" UPSTREAM_HOST=127.0.0.1 UPSTREAM_PORT="$ORIGIN_PORT"
    mkdir -p "$RUN/$name.work"
    start_bg "$name" "$PROXY_CPU" varnishd -F -a "127.0.0.1:$port" -f "$RUN/$name.vcl" -n "$RUN/$name.work" \
        -s malloc,256m -p thread_pools=1 -p thread_pool_min=60 -p thread_pool_max=500
    wait_http "$port" "$LAST_PID" "$name"
    add_target "$name" "$port" "$LAST_PID" "varnish $(varnishd -V 2>&1 | sed -n 's/.*varnish-\([0-9.]*\).*/\1/p' | head -1), 1 thread pool, caching (10 min)"
}

start_origin "$ORIGIN_PORT" "$LOAD_CPU"
start_cmd frontdesk-hit 18190 "$ROOT/benches/run-frontdesk.sh cache"
start_cmd frontdesk-miss 18191 "$ROOT/benches/run-frontdesk.sh plain"
start_nginx_cache nginx-cache 18192
start_varnish_cache varnish-cache 18193

# Fill every cache, and check that what is measured is a hit.
for port in 18190 18192 18193; do
    for path in / /16k; do curl -s -o /dev/null "http://127.0.0.1:$port$path"; done
done
status=$(curl -s -o /dev/null -D - http://127.0.0.1:18190/16k | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache-status"{print $2}')
[[ $status == HIT ]] || die "frontdesk-hit answered X-Cache-Status '$status', not HIT"
status=$(curl -s -o /dev/null -D - http://127.0.0.1:18192/16k | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache-status"{print $2}')
[[ $status == HIT ]] || die "nginx-cache answered X-Cache-Status '$status', not HIT"
[[ $(curl -s -o /dev/null -D - http://127.0.0.1:18193/16k | tr -d '\r' | awk -F': ' 'tolower($1)=="age"{print $2}') != "" ]] ||
    die "varnish-cache is not answering from its cache"

print_env
echo "# targets:"
for t in "${T_NAMES[@]}"; do echo "#   $t: ${T_DESC[$t]}"; done
run_matrix
write_rss
python3 "$RIG/summarize.py" "$RESULTS" --rss "$RUN/rss.tsv" --test frontdesk-hit \
    --vs nginx_cache=nginx-cache --vs varnish=varnish-cache --vs miss=frontdesk-miss
