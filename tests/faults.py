"""
Fault injection: a backend on loopback whose behaviour a test switches while
a load runs, and the process's open file descriptors, to check for leaks.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from twisted_sockshare.wire import ERROR, REQUEST, RESPONSE, SERVER_RECEIVES, FrameDecoder, encodeFrame

#: What a L{FaultyBackend} does with each request, by mode.
MODES = (
    "answer",  # echo at once
    "slow",  # echo after .delay seconds
    "error",  # answer with an ERROR frame
    "silent",  # never answer
    "closeMidFrame",  # write half a response, then close
    "stallMidFrame",  # write half a response, then nothing
    "reset",  # abort the connection (RST)
)


def openFileDescriptors() -> int:
    """
    How many sockets this process has open: the file descriptors a client or
    server can leak (other kinds, such as Twisted opening C{/dev/null} once,
    are not counted).
    """
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{name}").startswith("socket:")
        except OSError:  # closed meanwhile (the listing's own descriptor)
            pass
    return count


@dataclass
class Outcomes:
    """
    What a load run saw: C{sent} requests, each counted once in C{seen} by
    outcome (C{"ok"}, C{"WrongReply"}, or the error's class name).
    """

    sent: int = 0
    seen: Counter[str] = field(default_factory=Counter)

    @property
    def errors(self) -> Counter[str]:
        return Counter({name: count for name, count in self.seen.items() if name != "ok"})


async def keepCalling(
    request: Callable[[bytes], Deferred[bytes]],
    callers: int,
    seconds: float,
    until: Callable[[], bool] = lambda: False,
) -> Outcomes:
    """
    C{callers} callers, each sending its next request (its own payload, so a
    reply given to the wrong request shows) as soon as the previous one is
    answered, for C{seconds} or until C{until()} is true; fires once every
    request has an outcome.
    """
    outcomes = Outcomes()
    deadline = reactor.seconds() + seconds  # type: ignore[attr-defined]

    async def caller(number: int) -> None:
        payload = b"caller %d " % number * 4
        while reactor.seconds() < deadline and not until():  # type: ignore[attr-defined]
            outcomes.sent += 1
            d = request(payload)
            if d.called:  # failed at once: let the reactor run before the next
                await deferLater(reactor, 0.001)  # type: ignore[arg-type]
            try:
                outcomes.seen["ok" if await d == payload else "WrongReply"] += 1
            except Exception as error:
                outcomes.seen[type(error).__name__] += 1

    await gatherResults([ensureDeferred(caller(number)) for number in range(callers)])
    return outcomes


class _FaultyProtocol(Protocol):
    def __init__(self, backend: FaultyBackend) -> None:
        self._backend = backend
        self._decoder = FrameDecoder(1 << 24, SERVER_RECEIVES)
        # The slow mode's replies not sent yet.
        self._later: set[Any] = set()
        # After half a frame, nothing more is written on this connection
        # (anything more would corrupt the stream, not just cut it).
        self._broken = False

    def connectionMade(self) -> None:
        self._backend.connections.add(self)
        self._backend.accepted += 1
        if self._backend.reading is False:
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        for requestId, kind, payload in self._decoder.feed(data):
            if kind == REQUEST:  # a CANCEL, PING or PONG is ignored: a backend that does not care
                self._backend.requests += 1
                self._act(requestId, payload)

    def _act(self, requestId: int, payload: bytes) -> None:
        mode = self._backend.mode
        transport: Any = self.transport
        if self._broken:
            return
        frame = encodeFrame(requestId, RESPONSE, payload)
        if mode == "answer":
            transport.write(frame)
        elif mode == "slow":
            call = self._backend.reactor.callLater(self._backend.delay, self._late, frame)
            self._later.add(call)
        elif mode == "error":
            transport.write(encodeFrame(requestId, ERROR, b"RuntimeError: injected"))
        elif mode == "closeMidFrame":
            self._broken = True
            transport.write(frame[: len(frame) // 2])
            transport.loseConnection()
        elif mode == "stallMidFrame":
            self._broken = True
            transport.write(frame[: len(frame) // 2])
        elif mode == "reset":
            transport.abortConnection()
        elif mode != "silent":
            raise ValueError(f"unknown mode {mode!r}")

    def _late(self, frame: bytes) -> None:
        self._later = {call for call in self._later if call.active()}
        if self.connected and not self._broken:
            self.transport.write(frame)  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._backend.connections.discard(self)
        # The replies still to come have nobody to go to.
        for call in self._later:
            if call.active():
                call.cancel()
        self._later.clear()


class FaultyBackend(Factory):
    """
    A sockshare backend on a loopback port whose behaviour can be switched at
    any time: set L{mode} (one of L{MODES}), or L{reading} to C{False} to
    accept connections but never read them (the client's send buffer fills).
    L{stop} and L{start} kill it and bring it back on the same port.

    @ivar accepted: connections accepted so far.
    @ivar requests: requests received so far.
    """

    noisy = False

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.mode = "answer"
        self.delay = 0.1
        self.reading = True
        self.connections: set[_FaultyProtocol] = set()
        self.accepted = 0
        self.requests = 0
        self.portNumber = 0
        self._port: IListeningPort | None = None

    def buildProtocol(self, addr: object) -> _FaultyProtocol:
        return _FaultyProtocol(self)

    async def start(self) -> None:
        """
        Listen, on the same port as before if it was started already.
        """
        endpoint = TCP4ServerEndpoint(self.reactor, self.portNumber, backlog=1024, interface="127.0.0.1")
        self._port = await endpoint.listen(self)
        self.portNumber = self._port.getHost().port  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """
        Stop listening and abort every open connection (a crash, as the
        clients see it).
        """
        if self._port is not None:
            port, self._port = self._port, None
            await port.stopListening()
        for protocol in list(self.connections):
            protocol.transport.abortConnection()  # type: ignore[union-attr]

    def endpoint(self) -> TCP4ClientEndpoint:
        return TCP4ClientEndpoint(self.reactor, "127.0.0.1", self.portNumber)
