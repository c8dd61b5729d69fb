"""
Nagle's algorithm is turned off on TCP, and a transport without the option
(a UNIX socket, whose C{setTcpNoDelay} raises on Twisted 23.10) is left alone.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare import SockShareServerFactory
from twisted_sockshare._nodelay import setNoDelay
from twisted_sockshare.connection import SockShareClientProtocol
from twisted_sockshare.options import ClientOptions


class TCPTransport(StringTransport):
    noDelay: list[bool]

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.noDelay = [*getattr(self, "noDelay", []), enabled]


class UNIXTransport(StringTransport):
    def setTcpNoDelay(self, enabled: bool) -> None:
        raise OSError(95, "Operation not supported")


class Owner:
    endpointDescription = "unix:/socket"
    noisy = False


class NoDelayTests(SynchronousTestCase):
    def test_tcp(self) -> None:
        """On TCP it is turned on."""
        transport = TCPTransport()
        setNoDelay(transport)
        self.assertEqual(transport.noDelay, [True])

    def test_absentOrRefused(self) -> None:
        """A transport without the option, or refusing it, is left alone: nothing raises."""
        setNoDelay(StringTransport())
        setNoDelay(UNIXTransport())

    def test_bothEndsOverUNIX(self) -> None:
        """The client's and the server's connections are made over a transport that refuses it."""
        client = SockShareClientProtocol(Owner(), ClientOptions(), Clock())  # type: ignore[arg-type]
        client.makeConnection(UNIXTransport())
        server = SockShareServerFactory(lambda payload: payload, clock=Clock()).buildProtocol(None)
        assert server is not None
        server.makeConnection(UNIXTransport())
        for protocol in (client, server):
            self.assertFalse(protocol.transport.disconnecting)  # type: ignore[union-attr]
