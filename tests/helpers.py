"""
Fakes shared by the tests: an endpoint whose connection attempts the test
completes by hand, and transports that refuse misuse.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from inspect import isawaitable
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from zope.interface import implementer

from twisted_sockshare import SockShareClientFactory
from twisted_sockshare.codecs import Multiplexed
from twisted_sockshare.wire import (
    BUDGET_SIZE,
    ERROR,
    HELLO_MAGIC,
    NOTE_MAGIC,
    PONG,
    REQUEST,
    RESPONSE,
    SERVER_RECEIVES,
    TIMED_REQUEST,
    FrameDecoder,
    encodeFrame,
)


class StrictTransport(StringTransport):
    """
    A L{StringTransport} that fails the test if anything is written after
    C{loseConnection} or C{abortConnection} was called.
    """

    aborted = False
    #: How many times write or writeSequence was called.
    writeCalls = 0

    def write(self, data: bytes) -> None:
        assert not self.disconnecting, "wrote to a closing transport"
        self.writeCalls += 1
        super().write(data)

    def writeSequence(self, seq: list[bytes]) -> None:  # type: ignore[override]
        assert not self.disconnecting, "wrote to a closing transport"
        self.writeCalls += 1
        for data in seq:
            super().write(data)

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


@dataclass
class Attempt:
    """
    One call of L{FakeEndpoint.connect}: the test decides how it ends.
    """

    factory: IProtocolFactory
    deferred: Deferred
    protocol: object = None
    transport: StrictTransport | None = None

    def succeed(self) -> tuple:
        """
        Connect: build the protocol, give it a transport, fire the Deferred.
        """
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 9000))
        transport = StrictTransport()
        protocol.makeConnection(transport)
        self.protocol, self.transport = protocol, transport
        self.deferred.callback(protocol)
        return protocol, transport

    def fail(self, error: Exception) -> None:
        self.deferred.errback(Failure(error))

    cancelled: bool = False

    def lose(self, error: Exception | None = None) -> None:
        """
        The connection ends (as C{connectionLost} would be called by the reactor).
        """
        assert self.protocol is not None
        self.protocol.connectionLost(Failure(error or ConnectionDone("closed")))  # type: ignore[attr-defined]

    def drop(self) -> None:
        self.lose(ConnectionLost("peer vanished"))

    def sentFrames(self, kind: int, announcements: bool = False) -> list[tuple[int, bytes]]:
        """
        Every frame of C{kind} written so far, as C{(requestId, payload)};
        without the PINGs that announce (wire version 3's HELLO and
        DEADLINE notes) unless C{announcements}.
        """
        assert self.transport is not None
        frames = FrameDecoder(2**31, SERVER_RECEIVES).feed(self.transport.value())
        return [
            (requestId, payload)
            for requestId, sent, payload in frames
            if sent == kind and (announcements or not payload.startswith((HELLO_MAGIC, NOTE_MAGIC)))
        ]

    def sentRequests(self) -> list[tuple[int, bytes]]:
        """
        Every request frame written so far, as C{(requestId, payload)}.
        """
        return self.sentFrames(REQUEST)

    def sentAnyRequests(self) -> list[tuple[int, bytes]]:
        """
        Every request written so far, as REQUEST or (wire v3) TIMED_REQUEST
        frame, in order, as C{(requestId, payload)} without the budget.
        """
        assert self.transport is not None
        frames = FrameDecoder(2**31, SERVER_RECEIVES, BUDGET_SIZE).feed(self.transport.value())
        return [
            (requestId, payload[BUDGET_SIZE:] if kind == TIMED_REQUEST else payload)
            for requestId, kind, payload in frames
            if kind in (REQUEST, TIMED_REQUEST)
        ]

    def speakV2(self) -> None:
        """
        Send what a server of wire version 2 sends first: the PONG echoing
        the client's HELLO (the client then writes every request at once,
        not only its first L{INITIAL_WINDOW}).
        """
        self.protocol.dataReceived(encodeFrame(0, PONG, b""))  # type: ignore[attr-defined]

    def respond(self, requestId: int, payload: bytes) -> None:
        self.protocol.dataReceived(encodeFrame(requestId, RESPONSE, payload))  # type: ignore[attr-defined]

    def respondError(self, requestId: int, message: str) -> None:
        self.protocol.dataReceived(encodeFrame(requestId, ERROR, message.encode()))  # type: ignore[attr-defined]


@implementer(IStreamClientEndpoint)
@dataclass
class FakeEndpoint:
    """
    An endpoint that records connection attempts; the test completes each
    with L{Attempt.succeed} or L{Attempt.fail}.
    """

    attempts: list[Attempt] = field(default_factory=list)

    def connect(self, factory: IProtocolFactory) -> Deferred:
        attempt = Attempt(factory, Deferred(lambda d: setattr(attempt, "cancelled", True)))
        self.attempts.append(attempt)
        return attempt.deferred

    @property
    def last(self) -> Attempt:
        return self.attempts[-1]


def tempPath(case: SynchronousTestCase, name: str = "temp") -> str:
    """
    An absolute path, not yet created, inside a fresh directory of the
    system's temporary area that is removed when C{case} ends.  Use it
    instead of C{mktemp()}, which under pytest writes into the working tree.
    """
    directory = tempfile.mkdtemp(prefix="sockshare-test-")
    case.addCleanup(shutil.rmtree, directory, True)
    return os.path.join(directory, name)


@implementer(IStreamClientEndpoint)
class RecordingEndpoint:
    """
    Wraps a real endpoint and keeps every protocol it connected, so a test
    can look at a connection's socket.
    """

    def __init__(self, wrapped: IStreamClientEndpoint) -> None:
        self.wrapped = wrapped
        self.protocols: list[object] = []

    def connect(self, factory: IProtocolFactory) -> Deferred:
        def record(protocol: object) -> object:
            self.protocols.append(protocol)
            return protocol

        return self.wrapped.connect(factory).addCallback(record)


def readAll(response: Any) -> Deferred[bytes]:
    """
    The whole body of an HTTP client response.
    """
    done: Deferred[bytes] = Deferred()
    parts: list[bytes] = []
    collector = Protocol()
    collector.dataReceived = parts.append  # type: ignore[method-assign]

    def ended(reason: Failure) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):
            done.callback(b"".join(parts))
        else:
            done.errback(reason)

    collector.connectionLost = ended  # type: ignore[method-assign]
    response.deliverBody(collector)
    return done


def connectServer(factory: Any) -> tuple[Any, StringTransport]:
    """
    A server protocol of C{factory} on a L{StringTransport}.
    """
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


class SmallIds(Multiplexed):
    """This project's frames, with request ids from 0 to C{maxRequestId} only."""

    def __init__(self, maxRequestId: object) -> None:
        self.maxRequestId = maxRequestId


