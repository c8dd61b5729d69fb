#!/bin/sh
# Small requests beside large ones (docs/benchmarks.rst, "Large and small
# messages"): 10 callers send 64-byte requests while one sends 1 MiB
# requests, the large ones on the same shared client (in fragments), on a
# client of their own, on the same client without fragments
# (fragmentSize=None, as before wire v3's FRAGMENTS), and nowhere; seven
# interleaved 2-second runs of each, medians.  Output:
# benchmarks/results/mixed.txt and mixed.json.
set -e
cd "$(dirname "$0")/.."
sockshare bench --mix 64,1048576:1 --repeat 7 --quiet --json benchmarks/results/mixed.json \
    | tee benchmarks/results/mixed.txt
