"""
Fault injection on loopback: a backend that crashes, restarts, stops
reading, answers with errors, half-frames or resets, and a slow-loris client
against the server.  Every scenario checks that each request's Deferred
fired exactly once with a documented error, nothing is left pending, no file
descriptor leaked, and the client serves normally afterwards.
"""

from __future__ import annotations

from collections import Counter

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, clientFromString, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from twisted_sockshare import SockShareClientFactory, SockShareServerFactory
from twisted_sockshare.wire import REQUEST, encodeFrame

from .faults import FaultyBackend, keepCalling, openFileDescriptors
from .helpers import RecordingEndpoint, waitUntil

#: The errors a request may fail with when the backend misbehaves.
DOCUMENTED = {
    "ConnectFailed",
    "ConnectionDropped",
    "RequestTimeout",
    "RemoteError",
    "TooManyPending",
    "ProtocolViolation",
}


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


async def outcomes(requests: list[Deferred[bytes]]) -> Counter[str]:
    """
    Wait for every request; count the outcomes by error class (C{ok} for a reply).
    """
    seen: Counter[str] = Counter()

    def record(result: object) -> None:
        seen["ok" if not isinstance(result, Failure) else type(result.value).__name__] += 1

    await gatherResults([request.addBoth(record) for request in requests])
    return seen


