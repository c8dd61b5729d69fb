"""
Wire version 3 against version 2, as fleets upgrade one process at a time:
the code of the last version 2 release, taken from git history, runs in a
subprocess on loopback, against this code, both ways, under load; no
request may fail because of the version.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from twisted_sockshare import RequestTimeout, SockShareClientFactory, SockShareServerFactory

ROOT = Path(__file__).resolve().parent.parent
#: The last commit whose code speaks wire version 2.
V2_COMMIT = "0df03d881e3358717565b3431bd378d15399a9ab"

#: A version 2 server: echoes, after a millisecond for payloads starting
#: with "slow"; prints its port.
SERVER = """
import sys
from twisted.internet import reactor
from twisted.internet.task import deferLater
import twisted_sockshare
from twisted_sockshare import SockShareServerFactory
assert twisted_sockshare.__file__.startswith(sys.argv[1]), twisted_sockshare.__file__

def handler(payload):
    if payload.startswith(b"slow"):
        return deferLater(reactor, 0.001, lambda: payload)
    return payload

port = reactor.listenTCP(0, SockShareServerFactory(handler, maxInFlight=50), interface="127.0.0.1")
print(port.getHost().port, flush=True)
reactor.run()
"""

#: A version 2 client: WAVES waves of SIZE concurrent requests to the port,
#: half of them slow, each wave on a fresh connection (idleTimeout=0);
#: prints what happened.
CLIENT = """
import json, sys
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.task import deferLater
import twisted_sockshare
from twisted_sockshare import SockShareClientFactory
assert twisted_sockshare.__file__.startswith(sys.argv[1]), twisted_sockshare.__file__
port, waves, size = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
client = SockShareClientFactory(f"tcp:127.0.0.1:{port}", reactor, requestTimeout=20, idleTimeout=0)
outcome = {"ok": 0, "wrong": 0, "failed": []}

async def one(payload):
    try:
        reply = await client.request(payload)
    except Exception as error:
        outcome["failed"].append(repr(error))
    else:
        outcome["ok" if reply == payload else "wrong"] += 1

async def main():
    for wave in range(waves):
        payloads = [b"%s %d %d" % (b"slow" if i % 2 else b"fast", wave, i) for i in range(size)]
        await DeferredList([ensureDeferred(one(payload)) for payload in payloads])
        await deferLater(reactor, 0.001)  # the connection closes, idle
    outcome["stats"] = client.stats()
    await client.close()
    print(json.dumps(outcome), flush=True)
    reactor.stop()

reactor.callWhenRunning(lambda: ensureDeferred(main()))
reactor.run()
"""


def version2Tree() -> str:
    """
    The package as it was at L{V2_COMMIT}, extracted under a new temporary
    directory: its path.
    """
    if not (ROOT / ".git").exists():
        raise SkipTest("needs the project's git history (a checkout, not an sdist)")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", V2_COMMIT, "twisted_sockshare"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise SkipTest(f"the history lacks {V2_COMMIT}: {archive.stderr.decode(errors='replace')}")
    tree = tempfile.mkdtemp(prefix="sockshare-v2-")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tree, filter="data")
    return tree


def environment(tree: str) -> dict[str, str]:
    """
    The environment of a process that imports the package from C{tree}
    (run it there too: C{python -c} puts its directory first).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = tree
    return env


