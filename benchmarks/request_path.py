"""
The client's request path alone, without sockets or a reactor: C{N} callers
each send their next request, and a fake backend answers everything written
so far in one chunk per round.

It prints CPU microseconds per request for the shared client with its
default options (and without request timeouts) and for C{minimal}, the
simplest correct hand-written client, measured side by side, best of
C{--repeat} runs; the C{-1} cases have one caller, the C{-1-waits} cases one
that waits for each reply.  With C{--profile NAME}, it prints NAME's
cProfile instead.  For figures that do not depend on the machine's load, run
it under C{valgrind --tool=callgrind} (C{--run}) and compare instruction
counts (see docs/benchmarks.rst).

    python benchmarks/request_path.py [--rounds 2000] [--repeat 5] [--profile shared]
    python benchmarks/request_path.py --run shared:250 --run minimal:50
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import time
from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from twisted_sockshare import SockShareClientFactory
from twisted_sockshare.bench.contenders import _MinimalProtocol
from twisted_sockshare.wire import (
    BUDGET_SIZE,
    HELLO_MAGIC,
    PING,
    PONG,
    RESPONSE,
    SERVER_RECEIVES,
    TIMED_REQUEST,
    FrameDecoder,
    Hello,
    encodeFrame,
)

# A real program has fired Deferreds long before it serves requests, so the
# Deferred class already knows every attribute its instances get; fire one
# here too, or the floors below would pay a CPython 3.11+ cost (each instance
# a dict of its own after a flood of unfired ones) that programs do not.
_warm: Deferred[None] = Deferred()
_warm.addBoth(lambda _: None)
_warm.callback(None)


class RealTimeClock(Clock):
    """
    A clock read the way a real reactor's is, by one builtin call, and
    whose timers are never run.
    """

    seconds = staticmethod(time.monotonic)  # type: ignore[assignment]


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """
    Connects at once, to a L{StringTransport}.
    """

    def __init__(self) -> None:
        self.transport = StringTransport()
        self.protocol = None

    def connect(self, factory):  # type: ignore[no-untyped-def]
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        return succeed(self.protocol)


def drive(
    request: Callable[[bytes], Deferred[bytes]],
    transport: StringTransport,
    protocol,  # type: ignore[no-untyped-def]
    rounds: int,
    callers: int = 100,
    waits: bool = False,
    version: int = 2,
) -> float:
    """
    CPU microseconds per request for C{rounds} rounds of C{callers} requests.

    Each caller sends its next request from the callback of its reply, as
    C{sockshare bench} does; or, if C{waits}, after the reply's chunk is
    handled, as a gateway does when the next HTTP request comes in a later
    reactor turn (with one caller, the pending count falls to zero between
    requests).
    """
    backend = FrameDecoder(1 << 20, SERVER_RECEIVES, BUDGET_SIZE)
    payload = b"x" * 64
    hello = encodeFrame(0, PING, Hello(deadlines=True, refusals=True, maxInFlight=100_000).encode())

    def answer(frame: tuple[int, int, bytes]) -> bytes:
        # A server of wire version 2 echoes the client's HELLO (a PING); one
        # of version 3 answers it with its own, and takes budgets.
        requestId, kind, body = frame
        if kind == PING:
            if version == 3 and body.startswith(HELLO_MAGIC):
                return hello
            return encodeFrame(requestId, PONG, body)
        if kind == TIMED_REQUEST:
            body = body[BUDGET_SIZE:]
        return encodeFrame(requestId, RESPONSE, body)

    done = 0
    later: list[None] = []

    def again(reply: bytes) -> None:
        nonlocal done
        done += 1
        if waits:
            later.append(None)
        else:
            request(payload).addCallback(again)

    for _ in range(callers):
        request(payload).addCallback(again)
    gc.collect()
    start = time.process_time()
    for _ in range(rounds):
        written = transport.value()
        transport.clear()
        protocol().dataReceived(b"".join(answer(frame) for frame in backend.feed(written)))
        for _ in later:
            request(payload).addCallback(again)
        later.clear()
    return (time.process_time() - start) / done * 1e6


def shared(rounds: int, callers: int = 100, waits: bool = False, version: int = 2, **options: object) -> float:
    """
    The shared client with its default options (unless C{options} says
    otherwise): request timeouts, counters and the idle linger all on;
    against a server of wire C{version} 2 (as C{minimal} speaks) or 3 (the
    requests carry their budgets).
    """
    endpoint = MemoryEndpoint()
    client = SockShareClientFactory(endpoint, RealTimeClock(), **options)  # type: ignore[arg-type]
    return drive(client.request, endpoint.transport, lambda: endpoint.protocol, rounds, callers, waits, version)


def minimal(rounds: int, callers: int = 100, waits: bool = False) -> float:
    protocol = _MinimalProtocol()
    transport = StringTransport()
    protocol.makeConnection(transport)
    return drive(protocol.request, transport, lambda: protocol, rounds, callers, waits)


CASES: dict[str, Callable[[int], float]] = {
    "minimal": minimal,
    "shared": shared,
    "shared-no-timeouts": lambda rounds: shared(rounds, requestTimeout=None),
    "shared-latency": lambda rounds: shared(rounds, latencyHistogram=True),
    # Against a server of wire version 3: every request carries its budget.
    "shared-v3": lambda rounds: shared(rounds, version=3),
    # One caller, as sockshare bench -c 1 runs it.
    "minimal-1": lambda rounds: minimal(rounds * 100, callers=1),
    "shared-1": lambda rounds: shared(rounds * 100, callers=1),
    # A thousand callers on one connection.
    "minimal-1000": lambda rounds: minimal(max(1, rounds // 10), callers=1000),
    "shared-1000": lambda rounds: shared(max(1, rounds // 10), callers=1000),
    # One caller that waits for each reply: the count falls to zero.
    "minimal-1-waits": lambda rounds: minimal(rounds * 100, callers=1, waits=True),
    "shared-1-waits": lambda rounds: shared(rounds * 100, callers=1, waits=True),
}

#: The floor each case is compared with: minimal, with the same callers.
FLOORS = {name: "minimal" + name[len(name.split("-")[0]) :] for name in CASES}
FLOORS["shared-no-timeouts"] = FLOORS["shared-latency"] = FLOORS["shared-v3"] = "minimal"


def main(cases: dict[str, Callable[[int], float]] = CASES, floors: dict[str, str] = FLOORS) -> None:
    """
    The command line of this script and of C{server_path.py}, for their
    C{cases}, each compared with its floor (C{floors}).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", choices=sorted(cases))
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
            cases[name](int(rounds))
        return
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(cases[args.profile], args.rounds)
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)
        return
    best = {name: min(case(args.rounds) for _ in range(args.repeat)) for name, case in cases.items()}
    for name, micros in best.items():
        floor = best[floors[name]]
        print(f"{name:<20} {micros:6.2f} us/request  ({100 * (micros / floor - 1):+.0f}% vs {floors[name]})")


if __name__ == "__main__":
    main()
