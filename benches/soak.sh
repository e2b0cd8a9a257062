#!/usr/bin/env bash
# Soak: mixed traffic through the release binary for a long while, with a
# config reload every 30 s, watching memory and file descriptors.
#
#   benches/soak.sh [seconds]        (default 600)
#
# Traffic (benches/conf/soak.lua, one wrk thread, 32 connections): cache
# hits and misses, API-key auth passes and failures (401), a route that is
# rate limited (429), WAF blocks (403), a backend that is down (502), and
# plain proxied requests. Every 10 s it prints the gateway's RSS and open
# fds; at the end, the status counts and every *unexpected* answer (a
# status a request of that kind should never get, or a socket error).
# Prints `rss_growth=X% fds_start=N fds_end=M unexpected=K` last.
#
# Needs nginx (the origin) and wrk. FRONTDESK_BIN=... uses a binary you
# built (default: target/release/frontdesk, built if missing).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${1:-600}
BIN=${FRONTDESK_BIN:-$ROOT/target/release/frontdesk}
[[ -x $BIN ]] || (cd "$ROOT" && cargo build --release)
DIR=$(mktemp -d "${TMPDIR:-/tmp}/frontdesk-soak.XXXXXX")
cleanup() {
    [[ -n ${GW:-} ]] && kill "$GW" 2>/dev/null
    [[ -f $DIR/nginx.pid ]] && kill "$(cat "$DIR/nginx.pid")" 2>/dev/null
    rm -rf "$DIR"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P=$(port) A=$(port) O=$(port) DEAD=$(port)
cat >"$DIR/nginx.conf" <<EOF
worker_processes 1;
pid $DIR/nginx.pid;
error_log $DIR/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $DIR; proxy_temp_path $DIR; fastcgi_temp_path $DIR;
  uwsgi_temp_path $DIR; scgi_temp_path $DIR;
  server {
    listen 127.0.0.1:$O;
    location /cached/ { add_header Cache-Control "max-age=5"; return 200 "cached body\n"; }
    location / { return 200 "ok\n"; }
  }
}
EOF
nginx -c "$DIR/nginx.conf" -p "$DIR"
KEY=soak-key-0123456789
SHA=$(printf %s "$KEY" | "$BIN" hash-key | sed -E 's/.*"([0-9a-f]+)".*/\1/')
write_config() { # $1: a value that changes on every reload
    cat >"$DIR/frontdesk.toml" <<TOML
[server]
listen = ["127.0.0.1:$P"]
admin_listen = "127.0.0.1:$A"
threads = 2
access_log = "off"
pid_file = "$DIR/frontdesk.pid"
upgrade_socket = "$DIR/upgrade.sock"

[waf]
mode = "block"
rules = ["$ROOT/rules/*.toml"]
audit_log = "off"

[upstreams.origin]
targets = ["127.0.0.1:$O"]

[upstreams.down]
targets = ["127.0.0.1:$DEAD"]
retries = 0

[auth.keys]
type = "api_key"
keys = [{ consumer = "soak", sha256 = "$SHA" }]

[rate_limits.tight]
key = "ip"
limit = 50
per = "1s"

[cache.short]
ttl = "5s"

[transforms.tag]
response.set_headers = { "x-soak-generation" = "$1" }

[[routes]]
name = "cached"
path_prefix = "/cached"
upstream = "origin"
cache = "short"

[[routes]]
name = "auth"
path_prefix = "/auth"
upstream = "origin"
auth = "keys"

[[routes]]
name = "limited"
path_prefix = "/limited"
upstream = "origin"
rate_limit = "tight"

[[routes]]
name = "broken"
path_prefix = "/broken"
upstream = "down"

[[routes]]
name = "app"
upstream = "origin"
transform = "tag"
TOML
}
write_config 0
# Upstream failures are logged per request (the down backend): kept in a file.
RUST_LOG=error "$BIN" run -c "$DIR/frontdesk.toml" 2>"$DIR/gateway.log" &
GW=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$P/" && break; sleep 0.1; done
sample() {
    local rss fds
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$GW/status")
    fds=$(find "/proc/$GW/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    echo "$rss $fds"
}
SOAK_KEY=$KEY wrk -t1 -c32 -d"${SECS}s" -s "$ROOT/benches/conf/soak.lua" "http://127.0.0.1:$P/" >"$DIR/wrk.txt" 2>&1 &
WRK=$!
start=$(date +%s) gen=0 warm=""
read -r rss0 fds0 < <(sample)
printf '%6s %10s %6s %s\n' t rss_kib fds reloads
while kill -0 "$WRK" 2>/dev/null; do
    sleep 10
    t=$(($(date +%s) - start))
    if ((t / 30 > gen)); then
        gen=$((t / 30))
        write_config "$gen"
        "$BIN" reload -c "$DIR/frontdesk.toml" >/dev/null 2>&1 || echo "reload $gen failed"
    fi
    read -r rss fds < <(sample)
    # Growth is measured after a minute of warm-up (caches and pools fill).
    [[ -z $warm && $t -ge 60 ]] && warm=$rss
    printf '%6d %10d %6d %d\n' "$t" "$rss" "$fds" "$gen"
done
wait "$WRK" || true
read -r rss1 fds1 < <(sample)
cat "$DIR/wrk.txt"
reloads=$(curl -s "http://127.0.0.1:$A/metrics" | grep '^frontdesk_config_reloads_total' || true)
echo "$reloads"
echo "gateway log lines: $(wc -l <"$DIR/gateway.log") ($(grep -vc ConnectRefused "$DIR/gateway.log" || true) not about the down backend)"
grep -v ConnectRefused "$DIR/gateway.log" | head -5 || true
unexpected=$(awk '/^unexpected / {print $2}' "$DIR/wrk.txt")
growth=$(awk -v a="${warm:-$rss0}" -v b="$rss1" 'BEGIN { printf "%.1f", 100 * (b - a) / a }')
echo "rss_start=${rss0}KiB rss_after_warmup=${warm:-$rss0}KiB rss_end=${rss1}KiB"
echo "rss_growth=${growth}% fds_start=$fds0 fds_end=$fds1 unexpected=${unexpected:-?}"
