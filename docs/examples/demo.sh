#!/bin/sh
# Start the demo backend and the demo gateway (twistd plugins), send requests
# through the gateway, show its counters, and stop both.
set -eu
dir=$(mktemp -d)
twistd -n --pidfile= --logfile "$dir/server.log" sockshare-server --listen tcp:0:interface=127.0.0.1 --port-file "$dir/server.port" --delay 0.2 &
server=$!
while [ ! -s "$dir/server.port" ]; do sleep 0.1; done
twistd -n --pidfile= --logfile "$dir/client.log" sockshare-client --listen tcp:0:interface=127.0.0.1 --port-file "$dir/client.port" --backend "tcp:127.0.0.1:$(cat "$dir/server.port")" &
client=$!
while [ ! -s "$dir/client.port" ]; do sleep 0.1; done
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
PY
kill -TERM "$client" "$server"
wait "$client" "$server" 2>/dev/null || true
rm -rf "$dir"
