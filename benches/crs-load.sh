#!/usr/bin/env bash
# The OWASP Core Rule Set under load: Frontdesk with CRS at paranoia 1 vs
# the same binary with the WAF off vs NGINX + ModSecurity 3 with the same
# CRS (Debian's modsecurity-crs, the same REQUEST-*.conf files and the same
# setup, conf/crs-api-defaults.conf) vs plain NGINX, on the shared load rig
# (../shared/bench/lib.sh: wrk + the origin on CPU 0, each proxy on CPU 1,
# one worker each, interleaved A B C D A B C D). Same requests for every
# target:
#
#   get     GET with five query parameters (a new page number every time)
#           and four headers (benches/conf/api-get.lua)
#   json2k  a 2 KB JSON POST (benches/conf/post-json-2k.lua)
#
#   benches/crs-load.sh [--reps N] [--scenarios get,json2k] [--duration S]
#
# Needs (Debian 12): apt-get install nginx-light libnginx-mod-http-modsecurity
# modsecurity-crs haproxy wrk curl procps util-linux python3
# SKIP_BUILD=1 FRONTDESK_BIN=... measures a binary you built.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RIG=${RIG:-$ROOT/../shared/bench}
CRS=${CRS:-/usr/share/modsecurity-crs}
[[ -f $RIG/lib.sh ]] || { echo "load rig not found at $RIG (set RIG=...)" >&2; exit 2; }
# shellcheck source=benches/rig-options.sh
source "$ROOT/benches/rig-options.sh"
rig_options "$@"
: "${SCENARIOS:=get,json2k}"
export SCENARIOS
[[ -d $CRS/rules ]] || { echo "no Core Rule Set at $CRS (apt-get install modsecurity-crs)" >&2; exit 2; }
[[ -f /usr/lib/nginx/modules/ngx_http_modsecurity_module.so ]] ||
    { echo "missing ModSecurity for nginx (apt-get install libnginx-mod-http-modsecurity)" >&2; exit 2; }
if [[ ${SKIP_BUILD:-0} != 1 ]]; then (cd "$ROOT" && cargo build --release); fi
export FRONTDESK_BIN=${FRONTDESK_BIN:-$ROOT/target/release/frontdesk} CRS

# shellcheck source=/dev/null
source "$RIG/lib.sh"
trap 'rig_cleanup; rm -rf "$RUN"' EXIT
trap 'exit 130' INT TERM

wrk_once() {
    local port=$1 sc=$2 secs=$3 out=$4 script
    case $sc in
        get) script=$ROOT/benches/conf/api-get.lua ;;
        json2k) script=$ROOT/benches/conf/post-json-2k.lua ;;
        *) die "unknown scenario $sc (get, json2k)" ;;
    esac
    pin "$LOAD_CPU" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${secs}s" --latency -s "$script" \
        "http://127.0.0.1:$port/" >"$out" 2>&1 || true
}

# ModSecurity's own settings (body access, JSON and XML body processors, no
# audit log), then the same setup and rule files Frontdesk loads.
cat >"$RUN/modsecurity-main.conf" <<CONF
SecRuleEngine On
SecRequestBodyAccess On
SecRequestBodyLimit 13107200
SecRequestBodyNoFilesLimit 131072
SecResponseBodyAccess Off
SecAuditEngine Off
SecPcreMatchLimit 100000
SecPcreMatchLimitRecursion 100000
SecRule REQUEST_HEADERS:Content-Type "@rx (?:application(?:/soap\+|/)|text/)xml" "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "@rx application/json" "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
Include $ROOT/conf/crs-api-defaults.conf
Include $CRS/rules/REQUEST-*.conf
CONF

start_nginx_modsec() { # <name> <port>
    local name=$1 port=$2
    render "$ROOT/benches/conf/nginx-modsecurity.conf" "$RUN/$name.conf" RUN="$RUN" PORT="$port" UPSTREAM="127.0.0.1:$ORIGIN_PORT"
    start_bg "$name" "$PROXY_CPU" nginx -p "$RUN" -c "$RUN/$name.conf" -e "$RUN/$name.error.log"
    wait_http "$port" "$LAST_PID" "$name"
    add_target "$name" "$port" "$LAST_PID" "nginx $(nginx -v 2>&1 | sed 's|.*/||') + ModSecurity $(dpkg-query -W -f '${Version}' libmodsecurity3 2>/dev/null) + CRS $(dpkg-query -W -f '${Version}' modsecurity-crs 2>/dev/null), 1 worker"
}

start_origin "$ORIGIN_PORT" "$LOAD_CPU"
start_cmd frontdesk-crs 18290 "$ROOT/benches/run-frontdesk.sh crs"
start_cmd frontdesk-off 18291 "$ROOT/benches/run-frontdesk.sh plain"
start_nginx_modsec nginx-modsec 18292
start_nginx_proxy nginx 18293 1

# What is measured must pass the WAFs, and an attack must not.
for port in 18290 18292; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: api.example.com' -H 'User-Agent: x' -H 'Accept: */*' \
        "http://127.0.0.1:$port/?q=1%27%20union%20select%20password%20from%20users--")
    [[ $code == 403 ]] || die "port $port answered $code to an attack, not 403"
done

print_env
echo "# targets:"
for t in "${T_NAMES[@]}"; do echo "#   $t: ${T_DESC[$t]}"; done
run_matrix
write_rss
python3 "$RIG/summarize.py" "$RESULTS" --rss "$RUN/rss.tsv" --test frontdesk-crs \
    --vs waf_off=frontdesk-off --vs nginx_modsec=nginx-modsec --vs nginx=nginx