class FaultTests(TestCase):
    timeout = 60

    async def setUpBackend(self) -> FaultyBackend:
        self.fds = openFileDescriptors()
        backend = FaultyBackend(reactor)
        await backend.start()
        self.addCleanup(backend.stop)
        return backend

    async def assertHealthy(self, client: SockShareClientFactory, backend: FaultyBackend) -> None:
        """
        Nothing pending, the client serves again, and once it and the backend
        are closed no file descriptor is left behind.
        """
        self.assertEqual(client.pending, 0)
        s = client.stats()
        self.assertEqual(s["requests"], s["responses"] + s["remoteErrors"] + s["failures"])
        backend.mode, backend.reading = "answer", True
        self.assertEqual(await client.request(b"after"), b"after")
        await client.close()
        await backend.stop()
        await waitUntil(lambda: openFileDescriptors() == self.fds, f"back to {self.fds} file descriptors", 5)

    async def test_killedAndRestartedUnderLoad(self) -> None:
        """The backend crashes and comes back five times under a steady load of 20 callers."""
        backend = await self.setUpBackend()
        client = SockShareClientFactory(backend.endpoint(), reactor, requestTimeout=2, connectTimeout=1)
        stopped = []
        done = ensureDeferred(keepCalling(client.request, 20, 50, until=lambda: bool(stopped)))
        for restart in range(5):
            await sleep(0.3)
            opened = client.stats()["connectionsOpened"]
            await backend.stop()
            await sleep(0.1)
            await backend.start()
            # The next crash comes once the client is back (however long a
            # loaded machine takes), not at a fixed moment.
            await waitUntil(
                lambda opened=opened: client.stats()["connectionsOpened"] > opened,  # type: ignore[misc]
                f"reconnected after crash {restart}",
            )
        stopped.append(True)
        outcomes = await done
        self.assertEqual(sum(outcomes.seen.values()), outcomes.sent)  # each request fired once
        self.assertLessEqual(set(outcomes.errors), {"ConnectionDropped", "ConnectFailed"})
        self.assertGreater(sum(outcomes.errors.values()), 0)
        # Served between the crashes (well over 1,000 on an idle machine).
        self.assertGreater(outcomes.seen["ok"], 100)
        self.assertGreaterEqual(client.stats()["connectionsOpened"], 6)
        await self.assertHealthy(client, backend)

    async def test_backendStopsReading(self) -> None:
        """
        A backend that accepts but never reads: at most maxPending requests
        are buffered, the rest are refused at once; the requests time out
        alone (each sends a CANCEL), and since nothing came on the connection
        since they were written, a PING follows: no byte within pingTimeout
        resets the connection, which frees the buffer.
        """
        backend = await self.setUpBackend()
        backend.reading = False
        client = SockShareClientFactory(backend.endpoint(), reactor, maxPending=50, requestTimeout=1.0, pingTimeout=0.5)
        seen = await outcomes([client.request(b"x" * 65536) for _ in range(60)])
        self.assertEqual((seen["TooManyPending"], seen["RequestTimeout"]), (10, 50))
        await waitUntil(lambda: client.stats()["connectionsClosed"] > 0, "the silent connection reset", 5)
        self.assertEqual(client.stats()["connectionsClosed"], 1)
        await self.assertHealthy(client, backend)

    async def test_everyMisbehaviour(self) -> None:
        """
        Each way of misbehaving fails the requests it touches with its
        documented error.  Each mode gets a client of its own: a connection
        left stalled mid-frame by one mode would otherwise answer for the
        next (until a PING finds it silent).
        """
        backend = await self.setUpBackend()
        expected = {
            "answer": {"ok"},
            "error": {"RemoteError"},
            "closeMidFrame": {"ConnectionDropped"},
            "stallMidFrame": {"RequestTimeout"},
            "reset": {"ConnectionDropped"},
            "silent": {"RequestTimeout"},
            "slow": {"ok"},
        }
        for mode, allowed in expected.items():
            client = SockShareClientFactory(backend.endpoint(), reactor, requestTimeout=0.5, pingTimeout=0.2)
            backend.mode = mode
            seen = await outcomes([client.request(b"%d" % i) for i in range(10)])
            self.assertEqual(sum(seen.values()), 10, mode)
            self.assertLessEqual(set(seen), allowed, (mode, seen))
            if mode != "slow":
                await client.close()
        await self.assertHealthy(client, backend)

    async def test_modesSwitchedUnderLoad(self) -> None:
        """The backend's behaviour changes every 0.2 s under load; only documented errors result."""
        backend = await self.setUpBackend()
        backend.delay = 0.05
        client = SockShareClientFactory(backend.endpoint(), reactor, requestTimeout=0.3, pingTimeout=0.2)
        done = ensureDeferred(keepCalling(client.request, 10, 2.0))
        for mode in ["error", "slow", "closeMidFrame", "answer", "stallMidFrame", "reset", "silent", "answer"]:
            backend.mode = mode
            await sleep(0.2)
        outcomes = await done
        self.assertEqual(sum(outcomes.seen.values()), outcomes.sent)
        self.assertLessEqual(set(outcomes.errors), DOCUMENTED)
        self.assertEqual(outcomes.errors["WrongReply"], 0)
        # A connection the "silent" mode left stuck is reset by its PING.
        await waitUntil(lambda: client.pending == 0, "nothing pending", 5)
        await self.assertHealthy(client, backend)

    async def test_lifetimeHandoverLosesNothing(self) -> None:
        """Connections renewed every 0.2 s under load: no request fails at a handover."""
        backend = await self.setUpBackend()
        backend.mode, backend.delay = "slow", 0.05
        client = SockShareClientFactory(backend.endpoint(), reactor, maxLifetime=0.2, idleTimeout=None)
        outcomes = await keepCalling(client.request, 10, 1.5)
        self.assertEqual(dict(outcomes.seen), {"ok": outcomes.sent})
        self.assertGreaterEqual(client.stats()["connectionsRetired"], 4)
        self.assertGreaterEqual(backend.accepted, 5)
        await self.assertHealthy(client, backend)

    async def test_orphansRetireTheConnection(self) -> None:
        """
        With resetOnTimeout=False, a backend slower than the timeout leaves
        orphans; past maxOrphans the connection is retired, and the late
        replies are discarded.
        """
        backend = await self.setUpBackend()
        backend.mode, backend.delay = "slow", 0.3
        client = SockShareClientFactory(
            backend.endpoint(), reactor, requestTimeout=0.1, resetOnTimeout=False, maxOrphans=3, idleTimeout=None
        )
        seen = await outcomes([client.request(b"%d" % i) for i in range(2)])
        self.assertEqual(seen, {"RequestTimeout": 2})
        await waitUntil(lambda: client.stats()["lateResponses"] == 2, "both late replies", 5)
        self.assertEqual((client.stats()["lateResponses"], client.stats()["connectionsRetired"]), (2, 0))
        seen = await outcomes([client.request(b"%d" % i) for i in range(5)])
        self.assertEqual(seen, {"RequestTimeout": 5})
        self.assertEqual(client.stats()["connectionsRetired"], 1)
        # Retired, and closed once nothing is in flight.
        await waitUntil(lambda: len(backend.connections) == 0, "the retired connection closed", 5)
        await self.assertHealthy(client, backend)

    async def test_stoppedListening(self) -> None:
        """A backend that is gone fails requests fast with ConnectFailed; it is retried when back."""
        backend = await self.setUpBackend()
        client = SockShareClientFactory(backend.endpoint(), reactor)
        await backend.stop()
        start = reactor.seconds()
        seen = await outcomes([client.request(b"x") for _ in range(5)])
        self.assertEqual(seen, {"ConnectFailed": 5})
        self.assertLess(reactor.seconds() - start, 2)
        await backend.start()
        await sleep(0.3)  # the client backs off after failed connects (at most 0.2 s after one)
        await self.assertHealthy(client, backend)