class InteropTests(TestCase):
    timeout = 60

    async def test_newClientOldServer(self) -> None:
        """
        This client, 20 waves of 200 concurrent requests with timeouts, each
        wave on a fresh connection (so budgets go in notes, and requests
        beyond the initial window wait, until the server's first frame),
        against the version 2 server: every request answered, none failed;
        the connections found the server speaks version 2.
        """
        tree = version2Tree()
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, tree], env=environment(tree), cwd=tree, stdout=subprocess.PIPE, text=True
        )
        self.addCleanup(server.wait, 10)
        self.addCleanup(server.kill)
        assert server.stdout is not None
        port = int(server.stdout.readline())
        client = SockShareClientFactory(f"tcp:127.0.0.1:{port}", reactor, requestTimeout=20, idleTimeout=0)
        self.addCleanup(client.close)
        hellos: list[object] = []

        async def one(payload: bytes, timeout: float | None) -> bytes:
            reply = await client.request(payload, timeout=timeout)
            connection = client._state.connection
            if connection is not None:
                hellos.append(connection.hello)
            return reply

        for wave in range(20):
            payloads = [b"%s %d %d" % (b"slow" if i % 2 else b"fast", wave, i) for i in range(200)]
            calls = [Deferred.fromCoroutine(one(p, 5.0 if i % 3 else None)) for i, p in enumerate(payloads)]
            results = await DeferredList(calls, consumeErrors=True)
            self.assertEqual([result for ok, result in results if not ok], [])
            self.assertEqual([result for _, result in results], payloads)
            await deferLater(reactor, 0.001)  # the connection closes, idle
        stats = client.stats()
        self.assertEqual((stats["responses"], stats["failures"], stats["remoteErrors"]), (4000, 0, 0))
        self.assertEqual(stats["connectionsOpened"], 20)
        self.assertTrue(hellos)
        self.assertEqual([hello for hello in hellos if hello is not None], [])

    async def test_oldClientNewServer(self) -> None:
        """
        The version 2 client, 20 waves of 200 concurrent requests, each on a
        fresh connection, against this server: every request answered, none
        failed, and the server saw no HELLO.
        """
        tree = version2Tree()
        hellos: list[object] = []

        def handler(payload: bytes) -> object:
            if payload.startswith(b"slow"):
                return deferLater(reactor, 0.001, lambda: payload)
            return payload

        class Recording(SockShareServerFactory):
            def protocolLost(self, protocol: object) -> None:
                hellos.append(protocol.hello)  # type: ignore[attr-defined]
                super().protocolLost(protocol)  # type: ignore[arg-type]

        factory = Recording(handler, maxInFlight=50)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        command = [sys.executable, "-c", CLIENT, tree, str(port.getHost().port), "20", "200"]
        process = await _output(command, environment(tree))
        outcome = json.loads(process)
        self.assertEqual((outcome["ok"], outcome["wrong"], outcome["failed"]), (4000, 0, []))
        stats = factory.stats()
        self.assertEqual((stats["requests"], stats["responses"], stats["errors"]), (4000, 4000, 0))
        self.assertEqual(stats["connectionsOpened"], 20)
        self.assertEqual(len(hellos), stats["connectionsOpened"])
        self.assertEqual([hello for hello in hellos if hello is not None], [])


class RealDeadlineTests(TestCase):
    timeout = 30

    async def test_handlerEndsAtTheCallersDeadline(self) -> None:
        """
        Real sockets, wire v3 both sides: a 2 s handler called with a 0.5 s
        budget - the client sees RequestTimeout at 0.5 s, and the server
        cancels the handler at the deadline, long before it would end.
        """
        cancelledAt: list[float] = []

        def handler(payload: bytes) -> Deferred[bytes]:
            d: Deferred[bytes] = Deferred(lambda _: cancelledAt.append(reactor.seconds()))
            later = reactor.callLater(2.0, lambda: d.called or d.callback(payload))  # type: ignore[attr-defined]
            d.addBoth(lambda result: (later.active() and later.cancel(), result)[1])
            return d

        factory = SockShareServerFactory(handler)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        client = SockShareClientFactory(f"tcp:127.0.0.1:{port.getHost().port}", reactor)
        self.addCleanup(client.close)
        start = reactor.seconds()  # type: ignore[attr-defined]
        with self.assertRaises(RequestTimeout):
            await client.request(b"slow", timeout=0.5)
        timedOut = reactor.seconds() - start  # type: ignore[attr-defined]
        for _ in range(100):
            if cancelledAt:
                break
            await deferLater(reactor, 0.01)
        self.assertEqual(len(cancelledAt), 1)
        cancelled = cancelledAt[0] - start
        print(f"RequestTimeout after {timedOut:.3f} s; handler cancelled after {cancelled:.3f} s")
        self.assertGreaterEqual(timedOut, 0.5)
        self.assertLess(cancelled, 1.5)  # cancelled, not ended: it would have run 2 s
        stats = factory.stats()
        self.assertEqual(stats["deadlineExceeded"] + stats["cancelsReceived"], 1)


async def _output(command: list[str], env: dict[str, str]) -> str:
    """
    What C{command} prints, run without blocking the reactor.
    """
    process = subprocess.Popen(
        command, env=env, cwd=env["PYTHONPATH"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    for _ in range(600):
        if process.poll() is not None:
            break
        await deferLater(reactor, 0.05)
    else:
        process.kill()
    stdout, stderr = process.communicate(timeout=10)
    if process.returncode != 0:
        raise AssertionError(f"{command[:3]} exited with {process.returncode}:\n{stderr[-3000:]}")
    return stdout
