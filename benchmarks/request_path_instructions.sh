#!/bin/sh
# Instructions per request of each request_path.py case, counted by callgrind:
# the same figure on a busy or an idle machine.  Each case runs with two round
# counts; the difference divided by the extra requests cancels start-up costs.
#
#   sh benchmarks/request_path_instructions.sh      (needs valgrind; ~1 minute)
set -eu
python=${PYTHON:-python3}
export PYTHONHASHSEED=0  # the same dict and set layouts on every run
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$python" benchmarks/request_path.py --only "$1" --rounds "$2" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for case in minimal raw shared shared-no-timeouts; do
    low=$(count "$case" 50)
    high=$(count "$case" 250)
    echo "$case $(( (high - low) / 20000 )) instructions/request"
done
