"""
Graceful restarts end to end, with real twistd processes: a backend stopped with
SIGTERM answers what is in flight and exits 0; under wrk load through the
gateway, a backend restarted with SIGTERM costs no request; one caller uses
a handful of backend connections, not one per request.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.client import Agent, readBody

from twisted_sockshare import SockShareClientFactory

from .helpers import waitUntil
from .processes import Twistd

POST_LUA = 'wrk.method = "POST"\nwrk.body = string.rep("x", 64)\n'


def sleep(seconds: float):  # type: ignore[no-untyped-def]
    return deferLater(reactor, seconds, lambda: None)


def needWrk() -> str:
    """
    wrk's path; .ci/run installs it (Debian's package), so in CI its absence
    is a failure, elsewhere a skip that says how to get it.
    """
    path = shutil.which("wrk")
    if path is None:
        if os.environ.get("CI"):
            raise AssertionError("wrk is not installed; .ci/run installs it: apt-get install wrk")
        raise SkipTest("wrk is not installed (apt-get install wrk); .ci/run installs it")
    return path


class GracefulBackendTests(TestCase):
    timeout = 120

    async def backend(self, *args: str) -> Twistd:
        process = Twistd("sockshare-server", *args)
        self.addCleanup(process.kill)
        await process.started()
        return process

    async def gateway(self, *backends: int) -> Twistd:
        flags = [f"--backend=tcp:127.0.0.1:{port}" for port in backends]
        process = Twistd("sockshare-client", "--listen", "tcp:0:interface=127.0.0.1", *flags)
        self.addCleanup(process.kill)
        await process.started()
        return process

    async def backendStats(self, port: int) -> dict:
        client = SockShareClientFactory(f"tcp:127.0.0.1:{port}", reactor, idleTimeout=0)
        try:
            return json.loads(await client.request(b"!stats"))
        finally:
            await client.close()

    async def wrk(self, gateway: Twistd, connections: int, seconds: float) -> tuple[int, int]:
        """Run wrk against the gateway; return (requests, non-2xx and socket errors)."""
        directory = tempfile.mkdtemp(prefix="sockshare-wrk-")
        self.addCleanup(shutil.rmtree, directory, True)
        script = os.path.join(directory, "post.lua")
        with open(script, "w") as f:
            f.write(POST_LUA)
        url = f"http://127.0.0.1:{gateway.port}/request"
        args = ["-t1", f"-c{connections}", f"-d{seconds}s", "-s", script, url]
        out, err, code = await getProcessOutputAndValue(needWrk(), args, env=os.environ)
        text = out.decode()
        self.assertEqual(code, 0, err)
        total = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
        bad = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", text))
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
        if errors:
            bad += sum(int(n) for n in errors.groups())
        return total, bad

    async def test_sigtermAnswersInFlightThenExitsZero(self) -> None:
        """SIGTERM with requests in flight: the backend answers them all, then exits 0."""
        backend = await self.backend("--listen", "tcp:0:interface=127.0.0.1", "--delay", "1.0")
        client = SockShareClientFactory(f"tcp:127.0.0.1:{backend.port}", reactor)
        inFlight = [client.request(b"slow %d" % i) for i in range(20)]
        for _ in range(100):
            if (await self.backendStats(backend.port))["requests"] >= 21:
                break
            await sleep(0.05)
        backend.terminate()
        self.assertEqual(await gatherResults(inFlight), [b"slow %d" % i for i in range(20)])
        self.assertEqual(client.stats()["goawaysReceived"], 1)
        self.assertEqual(await backend.exited(), 0, backend.log())
        await client.close()

    async def test_restartUnderLoadCostsNothing(self) -> None:
        """Under wrk through the gateway, one of two backends restarted with SIGTERM: zero non-2xx."""
        needWrk()
        first = await self.backend("--listen", "tcp:0:interface=127.0.0.1", "--delay", "0.01")
        second = await self.backend("--listen", "tcp:0:interface=127.0.0.1", "--delay", "0.01")
        gateway = await self.gateway(first.port, second.port)
        load = ensureDeferred(self.wrk(gateway, 16, 8))

        async def firstServing() -> bool:
            return (await self.backendStats(first.port))["responses"] > 200

        # Restarted once the load reaches it, not at a fixed moment.
        await waitUntil(firstServing, "the first backend serving the load", 5)
        first.terminate()
        self.assertEqual(await first.exited(), 0, first.log())
        restarted = await self.backend("--listen", f"tcp:{first.port}:interface=127.0.0.1", "--delay", "0.01")
        total, bad = await load
        self.assertGreater(total, 1000)
        self.assertEqual(bad, 0)

        async def restartedServes() -> bool:
            # More load while the gateway has not yet tried the restarted
            # backend again (it skips an endpoint for a backoff after failed
            # connects: longer on a loaded machine, where the restart is slow).
            if (await self.backendStats(restarted.port))["responses"] > 0:
                return True
            more, moreBad = await self.wrk(gateway, 4, 1)
            self.assertEqual(moreBad, 0)
            return False

        await waitUntil(restartedServes, "the restarted backend taking traffic again", 40)
        # What crossed the drain's GOAWAY was refused (wire v3) and sent to
        # the other backend: the gateway counts it, and failed nothing.
        agent = Agent(reactor)
        response = await agent.request(b"GET", b"http://127.0.0.1:%d/stats" % gateway.port)
        stats = json.loads(await readBody(response))
        print(f"through the restart: {total} requests, refusedRetried={stats['refusedRetried']}")
        # (wrk's last requests, cut off when it stops, count as cancelled.)
        self.assertEqual((stats["failures"] - stats["cancelled"], stats["remoteErrors"]), (0, 0))

    async def test_oneCallerFewConnections(self) -> None:
        """wrk -c1 through the gateway with default options: a handful of backend connections, not one per request."""
        backend = await self.backend("--listen", "tcp:0:interface=127.0.0.1")
        gateway = await self.gateway(backend.port)
        total, bad = await self.wrk(gateway, 1, 2)
        opened = (await self.backendStats(backend.port))["connectionsOpened"] - 1
        self.assertEqual(bad, 0)
        self.assertGreater(total, 200)
        self.assertLessEqual(opened, 3, f"{opened} backend connections for {total} requests")
