"""
What one client can make a server hold: 200,000 pipelined 1 KiB requests on
one connection to a handler that never answers (or, with --no-read, that
answers at once to a client that never reads).  Prints the requests held in
handlers and the server process's RSS growth after --seconds.

    python benchmarks/server_flood.py                        # the default bounds
    python benchmarks/server_flood.py --max-in-flight 1000000000   # no in-flight bound
    python benchmarks/server_flood.py --no-read
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater, react
from twisted.internet.utils import getProcessOutputAndValue

from twisted_sockshare import SockShareServerFactory

FLOOD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "flood.py")


def resident() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


async def main(reactor: object, args: argparse.Namespace) -> None:
    held: list[Deferred[bytes]] = []

    def handler(payload: bytes) -> bytes | Deferred[bytes]:
        if args.no_read:
            return payload
        d: Deferred[bytes] = Deferred()
        held.append(d)
        return d

    factory = SockShareServerFactory(handler, maxInFlight=args.max_in_flight)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    gc.collect()
    before = resident()
    command = [FLOOD, str(port.getHost().port), "--requests", str(args.requests)] + (
        ["--no-read"] if args.no_read else []
    )
    flood = getProcessOutputAndValue(sys.executable, command, env=os.environ, reactor=reactor)
    flood.addErrback(lambda _: None)
    await deferLater(reactor, args.seconds, lambda: None)
    growth = resident() - before
    stats = factory.stats()
    print(
        f"maxInFlight={args.max_in_flight} {'client not reading' if args.no_read else 'handler not answering'}: "
        f"{len(held)} requests held, {stats['requests']} read, paused connections {stats['pausedConnections']}, "
        f"RSS growth {growth / (1 << 20):.1f} MiB after {args.seconds:g} s"
    )
    os._exit(0)  # the flooder is left behind on purpose; its socket closes with us


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-in-flight", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=9.0)
    parser.add_argument("--no-read", action="store_true")
    arguments = parser.parse_args()
    react(main, [arguments])
