"""
Coverage-guided fuzzing of both protocols with atheris: any bytes, in any
chunks, into the server protocol and the client protocol.  Nothing may
escape C{dataReceived}, the decoders may never buffer more than one frame,
and every client request fires exactly once.

    python fuzz/atheris_protocols.py -runs=200000      (CI runs this)
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from twisted.internet.interfaces import IStreamClientEndpoint
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from zope.interface import implementer

    from twisted_sockshare import SockShareClientFactory, SockShareServerFactory
    from twisted_sockshare.connection import ConnectionState
    from twisted_sockshare.wire import BUDGET_SIZE, HEADER_SIZE

MAX_PAYLOAD = 64


@implementer(IStreamClientEndpoint)
class _Endpoint:
    def __init__(self) -> None:
        self.protocol = None

    def connect(self, factory):  # type: ignore[no-untyped-def]
        from twisted.internet.defer import succeed

        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(StringTransport())
        return succeed(self.protocol)


def _chunks(data: atheris.FuzzedDataProvider) -> list[bytes]:
    pieces = []
    while data.remaining_bytes():
        pieces.append(data.ConsumeBytes(data.ConsumeIntInRange(1, 40)))
    return pieces


def _server(pieces: list[bytes]) -> None:
    factory = SockShareServerFactory(lambda p: p[::-1], maxPayload=MAX_PAYLOAD)
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(StringTransport())
    for piece in pieces:
        protocol.dataReceived(piece)
        # One frame at most: a TIMED_REQUEST's budget rides above maxPayload.
        assert protocol._decoder.buffered < HEADER_SIZE + MAX_PAYLOAD + BUDGET_SIZE
    stats = factory.stats()
    assert stats["responses"] + stats["errors"] == stats["requests"]


def _client(pieces: list[bytes]) -> None:
    endpoint = _Endpoint()
    client = SockShareClientFactory(endpoint, Clock(), maxPayload=MAX_PAYLOAD, requestTimeout=None)  # type: ignore[arg-type]
    fired: list[object] = []
    for i in range(4):
        client.request(b"%d" % i).addBoth(fired.append)
    protocol = endpoint.protocol
    for piece in pieces:
        if protocol.state is not ConnectionState.LIVE:  # type: ignore[union-attr]
            break
        protocol.dataReceived(piece)  # type: ignore[union-attr]
        assert protocol._decoder.buffered < HEADER_SIZE + MAX_PAYLOAD  # type: ignore[union-attr]
    assert len(fired) + client.pending == 4
    for result in fired:
        if hasattr(result, "trap"):
            result.trap(Exception)  # type: ignore[attr-defined]


def testOneInput(raw: bytes) -> None:
    data = atheris.FuzzedDataProvider(raw)
    toServer = data.ConsumeBool()
    pieces = _chunks(data)
    if toServer:
        _server(pieces)
    else:
        _client(pieces)


def main() -> None:
    from twisted.logger import globalLogBeginner

    globalLogBeginner.beginLoggingTo([], discardBuffer=True, redirectStandardIO=False)
    atheris.Setup(sys.argv, testOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
