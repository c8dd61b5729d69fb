"""
Regression tests for what new users found in 0.1.0: each failed before the
core redesign and passes after it.
"""

from __future__ import annotations

import math

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare import (
    ClientClosed,
    ProtocolViolation,
    RequestTimeout,
    SockShareClientFactory,
)
from twisted_sockshare.codecs import Delimited, LengthPrefixed, Multiplexed
from twisted_sockshare.connection import ConnectionState

from .helpers import FakeEndpoint


class NonBytesPayloadTests(SynchronousTestCase):
    """
    Finding 2: a payload that is not bytes fails at once with TypeError,
    counted in C{rejected}, touching nothing else.
    """

    def test_firstRequestText(self) -> None:
        """A str as the first request fails at once; the bytes requests behind it are sent and answered."""
        for codec in (Multiplexed(), Delimited(), LengthPrefixed()):
            endpoint, clock = FakeEndpoint(), Clock()
            client = SockShareClientFactory(endpoint, clock, codec=codec, requestTimeout=None)
            f = self.failureResultOf(client.request("text"), TypeError)  # type: ignore[arg-type]
            self.assertIn("takes bytes, not str", str(f.value))
            self.assertEqual(endpoint.attempts, [])
            d = client.request(b"bytes")
            endpoint.last.succeed()
            self.assertTrue(endpoint.last.transport.value())
            self.assertNoResult(d)
            stats = client.stats()
            self.assertEqual((stats["rejected"], stats["requests"], client.pending), (1, 1, 1), codec)
            closed = client.close()
            d.cancel()
            self.failureResultOf(d, CancelledError)
            endpoint.last.lose()
            self.successResultOf(closed)

    def test_textOnOpenConnection(self) -> None:
        """On an open connection a str fails at once and the pending count does not move."""
        endpoint, clock = FakeEndpoint(), Clock()
        client = SockShareClientFactory(endpoint, clock)
        first = client.request(b"one")
        endpoint.last.succeed()
        written = endpoint.last.transport.value()
        for bad in ("text", bytearray(b"x"), memoryview(b"x"), 7, None):
            self.failureResultOf(client.request(bad), TypeError)  # type: ignore[arg-type]
        self.assertEqual(client.pending, 1)
        self.assertEqual(client.stats()["rejected"], 5)
        self.assertEqual(endpoint.last.transport.value(), written)
        endpoint.last.respond(0, b"ONE")
        self.assertEqual(self.successResultOf(first), b"ONE")


class CloseBoundTests(SynchronousTestCase):
    """
    Finding 3: close() waits at most closeTimeout for pending requests, then
    fails them with ClientClosed and aborts.
    """

    def test_silentBackendDefaults(self) -> None:
        """With default options and a silent backend, close() ends after closeTimeout (10 s), not 30."""
        endpoint, clock = FakeEndpoint(), Clock()
        client = SockShareClientFactory(endpoint, clock)
        d = client.request(b"x")
        endpoint.last.succeed()
        closed = client.close()
        clock.advance(9.9)
        self.assertNoResult(closed)
        self.assertNoResult(d)
        clock.advance(0.1)
        f = self.failureResultOf(d, ClientClosed)
        self.assertIn("closeTimeout=10.0", str(f.value))
        self.assertTrue(endpoint.last.transport.aborted)
        endpoint.last.drop()
        self.successResultOf(closed)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(client.pending, 0)

    def test_noRequestTimeout(self) -> None:
        """With requestTimeout=None and closeTimeout=2, close() ends after 2 s."""
        endpoint, clock = FakeEndpoint(), Clock()
        client = SockShareClientFactory(endpoint, clock, requestTimeout=None, closeTimeout=2)
        ds = [client.request(b"x") for _ in range(3)]
        endpoint.last.succeed()
        closed = client.close()
        clock.advance(2)
        for d in ds:
            self.failureResultOf(d, ClientClosed)
        endpoint.last.drop()
        self.successResultOf(closed)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stillConnecting(self) -> None:
        """Requests still waiting for a connection that never comes fail with ClientClosed too."""
        endpoint, clock = FakeEndpoint(), Clock()
        client = SockShareClientFactory(endpoint, clock, connectTimeout=None, closeTimeout=1)
        d = client.request(b"x")
        closed = client.close()
        clock.advance(1)
        self.failureResultOf(d, ClientClosed)
        self.assertTrue(endpoint.last.cancelled)
        self.successResultOf(closed)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_answeredInTime(self) -> None:
        """Requests answered within closeTimeout succeed, and the close timer is cancelled."""
        endpoint, clock = FakeEndpoint(), Clock()
        client = SockShareClientFactory(endpoint, clock, closeTimeout=5)
        d = client.request(b"x")
        endpoint.last.succeed()
        closed = client.close()
        clock.advance(4)
        endpoint.last.respond(0, b"ok")
        self.assertEqual(self.successResultOf(d), b"ok")
        endpoint.last.lose()
        self.successResultOf(closed)
        self.assertEqual(clock.getDelayedCalls(), [])


