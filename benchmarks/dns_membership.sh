#!/bin/sh
# The demo gateway under wrk load, its backends found in DNS (dnsmasq serving
# SRV records on loopback), while one member is added and another removed:
# requests/s, non-2xx responses, and the requests each backend served.
#
#   sh benchmarks/dns_membership.sh [SECONDS] [CONNECTIONS]
#
# Needs wrk and dnsmasq (Debian packages wrk and dnsmasq-base) and the package
# installed (twistd finds the plugins).  Membership: b1, b2 at the start; b3
# added at a third of the run; b1 removed at two thirds.
set -eu
seconds=${1:-21} connections=${2:-50}
dir=$(mktemp -d)
here=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
pids=
dns=
trap 'kill -TERM $pids $dns 2>/dev/null; wait $pids $dns 2>/dev/null; rm -rf "$dir"' EXIT
for name in b1 b2 b3; do
    twistd -n --pidfile= --logfile "$dir/$name.log" sockshare-server --listen tcp:0:interface=127.0.0.1 \
        --port-file "$dir/$name.port" &
    pids="$pids $!"
done
for name in b1 b2 b3; do while [ ! -s "$dir/$name.port" ]; do sleep 0.1; done; done
dnsPort=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
serve() {  # serve NAME... : SRV records for these backends
    [ -z "$dns" ] || { kill -TERM "$dns"; wait "$dns" 2>/dev/null || true; }
    records=
    for name in "$@"; do
        records="$records --srv-host=_sockshare._tcp.example.test,backends.example.test,$(cat "$dir/$name.port")"
    done
    # shellcheck disable=SC2086
    /usr/sbin/dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --port="$dnsPort" \
        --listen-address=127.0.0.1 --bind-interfaces --pid-file= --user="${USER:-root}" \
        --host-record=backends.example.test,127.0.0.1 $records 2>/dev/null &
    dns=$!
    echo "t=$(( $(date +%s) - start ))s: DNS serves $*"
}
start=$(date +%s)
serve b1 b2
twistd -n --pidfile= --logfile "$dir/gateway.log" sockshare-client --listen tcp:0:interface=127.0.0.1 \
    --port-file "$dir/gateway.port" --backend-dns _sockshare._tcp.example.test \
    --dns-server "127.0.0.1:$dnsPort" --dns-refresh 1 &
pids="$pids $!"
while [ ! -s "$dir/gateway.port" ]; do sleep 0.1; done
api="http://127.0.0.1:$(cat "$dir/gateway.port")"
cat > "$dir/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = string.rep("x", 64)
LUA
start=$(date +%s)
wrk -t2 -c"$connections" -d"${seconds}s" -s "$dir/post.lua" "$api/request" > "$dir/wrk.out" &
load=$!
sleep $(( seconds / 3 )); serve b1 b2 b3
sleep $(( seconds / 3 )); serve b2 b3
wait "$load"
python3 - "$dir" "$api" "$seconds" "$connections" <<'PY'
import json, re, sys, urllib.request
from twisted.internet.task import react
from twisted_sockshare import SockShareClientFactory

directory, api, seconds, connections = sys.argv[1:5]
out = open(f"{directory}/wrk.out").read()
rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
total = int(re.search(r"(\d+) requests in", out).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
errors = re.search(r"Socket errors: (.*)", out)
print(f"wrk -c{connections} {seconds} s: {total:,} requests, {rate:,.0f} requests/s, "
      f"non-2xx {int(non2xx.group(1)) if non2xx else 0}, socket errors: {errors.group(1) if errors else 'none'}")
stats = json.loads(urllib.request.urlopen(api + "/stats").read())
print("gateway /stats:", {k: stats[k] for k in ("requests", "responses", "failures", "retries", "ejections",
                                               "discoveryFailures", "endpoints", "connectionsOpened")})

async def served(reactor):
    for name in ("b1", "b2", "b3"):
        port = open(f"{directory}/{name}.port").read().strip()
        client = SockShareClientFactory(f"tcp:127.0.0.1:{port}", reactor)
        counters = json.loads(await client.request(b"!stats"))
        await client.close()
        print(f"{name}: served {counters['responses']:,} requests")

react(served)
PY
