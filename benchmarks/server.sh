#!/bin/sh
# The server's figures quoted in docs/benchmarks.rst ("The server"): the
# library's server against the simplest correct hand-written one, the same
# client against each.  Takes about 6 minutes on 2 cores (callgrind is most of it).
#
#   sh benchmarks/server.sh > benchmarks/results/server.txt
set -eu
echo "== sockshare bench -s server,minimal-server -c 1,100,1000 --duration 2 --repeat 5"
sockshare bench --quiet -s server,minimal-server -c 1,100,1000 --duration 2 --repeat 5
echo
echo "== sockshare bench -s server,minimal-server -c 1,100 --payload-size 65536 --duration 2 --repeat 5"
sockshare bench --quiet -s server,minimal-server -c 1,100 --payload-size 65536 --duration 2 --repeat 5
echo
echo "== python benchmarks/instructions.py (the servers' in-process cases)"
python benchmarks/instructions.py minimal-server server minimal-server-1 server-1 minimal-server-1000 server-1000
echo
echo "== python benchmarks/server_process.py -c 100"
python benchmarks/server_process.py -c 100
echo
echo "== python benchmarks/server_memory.py"
python benchmarks/server_memory.py