class SlowLorisTests(TestCase):
    timeout = 30

    async def test_halfFrameClosedByServer(self) -> None:
        """A client that sends half a frame and stalls is cut off after idleTimeout; others are served."""
        fds = openFileDescriptors()
        factory = SockShareServerFactory(bytes.upper, idleTimeout=0.3)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        lost: Deferred[None] = Deferred()

        class Loris(Protocol):
            def connectionLost(self, reason: Failure) -> None:
                lost.callback(None)

        loris = await connectProtocol(endpoint, Loris())
        loris.transport.write(encodeFrame(1, REQUEST, b"never finished")[:11])  # type: ignore[union-attr]
        client = SockShareClientFactory(endpoint, reactor, idleTimeout=0)
        self.assertEqual(await client.request(b"hi"), b"HI")
        await lost.addTimeout(5, reactor)
        self.assertEqual(factory.stats()["idleClosed"], 1)
        await client.close()
        await port.stopListening()
        await waitUntil(lambda: openFileDescriptors() == fds, f"back to {fds} file descriptors", 5)


class KeepAliveTests(TestCase):
    timeout = 30

    async def test_keepAliveOptions(self) -> None:
        """keepAlive turns on TCP keepalive probes with the given idle time; the default leaves them off."""
        import socket

        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(SockShareServerFactory(bytes))
        self.addCleanup(port.stopListening)
        endpoint = f"tcp:127.0.0.1:{port.getHost().port}"
        for keepAlive, expected in [(None, 0), (30.0, 1)]:
            recorder = RecordingEndpoint(clientFromString(reactor, endpoint))
            client = SockShareClientFactory(recorder, reactor, keepAlive=keepAlive, idleTimeout=None)
            await client.request(b"x")
            handle = recorder.protocols[-1].transport.getHandle()  # type: ignore[attr-defined]
            self.assertEqual(bool(handle.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)), bool(expected))
            if keepAlive is not None and hasattr(socket, "TCP_KEEPIDLE"):
                self.assertEqual(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE), 30)
                self.assertEqual(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL), 10)
                self.assertEqual(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT), 3)
            await client.close()
        self.assertRaises(ValueError, SockShareClientFactory, endpoint, reactor, keepAlive=0.5)


class HostileClientTests(TestCase):
    timeout = 60

    async def test_hugeFrameAnnounced(self) -> None:
        """A client announcing a 4 GiB frame is dropped at once; the server allocates nothing for it."""
        import struct

        factory = SockShareServerFactory(bytes.upper)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        lost: Deferred[None] = Deferred()

        class Liar(Protocol):
            def connectionLost(self, reason: Failure) -> None:
                lost.callback(None)

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        liar = await connectProtocol(endpoint, Liar())
        liar.transport.write(struct.pack(">IIB", 0xFFFFFFFF, 1, REQUEST) + b"x" * 1000)  # type: ignore[union-attr]
        await lost.addTimeout(5, reactor)
        self.assertEqual(factory.stats()["violations"], 1)

    async def test_manyConnections(self) -> None:
        """2,000 connections at once to one server are all served, and all closed afterwards."""
        fds = openFileDescriptors()
        factory = SockShareServerFactory(bytes.upper)
        port = await TCP4ServerEndpoint(reactor, 0, backlog=2048, interface="127.0.0.1").listen(factory)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        clients = [SockShareClientFactory(endpoint, reactor, idleTimeout=None) for _ in range(2000)]
        replies = await gatherResults([client.request(b"c%d" % i) for i, client in enumerate(clients)])
        self.assertEqual(replies, [b"C%d" % i for i in range(2000)])
        self.assertEqual(factory.stats()["connections"], 2000)
        await gatherResults([client.close() for client in clients])
        await port.stopListening()
        await waitUntil(lambda: factory.stats()["connections"] == 0, "every server connection closed")
        await waitUntil(lambda: openFileDescriptors() == fds, f"back to {fds} file descriptors", 5)
