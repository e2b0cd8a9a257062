#!/usr/bin/env bash
# Replays the shared WAF corpus (../shared/waf-corpus: CRS regression
# requests + benign API traffic) through the real binary with the native
# rules (rules/*.toml), or with the OWASP Core Rule Set (--crs), in block
# mode, and prints detection and false-positive rates per attack family
# (replay.py's report; the last line is `detection=X% fp=Y%`).
#
#   benches/waf-corpus.sh [--paranoia N] [--crs [DIR]] [replay.py options, e.g. --raw]
#
# --crs runs the Core Rule Set in DIR (default /usr/share/modsecurity-crs,
# Debian's modsecurity-crs) with the gateway's API defaults.
#
# FRONTDESK_BIN=... uses a binary you built (default: a debug build).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${CORPUS:-$ROOT/../shared/waf-corpus}
PARANOIA=1
CRS=
while [[ $# -gt 0 ]]; do
    case $1 in
        --paranoia) PARANOIA=$2; shift 2 ;;
        --crs)
            if [[ ${2:-} == /* ]]; then CRS=$2; shift 2; else CRS=/usr/share/modsecurity-crs; shift; fi ;;
        *) break ;;
    esac
done
if [[ -n $CRS ]]; then
    RULES="crs = \"$CRS\""
else
    RULES="rules = [\"$ROOT/rules/*.toml\"]"
fi
[[ -f $CORPUS/replay.py ]] || { echo "corpus not found at $CORPUS (set CORPUS=...)" >&2; exit 2; }
if [[ -z ${FRONTDESK_BIN:-} ]]; then
    (cd "$ROOT" && cargo build -q)
    FRONTDESK_BIN=$ROOT/target/debug/frontdesk
fi
DIR=$(mktemp -d "${TMPDIR:-/tmp}/frontdesk-waf.XXXXXX")
cleanup() {
    [[ -n ${GW:-} ]] && kill "$GW" 2>/dev/null
    [[ -n ${ORIGIN:-} ]] && kill "$ORIGIN" 2>/dev/null
    [[ -n ${AUDIT_OUT:-} && -f $DIR/audit.log ]] && cp "$DIR/audit.log" "$AUDIT_OUT"
    rm -rf "$DIR"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P=$(port) O=$(port)
# A backend that answers 200 to any method.
python3 - "$O" <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        n = int(self.headers.get("content-length") or 0)
        if n: self.rfile.read(n)
        self.send_response(200); self.send_header("content-length", "2"); self.end_headers(); self.wfile.write(b"ok")
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_PROPFIND = answer
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
ORIGIN=$!
cat >"$DIR/frontdesk.toml" <<TOML
[server]
listen = ["127.0.0.1:$P"]
threads = 2
access_log = "off"
pid_file = "$DIR/frontdesk.pid"
upgrade_socket = "$DIR/upgrade.sock"

[waf]
mode = "block"
$RULES
paranoia = $PARANOIA
audit_log = "$DIR/audit.log"

[upstreams.origin]
targets = ["127.0.0.1:$O"]

[[routes]]
name = "all"
upstream = "origin"
TOML
RUST_LOG=error "$FRONTDESK_BIN" run -c "$DIR/frontdesk.toml" &
GW=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$P/" && break; sleep 0.1; done
python3 "$CORPUS/replay.py" "http://127.0.0.1:$P" --max-paranoia "$PARANOIA" "$@"
