"""
Tail latency of a balancer over three real backend processes on loopback,
one of them slow: for 10% of its requests (200 ms), or all the time (5x the
others' latency); each with hedging off and on, beside the same load sent to
a fleet with no slow member.

    python benchmarks/tail_latency.py [--callers 20] [--seconds 5]

Every backend answers after 1 ms (the slow one: 5 ms, or 200 ms for one
request in ten, drawn from a seeded generator); in the last scenario every
backend stalls 200 ms for 1% of its requests, so there is no slow member to
steer around and only hedging helps.  Each caller sends
idempotent requests one after the other; the first second of each scenario
warms up and is not counted.  Printed: p50, p99 and p99.9 of the latency a
caller saw, requests/s, the extra requests sent (backups, as a share of the
requests), and the slow backend's share of the requests.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from random import Random
from typing import Any

from twisted.internet import stdio
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater, react

from twisted_sockshare import Hedge, SockShareBalancer, SockShareServerFactory

BASE = 0.001
SCENARIOS = [
    # (name, the slow backend's delay, its stall share, its stall), hedge
    ("none", (BASE, 0.0, 0.0), None),
    ("10% of requests stall 200 ms", (BASE, 0.1, 0.2), None),
    ("10% of requests stall 200 ms", (BASE, 0.1, 0.2), Hedge(maxExtraLoad=0.05)),
    ("5x slower (5 ms)", (5 * BASE, 0.0, 0.0), None),
    ("5x slower (5 ms)", (5 * BASE, 0.0, 0.0), Hedge(maxExtraLoad=0.05)),
    # Every member stalls now and then (pauses): no member to steer around.
    ("all: 1% stall 200 ms", (BASE, 0.01, 0.2), None),
    ("all: 1% stall 200 ms", (BASE, 0.01, 0.2), Hedge(maxExtraLoad=0.05)),
]


async def serve(reactor: Any, delay: float, stallShare: float, stall: float, seed: int) -> None:
    """
    A backend: answer every request after C{delay} seconds, or C{stall}
    seconds for a share C{stallShare} of them; print the port; stop when
    standard input closes.
    """
    draw = Random(seed).random

    def handler(payload: bytes) -> Deferred[bytes]:
        wait = stall if stallShare and draw() < stallShare else delay
        return deferLater(reactor, wait, lambda: payload)

    port = await TCP4ServerEndpoint(reactor, 0, backlog=1024, interface="127.0.0.1").listen(
        SockShareServerFactory(handler, maxInFlight=10_000)
    )
    print(port.getHost().port, flush=True)
    stopped: Deferred[None] = Deferred()

    class StopOnEOF(Protocol):
        def connectionLost(self, reason: object = None) -> None:
            stopped.callback(None)

    stdio.StandardIO(StopOnEOF(), reactor=reactor)
    await stopped


def start(delay: float, stallShare: float, stall: float, seed: int) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", json.dumps([delay, stallShare, stall, seed])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, int(process.stdout.readline())


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def scenario(reactor: Any, ports: list[int], hedge: Hedge | None, callers: int, seconds: float) -> dict[str, Any]:
    balancer = SockShareBalancer(
        [f"tcp:127.0.0.1:{port}" for port in ports], reactor, hedge=hedge, random=Random(1).random
    )
    latencies: list[float] = []
    warmUntil = time.perf_counter() + 1.0
    stopAt = warmUntil + seconds

    async def caller() -> None:
        clock = time.perf_counter
        while True:
            began = clock()
            if began >= stopAt:
                return
            await balancer.request(b"x" * 64, idempotent=True)
            if began >= warmUntil:
                latencies.append(clock() - began)

    before: dict[str, int] = {}

    def snapshot() -> None:
        before.update(balancer.stats())
        before.update({f"served {name}": stats["requests"] for name, stats in balancer.endpointStats().items()})

    reactor.callLater(1.0, snapshot)
    await gatherResults([ensureDeferred(caller()) for _ in range(callers)])
    stats = balancer.stats()
    served = {
        name: stats_["requests"] - before.get(f"served {name}", 0) for name, stats_ in balancer.endpointStats().items()
    }
    await balancer.close()
    latencies.sort()
    requests = stats["requests"] - before.get("requests", 0)
    slow = served[f"tcp:127.0.0.1:{ports[0]}"]
    return {
        "p50": percentile(latencies, 0.5) * 1000,
        "p99": percentile(latencies, 0.99) * 1000,
        "p999": percentile(latencies, 0.999) * 1000,
        "rate": len(latencies) / seconds,
        "extra": (stats["hedges"] - before.get("hedges", 0)) / max(requests, 1),
        "slowShare": slow / max(sum(served.values()), 1),
        "failures": stats["failures"],
    }


async def main(reactor: Any, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--callers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    options = parser.parse_args(argv)
    print(f"{options.callers} callers, {options.seconds:g} s each (after 1 s of warm-up), three backends on loopback")
    columns = f"{'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>9} {'req/s':>7} {'extra':>6} {'its share':>9}"
    header = f"{'slow member':30} {'hedge':17} {columns}"
    print(header)
    print("-" * len(header))
    for name, (delay, stallShare, stall), hedge in SCENARIOS:
        everyone = name.startswith("all")
        others = (delay, stallShare, stall) if everyone else (BASE, 0.0, 0.0)
        backends = [start(delay, stallShare, stall, 1)] + [start(*others, seed) for seed in (2, 3)]
        try:
            row = await scenario(reactor, [port for _, port in backends], hedge, options.callers, options.seconds)
        finally:
            for process, _ in backends:
                assert process.stdin is not None
                process.stdin.close()
                process.wait()
        label = "off" if hedge is None else f"maxExtraLoad={hedge.maxExtraLoad:g}"
        print(
            f"{name:30} {label:17} {row['p50']:7.2f} {row['p99']:7.2f} {row['p999']:9.2f} {row['rate']:7.0f}"
            f" {row['extra']:6.1%} {'-' if everyone else format(row['slowShare'], '.1%'):>9}"
            + (f"  ({row['failures']} failed)" if row["failures"] else "")
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        react(lambda reactor: ensureDeferred(serve(reactor, *json.loads(sys.argv[2]))))
    else:
        react(lambda reactor: ensureDeferred(main(reactor, sys.argv[1:])))