class OptionCheckTests(SynchronousTestCase):
    """
    Finding 4: every option is checked in the constructor, with a message
    naming it and its value.
    """

    def test_notANumber(self) -> None:
        """NaN and infinity are refused for every time option."""
        for name in ("idleTimeout", "connectTimeout", "requestTimeout", "closeTimeout", "keepAlive", "maxLifetime"):
            for value in (math.nan, math.inf):
                e = self.assertRaises(ValueError, SockShareClientFactory, FakeEndpoint(), Clock(), **{name: value})
                self.assertIn(name, str(e))
                self.assertIn(repr(value), str(e))

    def test_wrongTypes(self) -> None:
        """A value of the wrong type is a TypeError naming the option and the value."""
        for name, value in [
            ("idleTimeout", "0.5"),
            ("connectTimeout", "10"),
            ("requestTimeout", [1]),
            ("closeTimeout", None),
            ("maxPending", 1.5),
            ("maxPending", True),
            ("maxPayload", "1024"),
            ("maxOrphans", 2.0),
            ("resetOnTimeout", 1),
            ("codec", "multiplexed"),
        ]:
            e = self.assertRaises(TypeError, SockShareClientFactory, FakeEndpoint(), Clock(), **{name: value})
            self.assertIn(name, str(e))
            self.assertIn(repr(value), str(e))

    def test_badEndpoints(self) -> None:
        """An endpoint that is neither an endpoint nor a string, or a bad string, is named in the error."""
        e = self.assertRaises(TypeError, SockShareClientFactory, 9000, Clock())
        self.assertIn("9000", str(e))
        e = self.assertRaises(ValueError, SockShareClientFactory, "tcp:127.0.0.1", Clock())
        self.assertIn("'tcp:127.0.0.1'", str(e))
        e = self.assertRaises(ValueError, SockShareClientFactory, "nonsense:x", Clock())
        self.assertIn("'nonsense:x'", str(e))

    def test_goodValuesAccepted(self) -> None:
        """Whole numbers where seconds are asked, None where allowed, and the boundaries work."""
        client = SockShareClientFactory(
            FakeEndpoint(), Clock(), idleTimeout=0, connectTimeout=None, requestTimeout=1, closeTimeout=1, keepAlive=1
        )
        self.assertEqual(client.options.keepAlive, 1)


class RetiringViolationTests(SynchronousTestCase):
    """
    Finding 1: a retiring connection that breaks the protocol fails its
    requests once, and is left for good (the flags of 0.1.0 diverged here).
    """

    def test_retiringConnectionBreaksProtocol(self) -> None:
        """Its requests fail with ProtocolViolation, once; it closes; the client goes on with a fresh connection."""
        endpoint, clock = FakeEndpoint(), Clock()
        client = SockShareClientFactory(endpoint, clock, maxLifetime=1, idleTimeout=None, requestTimeout=None)
        stuck = client.request(b"1")
        old = endpoint.last
        old.succeed()
        clock.advance(2)
        fresh = client.request(b"2")
        self.assertIs(old.protocol.state, ConnectionState.RETIRING)  # type: ignore[attr-defined]
        old.protocol.dataReceived(b"\x00\x00\x00\x01junk")  # type: ignore[attr-defined]
        old.protocol.dataReceived(b"\x00\x00\x00\x01junk")  # type: ignore[attr-defined]
        self.failureResultOf(stuck, ProtocolViolation)
        self.assertIs(old.protocol.state, ConnectionState.CLOSING)  # type: ignore[attr-defined]
        self.assertTrue(old.transport.aborted)
        old.drop()
        self.assertIs(old.protocol.state, ConnectionState.LOST)  # type: ignore[attr-defined]
        endpoint.last.succeed()
        endpoint.last.respond(0, b"two")
        self.assertEqual(self.successResultOf(fresh), b"two")
        s = client.stats()
        self.assertEqual((s["failures"], s["responses"], s["pending"], s["connectionsClosed"]), (1, 1, 0, 1))

    def test_retiringRequestTimesOut(self) -> None:
        """A timeout on a retiring connection resets it; its other requests fail with ConnectionDropped."""
        endpoint, clock = FakeEndpoint(), Clock()
        client = SockShareClientFactory(
            endpoint, clock, maxLifetime=1, idleTimeout=None, requestTimeout=3, resetOnTimeout=True
        )
        first = client.request(b"1")
        old = endpoint.last
        old.succeed()
        clock.advance(1)
        second = client.request(b"2")  # retires the old connection
        self.assertNoResult(second)
        clock.advance(2)
        self.failureResultOf(first, RequestTimeout)
        self.assertTrue(old.transport.aborted)
        self.assertNoResult(second)
        old.drop()
        self.assertNoResult(second)
        clock.advance(1)
        self.failureResultOf(second, RequestTimeout)
        self.assertEqual(client.pending, 0)
        self.assertEqual(client.stats()["failures"], 2)
