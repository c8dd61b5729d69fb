"""
End to end: C{twistd -n sockshare-server} and C{twistd -n sockshare-client}
as real processes, driven by a real HTTP client.
"""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from twisted_sockshare import SockShareClientFactory

from .helpers import readAll
from .processes import Twistd


class EndToEndTests(TestCase):
    """
    The demo gateway in front of the demo backend.
    """

    timeout = 120

    async def startBackend(self, *args: str) -> Twistd:
        backend = Twistd("sockshare-server", "--listen", "tcp:0:interface=127.0.0.1", *args)
        self.addCleanup(backend.kill)
        await backend.started()
        return backend

    async def startGateway(self, backendPort: int, *args: str) -> Twistd:
        gateway = Twistd(
            "sockshare-client",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--backend",
            f"tcp:127.0.0.1:{backendPort}",
            *args,
        )
        self.addCleanup(gateway.kill)
        await gateway.started()
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, pool=self.pool)
        return gateway

    async def post(self, gateway: Twistd, body: bytes) -> tuple[int, bytes]:
        response = await self.agent.request(
            b"POST",
            b"http://127.0.0.1:%d/request" % gateway.port,
            Headers(),
            _Body(body),
        )
        return response.code, await readAll(response)

    async def getJson(self, gateway: Twistd, path: str) -> dict:
        response = await self.agent.request(b"GET", b"http://127.0.0.1:%d/%s" % (gateway.port, path.encode()))
        return json.loads(await readAll(response))

    async def backendStats(self, backend: Twistd) -> dict:
        """
        Ask the backend itself (over our own connection, which it counts too).
        """
        client = SockShareClientFactory(f"tcp:127.0.0.1:{backend.port}", reactor)
        try:
            return json.loads(await client.request(b"!stats"))
        finally:
            await client.close()

    async def burst(self, strategy: str, *gatewayArgs: str) -> int:
        """
        500 concurrent API requests; how many connections the backend saw.
        """
        backend = await self.startBackend("--delay", "1.0")
        gateway = await self.startGateway(backend.port, "--strategy", strategy, *gatewayArgs)
        before = (await self.backendStats(backend))["connectionsOpened"]
        results = await gatherResults([ensureDeferred(self.post(gateway, b"req %d" % i)) for i in range(500)])
        self.assertEqual(results, [(200, b"req %d" % i) for i in range(500)])
        after = (await self.backendStats(backend))["connectionsOpened"]
        stats = await self.getJson(gateway, "stats")
        self.assertEqual(stats["strategy"], strategy)
        self.assertEqual(stats["responses"], 500)
        return after - before - 1

    async def test_sharedUsesOneConnection(self) -> None:
        """
        500 concurrent requests through the shared gateway: the backend sees
        1 connection.  A linger longer than the burst makes this hold however
        slowly a loaded machine opens the 500 HTTP connections (with
        close-at-zero the count may touch zero between two of them).
        """
        self.assertEqual(await self.burst("shared", "--idle-timeout", "30"), 1)

    async def test_perRequestUsesOneEach(self) -> None:
        """The legacy strategy: the backend sees 500 connections."""
        self.assertEqual(await self.burst("per-request"), 500)

    async def test_backendStopAndRestart(self) -> None:
        """With the backend gone the gateway answers 502 quickly; once it is back, 200."""
        backend = await self.startBackend()
        gateway = await self.startGateway(backend.port, "--connect-timeout", "5")
        self.assertEqual(await self.post(gateway, b"hello"), (200, b"hello"))
        port = backend.port
        backend.kill()
        start = reactor.seconds()
        code, body = await self.post(gateway, b"anyone?")
        self.assertEqual(code, 502)
        self.assertIn(b"ConnectFailed", body)
        self.assertLess(reactor.seconds() - start, 5)
        restarted = await self.startBackend("--listen", f"tcp:{port}:interface=127.0.0.1")
        self.assertEqual(restarted.port, port)
        self.assertEqual(await self.post(gateway, b"back"), (200, b"back"))

    async def test_twoBackends(self) -> None:
        """--backend twice: requests spread over both; with one killed, all go to the other, none fails."""
        first, second = await self.startBackend(), await self.startBackend()
        gateway = await self.startGateway(first.port, "--backend", f"tcp:127.0.0.1:{second.port}")
        results = await gatherResults([ensureDeferred(self.post(gateway, b"a%d" % i)) for i in range(50)])
        self.assertEqual(results, [(200, b"a%d" % i) for i in range(50)])
        served = [(await self.backendStats(b))["requests"] - 1 for b in (first, second)]
        self.assertEqual(sum(served), 50)
        self.assertTrue(all(n > 0 for n in served), served)
        first.kill()
        before = (await self.backendStats(second))["requests"]
        results = [await self.post(gateway, b"b%d" % i) for i in range(20)]
        self.assertEqual(results, [(200, b"b%d" % i) for i in range(20)])
        # The other one served them all (and this stats request): whether the
        # dead one was tried first (a failed connect, retried) or avoided.
        self.assertEqual((await self.backendStats(second))["requests"] - before, 21)

    async def test_errorStatuses(self) -> None:
        """RemoteError is a 502 saying so; a timeout is a 504."""
        backend = await self.startBackend()
        gateway = await self.startGateway(backend.port, "--request-timeout", "0.5")
        code, body = await self.post(gateway, b"!error out of stock")
        self.assertEqual(code, 502)
        self.assertIn(b"(RemoteError): RuntimeError: out of stock", body)
        code, body = await self.post(gateway, b"!sleep 5")
        self.assertEqual(code, 504)
        self.assertIn(b"RequestTimeout", body)

    async def test_sigtermDrains(self) -> None:
        """SIGTERM lets in-flight requests finish, closes the connection and exits 0."""
        backend = await self.startBackend()
        gateway = await self.startGateway(backend.port)
        inFlight = self.post(gateway, b"!sleep 1")
        from twisted.internet.defer import ensureDeferred
        from twisted.internet.task import deferLater

        pending = ensureDeferred(inFlight)
        for _ in range(100):
            if (await self.backendStats(backend))["requests"] >= 2:
                break
            await deferLater(reactor, 0.05)
        gateway.terminate()
        self.assertEqual(await pending, (200, b"slept"))
        self.assertEqual(await gateway.exited(), 0)
        self.assertIn("Closing the client", gateway.log())


class _Body:
    """
    A fixed request body for Agent.
    """

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer):  # type: ignore[no-untyped-def]
        consumer.write(self.body)
        from twisted.internet.defer import succeed

        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass
