"""
The server process of a real loopback run, end to end: instructions per
request of the benchmark backend's process (callgrind; two request counts,
the difference divided by the extra requests, so start-up and connecting
cancel out), serving the library's server (C{echo}: default options, an
identity handler) or C{minimal-server}, the simplest correct hand-written
server, to the same client (C{sockshare bench -s minimal}).

    python benchmarks/server_process.py [-c 1,100] [-s echo,minimal-server]   (needs valgrind)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

LOW, HIGH = 2000, 6000


def served(service: str, concurrency: int, requests: int) -> int:
    """
    Instructions of a backend process that served C{requests} requests of
    C{service} to C{concurrency} callers, then stopped.
    """
    env = dict(os.environ, PYTHONHASHSEED="0")
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
               sys.executable, "-m", "twisted_sockshare.bench.backend"]  # fmt: skip
    backend = subprocess.Popen(
        command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert backend.stdout is not None and backend.stdin is not None
    try:
        ports = json.loads(backend.stdout.readline())
        load = [
            sys.executable, "-m", "twisted_sockshare", "bench", "--quiet", "--no-pin", "--warmup", "200",
            "-s", "minimal", "-c", str(concurrency), "-n", str(requests),
            "--backend", f"tcp:127.0.0.1:{ports[service]}",
        ]  # fmt: skip
        subprocess.run(load, check=True, stdout=subprocess.DEVNULL)
    finally:
        backend.stdin.close()
    assert backend.stderr is not None
    errors = backend.stderr.read()
    backend.wait(timeout=300)
    return int(re.findall(r"Collected : (\d+)", errors)[-1])


def instructions(service: str, concurrency: int) -> int:
    """
    Instructions per request of the backend's process serving C{service}.
    """
    return round((served(service, concurrency, HIGH) - served(service, concurrency, LOW)) / (HIGH - LOW))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--concurrency", default="1,100")
    parser.add_argument("-s", "--service", default="echo,minimal-server")
    args = parser.parse_args()
    print(f"{'server':<16} {'callers':>7} {'instructions/request':>21}")
    for concurrency in map(int, args.concurrency.split(",")):
        for service in args.service.split(","):
            print(f"{service:<16} {concurrency:>7} {instructions(service, concurrency):>21,}", flush=True)


if __name__ == "__main__":
    main()