async def waitUntil(
    condition: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 20.0, interval: float = 0.05
) -> None:
    """
    Wait, on the global reactor, until C{condition()} (a bool, or an
    awaitable of one) is true: for tests on real sockets or processes,
    whose progress takes as long as the machine's load makes it, instead of
    a fixed sleep.

    @param what: what is waited for, for the failure's message.
    @raise AssertionError: if it is still false after C{timeout} seconds.
    """
    from twisted.internet import reactor

    deadline = reactor.seconds() + timeout  # type: ignore[attr-defined]
    while True:
        met = condition()
        if isawaitable(met):
            met = await met
        if met:
            return
        if reactor.seconds() > deadline:  # type: ignore[attr-defined]
            raise AssertionError(f"not within {timeout} s: {what}")
        await deferLater(reactor, interval, lambda: None)  # type: ignore[arg-type]


def oneTurn(clock: Clock) -> None:
    """
    Run what is due on C{clock} now, and not what that schedules for now:
    one turn of a reactor (L{Clock.advance} would run those too).
    """
    due = [call for call in clock.getDelayedCalls() if call.getTime() <= clock.seconds()]
    for call in due:
        if call.active():
            clock.calls.remove(call)
            call.called = 1
            call.func(*call.args, **call.kw)


class ClientTestCase(SynchronousTestCase):
    """
    Builds a client on a L{FakeEndpoint} and a L{Clock}.
    """

    def makeClient(self, **options: object) -> SockShareClientFactory:
        self.clock = Clock()
        self.endpoint = FakeEndpoint()
        self.client = SockShareClientFactory(self.endpoint, self.clock, **options)  # type: ignore[arg-type]
        return self.client

    def assertInvariant(self) -> None:
        """
        Every accepted request is answered, failed or pending.
        """
        s = self.client.stats()
        self.assertEqual(s["requests"], s["responses"] + s["remoteErrors"] + s["failures"] + s["pending"])
        self.assertGreaterEqual(s["pending"], 0)
