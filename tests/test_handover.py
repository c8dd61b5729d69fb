"""
Connections that take no more requests - every id of a small id space held,
or C{maxRequestsPerConnection} written - hand over to a fresh one, and
nothing fails because of it; idempotent requests lost with a connection the
server closed are sent again.  In memory, on one clock.
"""

from __future__ import annotations

from typing import Any

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare import ConnectionDropped, SockShareClientFactory

from .contract import PORTS, Backends
from .helpers import SmallIds


class HandoverTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.backends = Backends()
        self.reactor = self.backends.reactor
        self.handler = self.backends.handler

    def client(self, **options: Any) -> SockShareClientFactory:
        options.setdefault("requestTimeout", None)
        return SockShareClientFactory(f"tcp:127.0.0.1:{PORTS[0]}", self.reactor, **options)

    def track(self, client: SockShareClientFactory, payloads: list[bytes], **options: Any) -> list[list[object]]:
        results: list[list[object]] = []
        for payload in payloads:
            outcome: list[object] = []
            client.request(payload, **options).addBoth(outcome.append)
            results.append(outcome)
        return results

    def test_idSpaceFullHandsOver(self) -> None:
        """
        With ids 0 to 3, ten held requests are spread over three connections
        (4, 4, 2): none fails, none shares an id with another on its
        connection, and every one is answered.
        """
        client = self.client(codec=SmallIds(3))
        payloads = [b"hold %d" % i for i in range(10)]
        results = self.track(client, payloads)
        self.assertEqual(len(self.reactor.openLinks), 3)
        self.assertEqual(client.stats()["retiredOutOfIds"], 2)
        for payload in payloads:
            self.handler.answer(payload)
        self.assertEqual(results, [[payload] for payload in payloads])
        self.assertEqual(client.stats()["failures"], 0)

    def test_orphanedIdsStayHeld(self) -> None:
        """
        A custom codec has no CANCEL: the id of a cancelled request stays
        held until its late reply, so no later request's reply is taken for
        it; it counts toward the full id space.
        """
        client = self.client(codec=SmallIds(1), maxOrphans=None)
        first = client.request(b"hold a")
        first.addErrback(lambda failure: None)
        first.cancel()
        results = self.track(client, [b"hold b", b"hold c"])
        self.assertEqual(len(self.reactor.openLinks), 2)  # ids 0 (orphan) and 1 (b) held: c on a new one
        for payload in [b"hold a", b"hold b", b"hold c"]:
            self.handler.answer(payload)
        self.assertEqual(results, [[b"hold b"], [b"hold c"]])
        self.assertEqual(client.stats()["lateResponses"], 1)

    def test_waitingBeyondTheIdSpace(self) -> None:
        """
        Requests made while connecting that are more than the id space: the
        rest go to the next connection when it is full.
        """
        self.reactor.holding = True
        client = self.client(codec=SmallIds(1))
        payloads = [b"hold %d" % i for i in range(5)]
        results = self.track(client, payloads)
        for _ in range(3):
            self.reactor.release()
        self.assertEqual(len(self.reactor.openLinks), 3)
        for payload in payloads:
            self.handler.answer(payload)
        self.assertEqual(results, [[payload] for payload in payloads])

    def test_maxRequestsPerConnection(self) -> None:
        """
        250 requests with a cap of 100: three connections, each closed once
        it answered what it had; none fails.
        """
        client = self.client(maxRequestsPerConnection=100, idleTimeout=None)
        results = self.track(client, [b"echo %d" % i for i in range(250)])
        self.assertEqual(results, [[b"echo %d" % i] for i in range(250)])
        stats = client.stats()
        self.assertEqual((stats["connectionsOpened"], stats["retiredAtRequestLimit"]), (3, 2))
        self.assertEqual(len(self.reactor.openLinks), 1)
        self.assertEqual(self.backends.servers[PORTS[0]].stats()["requests"], 250)

    def test_optionsChecked(self) -> None:
        """A bad cap or id space is refused when the client is made, naming it."""
        for options, kind, name in [
            ({"maxRequestsPerConnection": 0}, ValueError, "maxRequestsPerConnection"),
            ({"maxRequestsPerConnection": 1.5}, TypeError, "maxRequestsPerConnection"),
            ({"codec": SmallIds(-1)}, ValueError, "maxRequestId"),
            ({"codec": SmallIds(2**32)}, ValueError, "maxRequestId"),
            ({"codec": SmallIds("16 bits")}, TypeError, "maxRequestId"),
        ]:
            with self.assertRaises(kind) as raised:
                self.client(**options)
            self.assertIn(name, str(raised.exception))


class IdempotentTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.backends = Backends()
        self.reactor = self.backends.reactor
        self.handler = self.backends.handler
        self.client = SockShareClientFactory(f"tcp:127.0.0.1:{PORTS[0]}", self.reactor, requestTimeout=None)

    def closeAll(self, clean: bool = True) -> None:
        for link in self.reactor.openLinks:
            link.closeFromServer(clean)

    def test_gracefulClosesResendEachTime(self) -> None:
        """
        A server that answers then closes cleanly, again and again: the
        idempotent request is sent again each time, not only once.
        """
        results: list[object] = []
        self.client.request(b"hold x", idempotent=True).addBoth(results.append)
        for round in range(5):
            answered: list[object] = []
            self.client.request(b"echo %d" % round).addBoth(answered.append)
            self.assertEqual(answered, [b"echo %d" % round])
            self.closeAll()
        self.handler.answer(b"hold x")
        self.assertEqual(results, [b"hold x"])
        self.assertEqual(self.client.stats()["retries"], 5)

    def test_budgetBoundsResets(self) -> None:
        """
        Resets (no byte from the server first) are retried within the budget:
        10% of the idempotent requests plus 10 a second over 10 s.
        """
        results: list[object] = []
        for i in range(2000):
            self.client.request(b"hold %d" % i, idempotent=True).addBoth(results.append)
        self.closeAll(clean=False)
        retries = self.client.stats()["retries"]
        self.assertEqual(retries, int(0.1 * 2000 + 10 * 10))
        # The server announced maxInFlight=1000: the client wrote 1000 and
        # held the rest, which were never written and go to the next
        # connection; of the written ones, those beyond the budget fail.
        failed = [r for r in results if isinstance(r, Failure)]
        self.assertEqual(len(failed), 1000 - retries)
        self.assertTrue(all(f.check(ConnectionDropped) for f in failed))
        self.assertEqual(self.client.pending, 2000 - len(failed))
