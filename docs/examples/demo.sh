#!/bin/sh
# Start the demo backend and the demo gateway (twistd plugins), send requests
# through the gateway, show its counters, and stop both.
set -eu
# Outside an activated virtualenv, use the README's (./.venv) if there is one.
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x .venv/bin/twistd ]; then
    PATH="$PWD/.venv/bin:$PATH"
fi
if ! twistd --help 2>/dev/null | grep -q sockshare-server; then
    echo "demo.sh: twistd does not list the sockshare-server plugin." >&2
    if [ -z "${VIRTUAL_ENV:-}" ]; then
        echo "Activate the virtualenv the project is installed in (. .venv/bin/activate), or install it:" >&2
    else
        echo "Install the project into this virtualenv ($VIRTUAL_ENV):" >&2
    fi
    echo "pip install .  (from a clone, for development: pip install -e . --config-settings" >&2
    echo "editable_mode=compat, so that twistd finds ./twisted/plugins)" >&2
    exit 1
fi
dir=$(mktemp -d)
server= client=
cleanup() {
    [ -n "$client" ] && kill -TERM "$client" 2>/dev/null
    [ -n "$server" ] && kill -TERM "$server" 2>/dev/null
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
# Wait up to 15 s for a process to write its port file; fail with its log if it does not.
waitForPort() {
    tries=150
    while [ ! -s "$dir/$1.port" ]; do
        tries=$((tries - 1))
        if [ "$tries" -eq 0 ] || ! kill -0 "$2" 2>/dev/null; then
            echo "demo.sh: twistd $1 did not start; its log:" >&2
            cat "$dir/$1.log" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
}
twistd -n --pidfile= --logfile "$dir/server.log" sockshare-server --listen tcp:0:interface=127.0.0.1 --port-file "$dir/server.port" --delay 0.2 &
server=$!
waitForPort server "$server"
twistd -n --pidfile= --logfile "$dir/client.log" sockshare-client --listen tcp:0:interface=127.0.0.1 --port-file "$dir/client.port" --backend "tcp:127.0.0.1:$(cat "$dir/server.port")" &
client=$!
waitForPort client "$client"
api="http://127.0.0.1:$(cat "$dir/client.port")"
python3 - "$api" <<'PY'
import json, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor

api = sys.argv[1]

def post(i):
    return urllib.request.urlopen(urllib.request.Request(api + "/request", data=b"hello %d" % i)).read()

with ThreadPoolExecutor(50) as pool:
    replies = list(pool.map(post, range(200)))
print("POST /request x200 (50 at a time):", replies[0], "...", replies[-1])
stats = json.load(urllib.request.urlopen(api + "/stats"))
print("GET /stats:", json.dumps(stats))
print(f"{stats['responses']} backend requests shared {stats['connectionsOpened']} connection(s)")
metrics = urllib.request.urlopen(api + "/metrics").read().decode()
print("GET /metrics (some lines):")
for line in metrics.splitlines():
    if line.startswith(("sockshare_responses_total", "sockshare_request_duration_seconds_count",
                        "sockshare_gateway_request_duration_seconds_count")) or (
            line.startswith("sockshare_request_duration_seconds_bucket") and 'le="0.5"' in line):
        print("  " + line)
print("GET /readyz:", urllib.request.urlopen(api + "/readyz").read().decode().strip())
PY
