"""
The server's request path alone, without sockets or a reactor: a client
with C{N} callers sends a chunk of N request frames a round, and the server
answers them into a L{StringTransport}.

It prints CPU microseconds per request for the library's server with its
default options and an identity handler (C{server}) and for
C{minimal-server}, the simplest correct hand-written server, measured side
by side, best of C{--repeat} runs; the C{-1} cases get one request a chunk,
the C{-1000} cases a thousand.  For figures that do not depend on the
machine's load, C{benchmarks/instructions.py} runs it under callgrind.

    python benchmarks/server_path.py [--rounds 2000] [--repeat 5] [--profile server]
    python benchmarks/server_path.py --run server:250 --run minimal-server:50
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import time
from collections.abc import Callable

from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from twisted_sockshare import SockShareServerFactory
from twisted_sockshare.bench.backend import MinimalServerProtocol
from twisted_sockshare.wire import REQUEST, encodeFrame


class RealTimeClock(Clock):
    """
    A clock read the way a real reactor's is, by one builtin call, and
    whose timers are never run.
    """

    seconds = staticmethod(time.monotonic)  # type: ignore[assignment]


def _identity(payload: bytes) -> bytes:
    return payload


def drive(protocol: Protocol, rounds: int, callers: int) -> float:
    """
    CPU microseconds per request for C{rounds} chunks of C{callers} requests.
    """
    transport = StringTransport()
    protocol.makeConnection(transport)
    payload = b"x" * 64
    chunk = b"".join(encodeFrame(requestId, REQUEST, payload) for requestId in range(callers))
    gc.collect()
    start = time.process_time()
    for _ in range(rounds):
        protocol.dataReceived(chunk)
        transport.clear()
    return (time.process_time() - start) / (rounds * callers) * 1e6


def server(rounds: int, callers: int = 100) -> float:
    """
    The library's server, default options, an identity handler.
    """
    factory = SockShareServerFactory(_identity, clock=RealTimeClock())
    protocol = factory.buildProtocol(None)
    assert protocol is not None
    return drive(protocol, rounds, callers)


def minimal(rounds: int, callers: int = 100) -> float:
    return drive(MinimalServerProtocol(RealTimeClock(), 0.0), rounds, callers)


CASES: dict[str, Callable[[int], float]] = {
    "minimal-server": minimal,
    "server": server,
    "minimal-server-1": lambda rounds: minimal(rounds * 100, callers=1),
    "server-1": lambda rounds: server(rounds * 100, callers=1),
    "minimal-server-1000": lambda rounds: minimal(max(1, rounds // 10), callers=1000),
    "server-1000": lambda rounds: server(max(1, rounds // 10), callers=1000),
}

#: The floor each case is compared with: minimal-server, with the same callers.
FLOORS = {name: "minimal-server" + name.removeprefix("minimal-").removeprefix("server") for name in CASES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", choices=sorted(CASES))
    parser.add_argument(
        "--run",
        action="append",
        metavar="CASE:ROUNDS",
        help="run CASE once for ROUNDS rounds, and print nothing (repeatable; for callgrind)",
    )
    args = parser.parse_args()
    if args.run:
        for spec in args.run:
            name, rounds = spec.split(":")
            CASES[name](int(rounds))
        return
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(CASES[args.profile], args.rounds)
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)
        return
    best = {name: min(case(args.rounds) for _ in range(args.repeat)) for name, case in CASES.items()}
    for name, micros in best.items():
        floor = best[FLOORS[name]]
        print(f"{name:<20} {micros:6.2f} us/request  ({100 * (micros / floor - 1):+.0f}% vs {FLOORS[name]})")


if __name__ == "__main__":
    main()
