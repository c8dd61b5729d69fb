"""
TLS purely through endpoints: the shared client and the server need no TLS
code of their own.  Certificates come from a test authority made on the fly.
"""

from __future__ import annotations

import os
from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet import reactor, ssl
from twisted.internet.defer import gatherResults
from twisted.internet.endpoints import SSL4ServerEndpoint, clientFromString, serverFromString
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from twisted_sockshare import ConnectFailed, SockShareClientFactory, SockShareServerFactory
from twisted_sockshare.demo.tap import ClientOptions, ServerOptions

from .certificates import Authority, writeFiles
from .helpers import FakeEndpoint, tempPath


class TLSTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.authority = Authority()
        serverCert, serverKey = self.authority.issue("localhost")
        clientCert, clientKey = self.authority.issue("gateway", client=True)
        self.dir = tempPath(self)
        self.files = writeFiles(
            self.dir,
            **{
                "server.pem": serverCert,
                "server.key": serverKey,
                "client.pem": clientCert,
                "client.key": clientKey,
            },
        )
        self.trust = writeFiles(os.path.join(self.dir, "trust"), **{"ca.pem": self.authority.pem})
        self.factory = SockShareServerFactory(bytes.upper)

    async def listen(self, endpoint: Any) -> int:
        port = await endpoint.listen(self.factory)
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def clientString(self, port: int, trust: str | None = None, withCertificate: bool = True) -> str:
        description = f"tls:localhost:{port}:trustRoots={trust or os.path.dirname(self.trust['ca.pem'])}"
        if withCertificate:
            description += f":certificate={self.files['client.pem']}:privateKey={self.files['client.key']}"
        return description

    async def requireClientCertificate(self) -> int:
        """
        A server that only talks to clients with a certificate from the authority.
        """
        with open(self.files["server.pem"], "rb") as f:
            certificate = crypto.load_certificate(crypto.FILETYPE_PEM, f.read())
        with open(self.files["server.key"], "rb") as f:
            key = crypto.load_privatekey(crypto.FILETYPE_PEM, f.read())
        options = ssl.CertificateOptions(
            privateKey=key,
            certificate=certificate,
            verify=True,
            requireCertificate=True,
            caCerts=[crypto.load_certificate(crypto.FILETYPE_PEM, self.authority.pem)],
        )
        return await self.listen(SSL4ServerEndpoint(reactor, 0, options, interface="127.0.0.1"))

    async def test_endpointStrings(self) -> None:
        """An ssl: server string and a tls: client string are all it takes; requests share one connection."""
        port = await self.listen(
            serverFromString(
                reactor,
                f"ssl:0:interface=127.0.0.1:privateKey={self.files['server.key']}:certKey={self.files['server.pem']}",
            )
        )
        client = SockShareClientFactory(self.clientString(port, withCertificate=False), reactor)
        replies = await gatherResults([client.request(b"tls %d" % i) for i in range(20)])
        self.assertEqual(replies, [b"TLS %d" % i for i in range(20)])
        self.assertEqual(client.stats()["connectionsOpened"], 1)
        await client.close()

    async def test_clientCertificateChecked(self) -> None:
        """A server requiring a client certificate serves a client that has one, and refuses one that has not."""
        port = await self.requireClientCertificate()
        client = SockShareClientFactory(self.clientString(port), reactor)
        self.assertEqual(await client.request(b"mine"), b"MINE")
        await client.close()
        anonymous = SockShareClientFactory(self.clientString(port, withCertificate=False), reactor)
        error = await self.assertFailure(anonymous.request(b"x"), ConnectFailed)
        self.assertIn("TLS with", str(error))
        self.assertEqual(anonymous.stats()["connectFailures"], 1)
        await anonymous.close()

    async def test_untrustedServer(self) -> None:
        """A server certificate from another authority fails the request with ConnectFailed saying so."""
        port = await self.listen(
            serverFromString(
                reactor,
                f"ssl:0:interface=127.0.0.1:privateKey={self.files['server.key']}:certKey={self.files['server.pem']}",
            )
        )
        other = writeFiles(os.path.join(self.dir, "other"), **{"ca.pem": Authority("another CA").pem})
        client = SockShareClientFactory(self.clientString(port, trust=os.path.dirname(other["ca.pem"])), reactor)
        error = await self.assertFailure(client.request(b"x"), ConnectFailed)
        self.assertIn("certificate verify failed", str(error))
        await client.close()

    async def test_expiredServer(self) -> None:
        """An expired server certificate fails the request with ConnectFailed saying so."""
        certificate, key = self.authority.issue("localhost", expired=True)
        files = writeFiles(os.path.join(self.dir, "expired"), **{"server.pem": certificate, "server.key": key})
        port = await self.listen(
            serverFromString(
                reactor, f"ssl:0:interface=127.0.0.1:privateKey={files['server.key']}:certKey={files['server.pem']}"
            )
        )
        client = SockShareClientFactory(self.clientString(port, withCertificate=False), reactor)
        error = await self.assertFailure(client.request(b"x"), ConnectFailed)
        self.assertIn("certificate verify failed", str(error))
        await client.close()

    def test_twistdOptions(self) -> None:
        """The twistd plugins take TLS endpoint strings."""
        server = ServerOptions()
        server.parseOptions(
            [
                "--listen",
                f"ssl:0:interface=127.0.0.1:privateKey={self.files['server.key']}:certKey={self.files['server.pem']}",
            ]
        )
        client = ClientOptions()
        client.parseOptions(["--listen", "tcp:0", "--backend", self.clientString(9999)])
        self.assertIsNotNone(clientFromString(reactor, client["backend"]))


class HandshakeBackoffTests(SynchronousTestCase):
    def test_handshakeFailureBacksOff(self) -> None:
        """
        A TLS handshake that fails is a failed connect: the backend is not
        reachable, requests fail fast through the backoff, and the backoff
        grows with each handshake failure in a row.
        """
        clock = Clock()
        endpoint = FakeEndpoint()
        client = SockShareClientFactory(endpoint, clock, connectBackoff=lambda failures: 2.0**failures)
        for delay in (1.0, 2.0, 4.0):
            d = client.request(b"x")
            endpoint.last.succeed()
            endpoint.last.lose(SSL.Error([("SSL routines", "", "certificate verify failed")]))
            self.assertIn("TLS", self.failureResultOf(d, ConnectFailed).getErrorMessage())
            self.assertFalse(client.reachable)
            attempts = len(endpoint.attempts)
            self.failureResultOf(client.request(b"fast"), ConnectFailed)
            self.assertEqual(len(endpoint.attempts), attempts)
            clock.advance(delay - 0.01)
            self.failureResultOf(client.request(b"still backing off"), ConnectFailed)
            clock.advance(0.01)
        self.assertEqual(client.stats()["connectFailures"], 3)
