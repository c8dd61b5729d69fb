"""
The FIFO codec against a real server that nobody here wrote: Redis, from
Debian's packages (C{.ci/run} installs it), started by the test on a UNIX
socket in a temporary directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

from twisted_sockshare import RemoteError, SockShareClientFactory
from twisted_sockshare.codecs import Delimited

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


class _Server(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred[None] = Deferred()
        self.output = b""

    def outReceived(self, data: bytes) -> None:
        self.output = (self.output + data)[-4000:]

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


async def startRedis(test: TestCase) -> str:
    """
    Start redis-server on a UNIX socket; stop it when C{test} ends.

    @return: the client endpoint string.
    """
    if not os.access(REDIS, os.X_OK):
        raise SkipTest(f"redis-server is not installed ({REDIS}); .ci/run installs it: apt-get install redis-server")
    # A short path: UNIX socket paths are limited to 107 bytes.
    directory = tempfile.mkdtemp(prefix="sockshare-redis-")
    test.addCleanup(shutil.rmtree, directory, True)
    socket = os.path.join(directory, "redis.sock")
    server = _Server()
    args = [REDIS, "--port", "0", "--unixsocket", socket, "--save", "", "--appendonly", "no", "--dir", directory]
    process = reactor.spawnProcess(server, REDIS, args, env=dict(os.environ))  # type: ignore[attr-defined]

    async def stop() -> None:
        if not server.ended.called:
            process.signalProcess("TERM")
        await server.ended

    test.addCleanup(lambda: Deferred.fromCoroutine(stop()))
    for _ in range(100):
        if os.path.exists(socket):
            return f"unix:{socket}"
        if server.ended.called:
            break
        await deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"redis-server did not start: {server.output.decode(errors='replace')}")


class RedisTests(TestCase):
    timeout = 60

    async def test_pipelinedCallersGetTheirOwnReplies(self) -> None:
        """
        1,000 concurrent callers pipeline over one shared connection; each
        gets exactly its own reply (each increments its own key by its own
        amount), and an unknown command fails only its own request.
        """
        endpoint = await startRedis(self)
        client = SockShareClientFactory(endpoint, reactor, codec=Delimited(errorPrefix=b"-"))
        requests = [client.request(b"INCRBY key%d %d" % (i, i + 1)) for i in range(1000)]
        bad = client.request(b"NOSUCHCOMMAND")
        more = [client.request(b"INCRBY key%d %d" % (i, i + 1)) for i in range(1000)]
        self.assertEqual(await gatherResults(requests), [b":%d" % (i + 1) for i in range(1000)])
        error = await self.assertFailure(bad, RemoteError)
        self.assertIn("unknown command", str(error))
        self.assertEqual(await gatherResults(more), [b":%d" % (2 * (i + 1)) for i in range(1000)])
        stats = client.stats()
        self.assertEqual((stats["connectionsOpened"], stats["responses"], stats["remoteErrors"]), (1, 2000, 1))
        self.assertEqual(stats["peakPending"], 2001)
        await client.close()
