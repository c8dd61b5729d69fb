"""
The client process of a real loopback run, end to end: instructions per
request (callgrind; two request counts, the difference divided by the extra
requests, so start-up and connecting cancel out) and system calls per
request (strace -c), for the shared client with its defaults and for
minimal, the simplest correct hand-written client.  The backend runs in its
own process, which neither tool follows.

    python benchmarks/client_process.py [-c 1,100] [-s shared,minimal]   (needs valgrind and strace)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

LOW, HIGH = 2000, 6000
#: The system calls of a request's round trip, as strace names them.
CALLS = ("sendto", "recvfrom", "epoll_wait", "epoll_ctl")


def bench(strategy: str, concurrency: int, requests: int) -> list[str]:
    return [
        sys.executable, "-m", "twisted_sockshare", "bench", "--quiet", "--no-pin", "--warmup", "200",
        "-s", strategy, "-c", str(concurrency), "-n", str(requests),
    ]  # fmt: skip


def instructions(strategy: str, concurrency: int) -> int:
    """
    Instructions per request of the load generator's process.
    """

    def collected(requests: int) -> int:
        command = [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            *bench(strategy, concurrency, requests),
        ]
        env = dict(os.environ, PYTHONHASHSEED="0")
        output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stderr
        return int(re.findall(r"Collected : (\d+)", output)[-1])

    return round((collected(HIGH) - collected(LOW)) / (HIGH - LOW))


def syscalls(strategy: str, concurrency: int) -> dict[str, float]:
    """
    System calls per request of the load generator's process, by name.
    """

    def counted(requests: int) -> dict[str, int]:
        with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
            subprocess.run(["strace", "-c", "-o", out.name, *bench(strategy, concurrency, requests)], check=True,
                           stdout=subprocess.DEVNULL)  # fmt: skip
            rows = re.findall(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", out.read(), re.M)
            return {name: int(calls) for calls, name in rows}

    low, high = counted(LOW * 5), counted(HIGH * 5)
    return {name: (high.get(name, 0) - low.get(name, 0)) / ((HIGH - LOW) * 5) for name in CALLS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--concurrency", default="1,100")
    parser.add_argument("-s", "--strategy", default="shared,minimal")
    args = parser.parse_args()
    print(f"{'strategy':<10} {'callers':>7} {'instructions':>12}  " + "  ".join(f"{c:>10}" for c in CALLS))
    for concurrency in map(int, args.concurrency.split(",")):
        for strategy in args.strategy.split(","):
            calls = syscalls(strategy, concurrency)
            print(
                f"{strategy:<10} {concurrency:>7} {instructions(strategy, concurrency):>12,}  "
                + "  ".join(f"{calls[c]:>10.3f}" for c in CALLS)
            )


if __name__ == "__main__":
    main()
