"""
L{twisted_sockshare._sendnow}: what a connection writes after a chunk goes
out at once when nothing is buffered before it, and through C{write()}
otherwise, in order.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionLost
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from twisted_sockshare import SockShareClientFactory, SockShareServerFactory
from twisted_sockshare._sendnow import canSendNow, sendNow


class ScriptedSocket(FileDescriptor):
    """
    A reactor socket whose C{send()} takes C{takes} bytes a call (all if
    L{None}), or fails with C{error}.
    """

    def __init__(self, takes: int | None = None, error: Exception | None = None) -> None:
        super().__init__(MemoryReactor())
        self.connected = 1
        self.takes = takes
        self.error = error
        self.sent: list[bytes] = []

    def writeSomeData(self, data: bytes) -> int | Exception:  # type: ignore[override]
        if self.error is not None:
            return self.error
        taken = bytes(data[: self.takes] if self.takes is not None else data)
        self.sent.append(taken)
        return len(taken)

    def buffered(self) -> bytes:
        return self.dataBuffer[self.offset :] + b"".join(self._tempDataBuffer)


class SendNowTests(SynchronousTestCase):
    def test_sentAtOnceWhenNothingBuffered(self) -> None:
        """Nothing buffered: the bytes are sent with one send(), and the reactor is not asked to write."""
        socket = ScriptedSocket()
        sendNow(socket, b"frame")
        self.assertEqual((socket.sent, socket.buffered()), ([b"frame"], b""))
        self.assertEqual(socket.reactor.getWriters(), [])  # type: ignore[attr-defined]

    def test_restBufferedAfterPartialSend(self) -> None:
        """What the socket does not take is buffered, after what it took."""
        socket = ScriptedSocket(takes=2)
        sendNow(socket, b"frame")
        self.assertEqual((socket.sent, socket.buffered()), ([b"fr"], b"ame"))
        self.assertEqual(socket.reactor.getWriters(), [socket])  # type: ignore[attr-defined]

    def test_errorLeavesAllToTheReactor(self) -> None:
        """A failed send sends nothing: every byte is buffered, and the reactor's write finds the error."""
        socket = ScriptedSocket(error=ConnectionLost())
        sendNow(socket, b"frame")
        self.assertEqual(socket.buffered(), b"frame")

    def test_queuedBehindBufferedBytes(self) -> None:
        """Bytes already buffered go first: the new ones are buffered after them, nothing is sent."""
        socket = ScriptedSocket()
        socket.write(b"first")
        sendNow(socket, b"second")
        self.assertEqual((socket.sent, socket.buffered()), ([], b"firstsecond"))
        socket.doWrite()
        self.assertEqual(socket.sent, [b"firstsecond"])

    def test_notConnected(self) -> None:
        """A socket no longer connected is not sent to."""
        socket = ScriptedSocket()
        socket.connected = 0
        sendNow(socket, b"frame")
        self.assertEqual((socket.sent, socket.buffered()), ([], b""))

    def test_onlyReactorSockets(self) -> None:
        """A test's transport is not a reactor socket."""
        self.assertTrue(canSendNow(ScriptedSocket()))
        self.assertFalse(canSendNow(StringTransport()))


class RealSocketTests(TestCase):
    """
    Over loopback TCP, with this Twisted: the requests made by the callbacks
    of a chunk's replies are sent at once, not through C{write()}.
    """

    async def connect(self, maxPayload: int = 1_048_576, fragmentSize: int | None = 16_384) -> SockShareClientFactory:
        """
        A client of a server on loopback that answers each payload upper-cased.
        """
        server = SockShareServerFactory(
            lambda payload: payload.upper(), maxPayload=maxPayload, fragmentSize=fragmentSize
        )
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server)
        self.addCleanup(port.stopListening)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        client = SockShareClientFactory(endpoint, reactor, maxPayload=maxPayload, fragmentSize=fragmentSize)
        self.addCleanup(client.close)
        return client

    async def test_followUpsSentAtOnce(self) -> None:
        """A follow-up made by a reply's callback does not go through write()."""
        client = await self.connect()
        self.assertEqual(await client.request(b"first"), b"FIRST")
        (connection,) = client._connections
        transport = connection.transport
        self.assertTrue(canSendNow(transport), f"{type(transport)} has changed: sendNow no longer applies")
        written: list[bytes] = []
        original = transport.write  # type: ignore[union-attr]

        def write(data: bytes) -> None:
            written.append(data)
            original(data)

        transport.write = write  # type: ignore[method-assign, union-attr]
        # Resume outside the first reply's chunk (a coroutine resumes inside
        # the callbacks of what it awaited).
        await deferLater(reactor, 0, lambda: None)
        followUp = await client.request(b"a").addCallback(lambda reply: client.request(reply + b"b"))
        self.assertEqual(followUp, b"AB")
        # The first request went through write() (made outside any chunk);
        # its follow-up, made while its reply was delivered, did not.
        self.assertEqual(len(written), 1, written)

    async def test_moreThanOneSendTakes(self) -> None:
        """
        Follow-ups far larger than one send() takes, sent whole (neither
        side sends fragments): the rest goes through write() after what was
        sent, and every reply comes back whole.
        """
        size = 8 * 1024 * 1024
        client = await self.connect(maxPayload=size + 16, fragmentSize=None)
        await client.request(b"connect")
        (connection,) = client._connections
        transport = connection.transport
        written: list[int] = []
        original = transport.write  # type: ignore[union-attr]

        def write(data: bytes) -> None:
            written.append(len(data))
            original(data)

        transport.write = write  # type: ignore[method-assign, union-attr]
        await deferLater(reactor, 0, lambda: None)
        payloads = [bytes([97 + i]) * size for i in range(2)]

        def followUps(reply: bytes) -> Deferred[list[bytes]]:
            return gatherResults([client.request(payload) for payload in payloads])

        replies = await client.request(b"go").addCallback(followUps)
        self.assertEqual(replies, [payload.upper() for payload in payloads])
        # write() had the request made outside a chunk, then the rest of the
        # follow-ups: less than both, more than nothing.
        self.assertEqual(len(written), 2, written)
        self.assertLess(0, written[1])
        self.assertLess(written[1], 2 * (size + 9))
        self.assertEqual(client.stats()["connectionsOpened"], 1)
