"""
What the client refuses when it is given it: a payload that is not bytes
(at once, touching nothing else), and options out of range (in the
constructor, with a message naming the option and its value).
"""

from __future__ import annotations

import math

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare import (
    SockShareClientFactory,
)
from twisted_sockshare.codecs import Delimited, LengthPrefixed, Multiplexed

from .helpers import FakeEndpoint


class NonBytesPayloadTests(SynchronousTestCase):
    """
    A payload that is not bytes fails at once with TypeError,
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


class OptionCheckTests(SynchronousTestCase):
    """
    Every option is checked in the constructor, with a message
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
