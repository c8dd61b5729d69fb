#!/bin/sh
# The benchmark suite quoted in docs/benchmarks.rst: every case the project's
# targets and regressions are checked with.  Writes JSON (and a plot) to
# ${OUT:-benchmarks/results}.  Takes about 8 minutes on 2 cores.
#
#   sh benchmarks/suite.sh
set -eu
out=${OUT:-benchmarks/results}
mkdir -p "$out"
run() { name=$1; shift; echo "== $name: sockshare bench $*"; sockshare bench --quiet --json "$out/$name.json" "$@"; echo; }

# The targets: concurrency 100, 64-byte payloads, 3 interleaved runs each, median.
run main --concurrency 100 --duration 3 --repeat 3
# The floor: shared against minimal at every concurrency, 5 interleaved runs each, median.
run floor --concurrency 1,10,100,1000 --duration 2 --repeat 5 --strategy shared,minimal
# The sweep behind the plot.
run sweep --concurrency 1,10,100,1000 --duration 2 --plot docs/benchmarks-sweep.svg
# Regression cases: large payloads, many callers.
run large --payload-size 65536 --concurrency 100 --duration 2 --repeat 3 --strategy shared,persistent,minimal,amp,http
run callers --concurrency 1000 --duration 2 --strategy shared,persistent,minimal
# Bursts of 100 with 50 ms gaps: connections opened per strategy.
run bursty --requests 0 --bursts 20 --burst-size 100 --burst-gap 0.05 --strategy per-request,shared-eager,shared,shared-linger,persistent
# Memory held by 10,000 outstanding requests.
run memory --requests 0 --memory 10000 --strategy shared,minimal
