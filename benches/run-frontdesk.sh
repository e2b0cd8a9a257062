#!/usr/bin/env bash
# Starts Frontdesk as the proxy under test for the load rig: writes a config
# for $PROXY_PORT -> $UPSTREAM_ADDR and execs the release binary (so the rig's
# pid is the gateway's). Usage: run-frontdesk.sh [plain|policies|jwt|ratelimit]
#   plain     one route, one target: the quick-start shape of bare Pingora
#   policies  header transforms both ways, CORS, a health-checked pool and a
#             JSON access log line per request (to a file)
#   jwt       plain + JWT auth (HS256, secret in $FRONTDESK_BENCH_SECRET)
#   ratelimit plain + a per-IP rate limit that never refuses (its cost only)
#   cache     plain + a response cache (every GET after the first is a hit)
#   waf       plain + the WAF with the shipped rules (block mode, paranoia 1)
#   crs       plain + the WAF with the OWASP Core Rule Set in $CRS (default
#             /usr/share/modsecurity-crs; paranoia 1, the API defaults)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROFILE=${1:-plain}
: "${PROXY_PORT:?run by the load rig, which sets PROXY_PORT}" "${UPSTREAM_ADDR:?}"
: "${FRONTDESK_BIN:=$ROOT/target/release/frontdesk}"
: "${FRONTDESK_THREADS:=1}"
DIR=$(mktemp -d "${TMPDIR:-/tmp}/frontdesk-bench.XXXXXX")
CONF=$DIR/frontdesk.toml
cat >"$CONF" <<TOML
[server]
listen = ["127.0.0.1:$PROXY_PORT"]
threads = $FRONTDESK_THREADS
work_stealing = ${FRONTDESK_WORK_STEALING:-true}
pid_file = "$DIR/frontdesk.pid"
upgrade_socket = "$DIR/upgrade.sock"
keepalive_timeout = "300s"
access_log = "$([[ $PROFILE == policies ]] && echo "$DIR/access.log" || echo off)"

[upstreams.origin]
targets = ["$UPSTREAM_ADDR"]
idle_timeout = "300s"
TOML
if [[ $PROFILE == policies ]]; then
cat >>"$CONF" <<'TOML'
[upstreams.origin.health_check]
path = "/"
interval = "1s"

[[routes]]
name = "all"
path_prefix = "/"
upstream = "origin"
transform = "clean"
cors = "web"

[transforms.clean]
request.remove_headers = ["x-debug"]
request.set_headers = { "x-gateway" = "frontdesk" }
response.remove_headers = ["x-debug", "server"]
response.set_headers = { "strict-transport-security" = "max-age=63072000" }

[cors.web]
allow_origins = ["https://app.example.com"]
TOML
elif [[ $PROFILE == ratelimit ]]; then
cat >>"$CONF" <<'TOML'
[[routes]]
name = "all"
path_prefix = "/"
upstream = "origin"
rate_limit = "per-ip"

[rate_limits.per-ip]
key = "ip"
limit = 1000000000
per = "1s"
TOML
elif [[ $PROFILE == waf ]]; then
cat >>"$CONF" <<TOML
[waf]
rules = ["$ROOT/rules/*.toml"]
audit_log = "off"

[[routes]]
name = "all"
path_prefix = "/"
upstream = "origin"
TOML
elif [[ $PROFILE == crs ]]; then
cat >>"$CONF" <<TOML
[waf]
crs = "${CRS:-/usr/share/modsecurity-crs}"
audit_log = "off"

[[routes]]
name = "all"
path_prefix = "/"
upstream = "origin"
TOML
elif [[ $PROFILE == cache ]]; then
cat >>"$CONF" <<'TOML'
[[routes]]
name = "all"
path_prefix = "/"
upstream = "origin"
cache = "hits"

[cache.hits]
ttl = "1h"
TOML
elif [[ $PROFILE == jwt ]]; then
cat >>"$CONF" <<'TOML'
[[routes]]
name = "all"
path_prefix = "/"
upstream = "origin"
auth = "users"

[auth.users]
type = "jwt"
algorithms = ["HS256"]
secret_env = "FRONTDESK_BENCH_SECRET"
groups_claim = "roles"
TOML
else
cat >>"$CONF" <<'TOML'
[[routes]]
name = "all"
path_prefix = "/"
upstream = "origin"
TOML
fi
RUST_LOG=${RUST_LOG:-warn} exec "$FRONTDESK_BIN" run -c "$CONF"
