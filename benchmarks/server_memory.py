"""
The server's memory per request in flight: C{N} requests (64-byte
payloads) are read on one connection by the library's server, whose handler
holds each one's Deferred unfired; the memory traced by tracemalloc while
they are all in flight, less what was traced before, divided by C{N}.

The handler's own part (one Deferred per request, which any server whose
handlers answer later holds too) is measured alone and shown beside it.

    python benchmarks/server_memory.py [--in-flight 10000]
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from twisted_sockshare import SockShareServerFactory
from twisted_sockshare.wire import REQUEST, encodeFrame


def perRequest(inFlight: int, payloadSize: int = 64) -> tuple[float, float, int]:
    """
    Bytes per in-flight request of the server with its handler's Deferreds,
    of the handler's Deferreds alone, and how many were in flight.
    """
    held: list[Deferred[bytes]] = []

    def later(payload: bytes) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        held.append(d)
        return d

    factory = SockShareServerFactory(later, clock=Clock(), maxInFlight=inFlight)
    protocol = factory.buildProtocol(None)
    assert protocol is not None
    protocol.makeConnection(StringTransport())
    stream = b"".join(encodeFrame(i, REQUEST, b"x" * payloadSize) for i in range(inFlight))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for start in range(0, len(stream), 65_536):
        protocol.dataReceived(stream[start : start + 65_536])
    gc.collect()
    server = tracemalloc.get_traced_memory()[0] - before
    count = factory.stats()["inFlight"]
    tracemalloc.stop()
    for d in held:
        d.callback(b"done")
    held.clear()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    alone = [later(b"x" * payloadSize) for _ in range(inFlight)]
    deferreds = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del alone
    return server / count, deferreds / inFlight, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--in-flight", type=int, default=10_000)
    args = parser.parse_args()
    server, deferreds, count = perRequest(args.in_flight)
    print(f"{count:,} requests in flight on one connection (64-byte payloads)")
    print(f"server, handler's Deferreds included: {server:,.0f} bytes per request in flight")
    print(f"the handler's Deferreds alone:        {deferreds:,.0f} bytes per request")
    print(f"the server's own part:                {server - deferreds:,.0f} bytes per request")


if __name__ == "__main__":
    main()
