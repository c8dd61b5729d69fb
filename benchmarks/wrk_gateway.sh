#!/bin/sh
# Load the demo gateway with wrk and report requests/s, non-2xx responses,
# the backend connections opened and the sockets left in TIME_WAIT on the
# backend's port, for one gateway configuration.
#
#   sh benchmarks/wrk_gateway.sh SECONDS CONNECTIONS DELAY [sockshare-client options...]
#   e.g. sh benchmarks/wrk_gateway.sh 10 100 0 --strategy shared --idle-timeout 0
#
# Needs wrk (Debian package) and the package installed (twistd finds the plugins).
set -eu
seconds=$1 connections=$2 delay=$3
shift 3
dir=$(mktemp -d)
here=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
server= client=
trap 'kill -TERM $client $server 2>/dev/null; wait $client $server 2>/dev/null; rm -rf "$dir"' EXIT
twistd -n --pidfile= --logfile "$dir/server.log" sockshare-server --listen tcp:0:interface=127.0.0.1 --port-file "$dir/server.port" --delay "$delay" &
server=$!
while [ ! -s "$dir/server.port" ]; do sleep 0.1; done
twistd -n --pidfile= --logfile "$dir/client.log" sockshare-client --listen tcp:0:interface=127.0.0.1 --port-file "$dir/client.port" --backend "tcp:127.0.0.1:$(cat "$dir/server.port")" "$@" &
client=$!
while [ ! -s "$dir/client.port" ]; do sleep 0.1; done
api="http://127.0.0.1:$(cat "$dir/client.port")"
cat > "$dir/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = string.rep("x", 64)
LUA
threads=$(( connections < 2 ? connections : 2 ))
wrk -t"$threads" -c"$connections" -d"${seconds}s" -s "$dir/post.lua" "$api/request" > "$dir/wrk.out"
backendPort=$(cat "$dir/server.port")
timeWait=$(ss -Htan state time-wait "( sport = :$backendPort or dport = :$backendPort )" | wc -l)
python3 - "$api" "$dir/wrk.out" "$*" "$timeWait" <<'PY'
import json, re, sys, urllib.request
api, wrkOut, options, timeWait = sys.argv[1], open(sys.argv[2]).read(), sys.argv[3], sys.argv[4]
rate = float(re.search(r"Requests/sec:\s+([\d.]+)", wrkOut).group(1))
total = int(re.search(r"(\d+) requests in", wrkOut).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", wrkOut)
errors = re.search(r"Socket errors: (.*)", wrkOut)
backend = json.loads(urllib.request.urlopen(urllib.request.Request(api + "/request", data=b"!stats")).read())
opened = backend["connectionsOpened"]
print(f"{options:45s} req/s={rate:9.1f} requests={total:7d} non2xx={int(non2xx.group(1)) if non2xx else 0:5d} "
      f"backendConnectionsOpened={opened:6d} per10k={opened * 10000 / max(total, 1):8.1f} timeWait={timeWait}"
      + (f" socketErrors=[{errors.group(1)}]" if errors else ""))
PY
