"""
Tests of the benchmark engine: the load generators with fakes, the
contenders and the runner on loopback, and the report.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from twisted_sockshare import RemoteError
from twisted_sockshare.bench import backend
from twisted_sockshare.bench.contenders import KINDS, CountingEndpoint, Settings
from twisted_sockshare.bench.load import ClosedLoop, Tally, bursts, outstandingMemory, payloads
from twisted_sockshare.bench.mixed import Mix
from twisted_sockshare.bench.report import (
    ProgressLine,
    burstyTable,
    legend,
    memoryTable,
    ratios,
    render,
    summary,
    writeJSON,
)
from twisted_sockshare.bench.runner import Backend, Plan, Row, _Restarts, run
from twisted_sockshare.wire import CANCEL, CLIENT_RECEIVES, PING, PONG, REQUEST, RESPONSE, FrameDecoder, encodeFrame

from .helpers import tempPath


class Ticker:
    """
    A clock for the load generators that advances by one per reading.
    """

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


class TallyTests(SynchronousTestCase):
    def test_percentiles(self) -> None:
        """Percentiles come from the histogram, within its 1% resolution."""
        tally = Tally(seconds=2.0)
        for x in range(100, 0, -1):
            tally.addLatency(x / 1000)
        for fraction, expected in [(0.5, 0.051), (0.99, 0.100), (0.0, 0.001)]:
            found = tally.percentile(fraction)
            self.assertTrue(expected <= found <= expected * 1.011, (fraction, found))
        self.assertGreaterEqual(tally.percentile(0.99), 0.100)
        self.assertEqual(tally.requestsPerSecond, 50.0)
        self.assertEqual(Tally().percentile(0.99), 0.0)
        self.assertEqual(Tally().requestsPerSecond, 0.0)

    def test_memoryDoesNotGrow(self) -> None:
        """A million latencies take a few hundred buckets, and tiny ones are counted too."""
        tally = Tally()
        for i in range(1_000_000):
            tally.addLatency(0.0005 + (i % 1000) / 1e6)
        tally.addLatency(0.0)
        self.assertEqual(tally.completed, 1_000_001)
        self.assertLess(len(tally.latencies), 200)

    def test_recordErrors(self) -> None:
        """Failures are counted by class; a wrong reply is an error too."""
        tally = Tally()
        tally.record(b"a", b"a", 0.1)
        tally.record(b"b", b"a", 0.1)
        tally.record(Failure(RemoteError("x")), b"a", 0.1)
        self.assertEqual(dict(tally.errors), {"WrongReply": 1, "RemoteError": 1})
        self.assertEqual((tally.completed, tally.failed, tally.succeeded), (3, 2, 1))
        # The rate counts successes only.
        tally.seconds = 0.5
        self.assertEqual(tally.requestsPerSecond, 2.0)

    def test_payloadsDistinct(self) -> None:
        """Every caller has its own payload of the asked size."""
        sent = payloads(1000, 8)
        self.assertEqual(len(set(sent)), 1000)
        self.assertEqual({len(p) for p in sent[:10]}, {8})
        self.assertEqual(payloads(2, 0), [b"0:", b"1:"])


class ClosedLoopTests(SynchronousTestCase):
    def test_callersKeepConcurrency(self) -> None:
        """Each caller sends its next request when its previous one is answered, until the total."""
        waiting: list[tuple[bytes, Deferred[bytes]]] = []

        def request(payload: bytes) -> Deferred[bytes]:
            d: Deferred[bytes] = Deferred()
            waiting.append((payload, d))
            return d

        loop = ClosedLoop(request, payloads(3, 4), total=10, clock=Ticker())
        done = loop.run()
        self.assertEqual(len(waiting), 3)
        while waiting:
            payload, d = waiting.pop(0)
            self.assertLessEqual(len(waiting), 2)
            d.callback(payload)
        tally = self.successResultOf(done)
        self.assertEqual((tally.completed, tally.failed, loop.sent), (10, 0, 10))

    def test_synchronousFailuresDoNotRecurse(self) -> None:
        """Requests that fail at once loop instead of recursing."""
        loop = ClosedLoop(lambda p: fail(RemoteError("no")), payloads(2, 4), total=5000, clock=Ticker())
        tally = self.successResultOf(loop.run())
        self.assertEqual(tally.errors["RemoteError"], 5000)

    def test_synchronousSuccesses(self) -> None:
        """Requests answered at once are counted once each."""
        loop = ClosedLoop(succeed, payloads(4, 4), total=3000, clock=Ticker())
        tally = self.successResultOf(loop.run())
        self.assertEqual((tally.completed, tally.failed), (3000, 0))

    def test_duration(self) -> None:
        """With a duration, callers stop sending once it has passed."""
        clock = Ticker()
        loop = ClosedLoop(succeed, payloads(1, 4), duration=20, clock=clock)
        tally = self.successResultOf(loop.run())
        # Each request reads the clock twice (send, answer) and the check once.
        self.assertTrue(5 <= tally.completed <= 10, tally.completed)

    def test_raisingRequestIsAFailure(self) -> None:
        """A request function that raises counts as a failed request."""

        def request(payload: bytes) -> Deferred[bytes]:
            raise ValueError("too long")

        tally = self.successResultOf(ClosedLoop(request, payloads(2, 4), total=10, clock=Ticker()).run())
        self.assertEqual(dict(tally.errors), {"ValueError": 10})

    def test_stalledLoadAbandoned(self) -> None:
        """A load whose replies stop coming is abandoned; what is unanswered is counted."""
        from twisted_sockshare.bench.runner import _drive

        clock = Clock()
        lost: list[Deferred[bytes]] = []
        answered = [0]

        def request(payload: bytes) -> Deferred[bytes]:
            if answered[0] < 3:
                answered[0] += 1
                return succeed(payload)
            d: Deferred[bytes] = Deferred()
            lost.append(d)
            return d

        done = Deferred.fromCoroutine(_drive(clock, ClosedLoop(request, payloads(2, 4), total=100, clock=Ticker()), 5))
        self.assertNoResult(done)
        clock.advance(5)
        self.assertNoResult(done)
        clock.advance(5)
        tally = self.successResultOf(done)
        self.assertEqual((tally.completed, tally.errors["Unanswered"]), (3, 2))
        self.assertEqual(clock.getDelayedCalls(), [])
        lost[0].callback(b"late")  # ignored
        self.assertEqual(tally.completed, 3)

    def test_exactlyOneLimit(self) -> None:
        self.assertRaises(ValueError, ClosedLoop, succeed, [b""])
        self.assertRaises(ValueError, ClosedLoop, succeed, [b""], total=1, duration=1)

    def test_bursts(self) -> None:
        """Bursts send every payload at once, then wait for the gap."""
        clock = Clock()
        waiting: list[tuple[bytes, Deferred[bytes]]] = []

        def request(payload: bytes) -> Deferred[bytes]:
            d: Deferred[bytes] = Deferred()
            waiting.append((payload, d))
            return d

        done = Deferred.fromCoroutine(bursts(clock, request, payloads(5, 4), 3, 0.5, clock=Ticker()))
        for burst in range(3):
            self.assertEqual(len(waiting), 5, burst)
            for payload, d in waiting:
                d.callback(payload)
            waiting.clear()
            self.assertEqual(waiting, [])
            clock.advance(0.5)
        tally = self.successResultOf(done)
        self.assertEqual((tally.completed, tally.failed), (15, 0))


class EchoResourceTests(SynchronousTestCase):
    def test_clientGoneBeforeTheDelay(self) -> None:
        """
        The HTTP backend answers after its delay, and writes nothing to a
        client that went away before then (nor fails).
        """
        from twisted.internet.error import ConnectionDone
        from twisted.web.server import NOT_DONE_YET
        from twisted.web.test.requesthelper import DummyRequest

        clock = Clock()
        resource = backend._EchoResource(clock, 0.5)
        requests = [DummyRequest([b""]), DummyRequest([b""])]
        for request in requests:
            request.method = b"POST"
            request.content = io.BytesIO(b"body")
            self.assertEqual(resource.render_POST(request), NOT_DONE_YET)  # type: ignore[arg-type]
        requests[1].processingFailed(Failure(ConnectionDone()))
        clock.advance(0.5)
        self.assertEqual((requests[0].written, requests[0].finished), ([b"body"], 1))
        self.assertEqual((requests[1].written, clock.getDelayedCalls()), ([], []))


class BackendTests(TestCase):
    """
    The contenders against the benchmark backend, on loopback.
    """

    async def listen(self, delay: float = 0.0) -> dict[str, int]:
        ports = await backend.listen(reactor, delay)
        for port in ports.values():
            self.addCleanup(port.stopListening)
        return {name: port.getHost().port for name, port in ports.items()}

    async def test_everyContender(self) -> None:
        """Every contender gets each caller's own reply and counts its connections."""
        ports = await self.listen()
        settings = Settings(concurrency=20, idleTimeout=0.1, maxPending=100)
        for kind in KINDS.values():
            endpoint = CountingEndpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", ports[kind.service]))
            contender = kind.build(endpoint, reactor, settings)
            tally = await ClosedLoop(contender.request, payloads(20, 64), total=200).run()
            await contender.close()
            self.assertEqual((kind.name, tally.completed, dict(tally.errors)), (kind.name, 200, {}))
            expected = {"per-request": 200, "http": (1, 20)}.get(kind.name, 1)
            if isinstance(expected, tuple):
                self.assertTrue(expected[0] <= endpoint.connections <= expected[1], (kind.name, endpoint.connections))
            else:
                self.assertEqual(endpoint.connections, expected, kind.name)

    async def test_delay(self) -> None:
        """The backend waits --delay on every protocol."""
        ports = await self.listen(delay=0.2)
        for kind in ("minimal", "amp", "http", "server", "minimal-server"):
            contender = KINDS[kind].build(
                TCP4ClientEndpoint(reactor, "127.0.0.1", ports[KINDS[kind].service]), reactor, Settings(1, 0, 10)
            )
            start = reactor.seconds()
            self.assertEqual(await contender.request(b"x"), b"x")
            self.assertGreaterEqual(reactor.seconds() - start, 0.19)
            await contender.close()

    async def test_memory(self) -> None:
        """The memory reading is taken with every request outstanding."""
        ports = await self.listen()
        contender = KINDS["shared"].build(
            TCP4ClientEndpoint(reactor, "127.0.0.1", ports["sockshare"]), reactor, Settings(1, 0, 1000)
        )
        memory = await outstandingMemory(reactor, contender.request, 500, 0.4, lambda: contender.pending)  # type: ignore[attr-defined]
        await contender.close()
        self.assertEqual((memory.outstanding, memory.errors), (500, {}))
        self.assertGreater(memory.tracedBytes, 500 * 64)
        self.assertGreater(memory.peakResidentBytes, 0)


def _plan(**overrides: Any) -> Plan:
    options: dict[str, Any] = dict(requests=300, duration=None, warmup=50, concurrencies=[10], pin=False)
    options.update(overrides)
    return Plan(**options)


class MinimalServerTests(SynchronousTestCase):
    """
    The server's floor answers like the library's server, for what the
    benchmark sends it.
    """

    def connect(self) -> tuple[Any, StringTransport]:
        protocol = backend.MinimalServerProtocol(Clock(), 0.0, maxPayload=100)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_answersEveryWholeFrame(self) -> None:
        """
        Requests and PINGs, whole or split anywhere, are answered in one
        write per chunk; other kinds are ignored.
        """
        protocol, transport = self.connect()
        stream = b"".join(
            [encodeFrame(1, REQUEST, b"a"), encodeFrame(2, PING, b"p"), encodeFrame(3, CANCEL, b""),
             encodeFrame(4, REQUEST, b"b" * 50)]
        )  # fmt: skip
        for cut in range(len(stream)):
            protocol, transport = self.connect()
            protocol.dataReceived(stream[:cut])
            protocol.dataReceived(stream[cut:])
            self.assertEqual(
                FrameDecoder(100, CLIENT_RECEIVES).feed(transport.value()),
                [(1, RESPONSE, b"a"), (2, PONG, b"p"), (4, RESPONSE, b"b" * 50)],
            )

    def test_badLength(self) -> None:
        """A length below the minimum or above maxPayload aborts the connection."""
        for length in (4, 106):
            protocol, transport = self.connect()
            protocol.dataReceived(struct.pack(">IIB", length, 1, REQUEST))
            self.assertTrue(transport.disconnecting, length)
            self.assertEqual(transport.value(), b"")


class RunnerTests(TestCase):
    timeout = 60

    async def test_inProcess(self) -> None:
        """An in-process run measures each strategy at each concurrency, plus bursts and memory."""
        plan = _plan(
            strategies=["shared", "shared-eager", "shared-linger", "per-request", "minimal"],
            concurrencies=[1, 10],
            separateProcess=False,
            bursts=3,
            burstSize=10,
            burstGap=0.02,
            idleTimeout=5.0,
            memory=200,
        )
        results = await run(reactor, plan)
        self.assertEqual(len(results.rows), 10)
        for row in results.rows:
            self.assertEqual((row.requests, row.errors), (300, 0), row)
            self.assertGreater(row.requestsPerSecond, 0)
            self.assertLessEqual(row.p50Ms, row.p99Ms)
        opened = {b["strategy"]: b["connectionsOpened"] for b in results.bursty}
        self.assertEqual(opened, {"shared-linger": 1, "shared": 1, "shared-eager": 3, "per-request": 30, "minimal": 1})
        self.assertEqual(sorted(m["strategy"] for m in results.memory), ["minimal", "shared"])
        self.assertGreaterEqual(results.process["peakRss"], results.process["rssEnd"])
        self.assertEqual(results.skipped, [])

    async def test_burstsOnly(self) -> None:
        """With requests=0 only the bursts are measured."""
        results = await run(
            reactor, _plan(strategies=["shared-eager"], requests=0, bursts=2, burstSize=5, separateProcess=False)
        )
        self.assertEqual(results.rows, [])
        self.assertEqual([(b["requests"], b["connectionsOpened"]) for b in results.bursty], [(10, 2)])
        self.assertNotIn("req/s", render(results))

    async def test_separateProcess(self) -> None:
        """
        By default the backend runs in its own process, stopped at the end;
        no socket is left open; its CPU time per request is measured.
        """
        plan = _plan(strategies=["shared", "amp", "minimal", "http", "server", "minimal-server"], pin=True)
        results = await run(reactor, plan)
        self.assertEqual(results.process["socketsEnd"], results.process["socketsStart"])
        servers = {row.strategy: row for row in results.rows if row.strategy in ("server", "minimal-server")}
        self.assertEqual(sorted((row.strategy, row.requests, row.errors) for row in servers.values()),
                         [("minimal-server", 300, 0), ("server", 300, 0)])  # fmt: skip
        self.assertIn("the server does", "\n".join(ratios(results.rows)))
        results.rows = [row for row in results.rows if row.strategy in ("shared", "amp")]
        self.assertEqual(
            [(r.strategy, r.requests, r.errors) for r in results.rows], [("shared", 300, 0), ("amp", 300, 0)]
        )
        self.assertIn("cpus", results.machine)

    async def test_backendCpu(self) -> None:
        """
        The CPU time of the backend's process is read while it runs (its
        start-up alone takes more than a clock tick); an in-process backend
        has none of its own.
        """
        spawned = Backend(reactor, _plan())
        await spawned.start(None, None)
        try:
            used = spawned.cpuSeconds()
            self.assertIsNotNone(used)
            self.assertGreater(used, 0)
        finally:
            await spawned.stop()
        inProcess = Backend(reactor, _plan(separateProcess=False))
        await inProcess.start(None, None)
        try:
            self.assertIsNone(inProcess.cpuSeconds())
        finally:
            await inProcess.stop()

    async def test_externalBackend(self) -> None:
        """With a backend endpoint, only the contenders of its wire format run; the others are listed as skipped."""
        ports = await backend.listen(reactor, 0.0)
        for port in ports.values():
            self.addCleanup(port.stopListening)
        where = f"tcp:127.0.0.1:{ports['sockshare'].getHost().port}"
        results = await run(reactor, _plan(strategies=["shared", "http"], backend=where))
        self.assertEqual([r.strategy for r in results.rows], ["shared"])
        self.assertEqual(len(results.skipped), 1)
        self.assertIn("http", results.skipped[0])


def _row(strategy: str, rate: float, p99: float = 1.0, cpu: float = 10.0, concurrency: int = 100) -> Row:
    return Row(strategy, KINDS[strategy].library, concurrency, 64, 1000, 0, {}, 1.0, rate, p99 / 2, p99, 1, cpu)


class MixedTests(TestCase):
    timeout = 60

    async def test_everyPlacement(self) -> None:
        """
        The mixed-size scenario measures the small requests alone, beside
        large ones on the same client, and beside large ones on a client of
        their own: every request answered, the large ones counted apart.
        """
        plan = _plan(requests=None, duration=0.2, separateProcess=False, mix=Mix(64, 100_000, 1))
        results = await run(reactor, plan)
        self.assertEqual(results.rows, [])
        byPlacement = {row["placement"]: row for row in results.mixed}
        self.assertEqual(list(byPlacement), ["alone", "shared", "separate", "whole"])
        for placement, row in byPlacement.items():
            self.assertEqual((row["smallErrors"], row["largeErrors"], len(row["runs"])), (0, 0, 1), row)
            self.assertGreater(row["smallRequestsPerSecond"], 0, row)
            self.assertLessEqual(row["smallP50Ms"], row["smallP99Ms"])
            self.assertEqual(row["largeRequestsPerSecond"] > 0, placement != "alone", row)
        text = render(results)
        self.assertIn("Mixed sizes: 10 callers sending 64-byte requests while 1 send 100,000-byte ones", text)
        self.assertIn("the same shared client", text)
        self.assertIn("Shared against separate: small requests/s", text)
        self.assertIn("with no fragments (fragmentSize=None)", text)


class ReportTests(SynchronousTestCase):
    def test_ratios(self) -> None:
        """The target ratios are computed from the rows of each concurrency."""
        rows = [
            _row("shared", 1000, 2, 11),
            _row("per-request", 50, 40),
            _row("minimal", 1100, 2, 10),
            _row("amp", 100),
        ]
        lines = ratios(rows)
        self.assertEqual(len(lines), 2)
        self.assertIn("20.0x per-request (p99 1/20.0)", lines[0])
        self.assertIn("10.0x amp", lines[0])
        self.assertIn("91% of minimal", lines[0])
        self.assertIn("+10% vs minimal", lines[1])
        self.assertEqual(ratios([_row("minimal", 5)]), [])

    def test_serverRatio(self) -> None:
        """
        The server's ratio is the median of the ratios of runs made one
        after the other, with p99 and the server's CPU per request.
        """
        server = replace(_row("server", 1000, 3), rates=[900, 1000, 1300], serverCpuUsPerRequest=3.0)
        floor = replace(_row("minimal-server", 1000, 2), rates=[1000, 800, 1000], serverCpuUsPerRequest=2.5)
        lines = ratios([server, floor])
        self.assertEqual(
            lines,
            [
                "c=100: the server does 1.25x the requests/s of minimal-server (median of 3 pairs, 0.90-1.30), "
                "p99 3.00 ms vs 2.00 ms, server CPU 3.0 vs 2.5 us/request"
            ],
        )
        self.assertEqual(ratios([server]), [])
        # A single run: the ratio of the rates, no CPU if it was not measured.
        self.assertEqual(
            ratios([_row("server", 900), _row("minimal-server", 1000)]),
            ["c=100: the server does 0.90x the requests/s of minimal-server, p99 1.00 ms vs 1.00 ms"],
        )

    def test_legend(self) -> None:
        """The demo says what each strategy of its table is, once each, in the table's order."""
        rows = [_row("shared-eager", 900), _row("persistent", 1000), _row("shared-eager", 950, concurrency=1)]
        lines = legend(rows).splitlines()
        self.assertEqual([line.split()[0] for line in lines], ["shared-eager", "persistent"])
        self.assertIn(KINDS["persistent"].summary, lines[1])

    def test_summary(self) -> None:
        """The demo's sentences follow the figures."""
        text = summary([_row("shared", 1000), _row("per-request", 50), _row("serialized", 100), _row("minimal", 1250)])
        self.assertIn("20x the requests per second", text)
        self.assertIn("10x slower", text)
        self.assertIn("at 80% of the rate of minimal", text)
        self.assertEqual(summary([_row("shared", 1000)]), "")

    def test_summarySpread(self) -> None:
        """
        When repeated runs spread more than the difference between shared
        and minimal, the demo draws no conclusion from them.
        """
        wide = replace(_row("minimal", 1050), spread=0.3)
        text = summary([_row("shared", 1000), _row("per-request", 50), wide])
        self.assertIn("no conclusion", text)
        self.assertIn("spread by up to 30%", text)
        self.assertNotIn("% of the rate of minimal", text)
        # A difference larger than the spread is still reported.
        text = summary([_row("shared", 500), _row("per-request", 50), wide])
        self.assertIn("at 48% of the rate of minimal", text)

    def test_medianAndSpread(self) -> None:
        """Repeats report the median run, and how far the runs spread around it."""
        from twisted_sockshare.bench.runner import _median

        row = _median([_row("shared", 900), _row("shared", 1200), _row("shared", 1000)])
        self.assertEqual((row.requestsPerSecond, row.spread), (1000, 0.3))
        self.assertEqual(row.rates, [900, 1200, 1000])
        self.assertEqual(_median([_row("shared", 1000)]).spread, 0.0)

    def test_errorsByKind(self) -> None:
        """The table shows each row's errors by kind, most frequent first."""
        row = replace(_row("shared", 10), errors=12, errorKinds={"WrongReply": 2, "RequestTimeout": 10})
        results = self.results()
        results.rows = [row]
        self.assertIn("12 (RequestTimeout 10, WrongReply 2)", render(results))

    def test_tooManyErrors(self) -> None:
        """A measurement whose errors exceed the limit is named, with its kinds."""
        from twisted_sockshare.bench.cli import tooManyErrors

        bad = replace(_row("shared", 10), errors=20, errorKinds={"ConnectFailed": 20})
        ok = replace(_row("minimal", 10), errors=5, errorKinds={"WrongReply": 5})
        self.assertEqual(
            tooManyErrors([bad, ok], 0.01),
            ["shared at 100 callers: 20 of 1,000 requests failed (ConnectFailed 20), above --max-errors=0.01"],
        )
        self.assertEqual(tooManyErrors([bad, ok], 0.02), [])

    def results(self) -> Any:
        from twisted_sockshare.bench.runner import Results, machine

        results = Results(
            machine(None, None), {"backend": None, "separateProcess": True, "payloadSize": 64, "delay": 0}
        )
        results.rows = [_row("shared", 1000), _row("http", 40)]
        results.bursty = [
            {
                "strategy": "shared",
                "bursts": 3,
                "burstSize": 10,
                "requests": 30,
                "errors": 0,
                "p99Ms": 1.0,
                "connectionsOpened": 3,
            }
        ]
        results.memory = [
            {
                "strategy": "shared",
                "outstanding": 10,
                "bytesPerRequest": 500.0,
                "residentBytes": 2**20,
                "peakResidentBytes": 2**25,
                "errors": {},
            }
        ]
        return results

    def test_render(self) -> None:
        """The report has the table, the ratios, the bursts and the memory."""
        text = render(self.results())
        self.assertIn("http (other tool)", text)
        self.assertIn("25.0x http", text)
        self.assertIn("not pinned", text)
        self.assertIn("3x10", burstyTable(self.results().bursty))
        self.assertIn("500", memoryTable(self.results().memory))

    def test_json(self) -> None:
        """The JSON file has the machine, the plan and one object per row."""
        path = tempPath(self)
        writeJSON(self.results(), path)
        with open(path) as f:
            data = json.load(f)
        self.assertEqual(data["rows"][0]["strategy"], "shared")
        self.assertEqual(set(data), {"machine", "plan", "rows", "bursty", "memory", "skipped", "process", "mixed"})

    def test_plot(self) -> None:
        """The plot is written where asked (matplotlib is the plot extra)."""
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise self.failureException("matplotlib is part of the test extra; install it") from None
        from twisted_sockshare.bench.report import plot

        path = tempPath(self) + ".png"
        plot(self.results(), path)
        with open(path, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")


class FakeTerminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


class ProgressTests(SynchronousTestCase):
    def progress(self, tty: bool) -> tuple[FakeTerminal, Clock, Callable[..., None], ClosedLoop]:
        stream, clock = FakeTerminal(tty), Clock()
        loop = ClosedLoop(succeed, [b"x"], total=1)
        for _ in range(42):
            loop.tally.addLatency(0.001)
        return stream, clock, ProgressLine(stream, clock, after=2.0, every=0.5), loop

    def test_shownAfterAWhile(self) -> None:
        """On a terminal the line appears once a measurement has run a while, and is cleared at the end."""
        stream, clock, progress, loop = self.progress(tty=True)
        progress("shared c=100", loop)
        clock.advance(0.5)
        clock.advance(0.5)
        clock.advance(0.5)
        self.assertEqual(stream.getvalue(), "")
        clock.advance(0.5)
        self.assertIn("shared c=100: 42 done, 21 req/s, 0 errors, 2.0 s", stream.getvalue())
        progress("", None)
        self.assertTrue(stream.getvalue().endswith("\r\x1b[K"))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_shownFromTheStart(self) -> None:
        """By default the line appears as soon as a measurement starts, then every half second."""
        stream, clock = FakeTerminal(True), Clock()
        loop = ClosedLoop(succeed, [b"x"], total=1)
        progress = ProgressLine(stream, clock)
        progress("shared c=100", loop)
        self.assertIn("shared c=100: 0 done, starting, 0 errors, 0.0 s", stream.getvalue())
        for _ in range(10):
            loop.tally.addLatency(0.001)
        clock.advance(0.5)
        self.assertIn("shared c=100: 10 done, 20 req/s, 0 errors, 0.5 s", stream.getvalue())
        progress("", None)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_quietWhenNotATerminal(self) -> None:
        """Nothing is written when the output is not a terminal."""
        stream, clock, progress, loop = self.progress(tty=False)
        progress("shared c=100", loop)
        clock.advance(10)
        progress("", None)
        self.assertEqual(stream.getvalue(), "")
        self.assertEqual(clock.getDelayedCalls(), [])


class MinimalClientTests(SynchronousTestCase):
    """
    The C{minimal} contender is correct, so that it is a fair floor.
    """

    def test_repliesErrorsAndLoss(self) -> None:
        """Replies go by id, ERROR frames fail their request, unknown ids are ignored, a loss fails the rest."""
        from twisted.internet.error import ConnectionLost
        from twisted.internet.testing import StringTransport

        from twisted_sockshare.bench.contenders import _MinimalProtocol
        from twisted_sockshare.wire import ERROR, RESPONSE, encodeFrame

        protocol = _MinimalProtocol()
        protocol.makeConnection(StringTransport())
        ok, bad, lost = protocol.request(b"a"), protocol.request(b"b"), protocol.request(b"c")
        frames = encodeFrame(1, ERROR, b"no") + encodeFrame(7, RESPONSE, b"?") + encodeFrame(0, RESPONSE, b"A")
        protocol.dataReceived(frames[:5])
        protocol.dataReceived(frames[5:])
        self.assertEqual(self.successResultOf(ok), b"A")
        self.assertIn("no", str(self.failureResultOf(bad, RuntimeError).value))
        protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(lost, ConnectionLost)


class RestartsTests(SynchronousTestCase):
    """
    --restart-every kills the backend once it has been up that long and has
    answered a request since it started, and not before.
    """

    def test_killsOnlyAfterServing(self) -> None:
        clock = Clock()
        tally = Tally()
        kills: list[Deferred[None]] = []

        class FakeBackend:
            async def restart(self) -> None:
                done: Deferred[None] = Deferred()
                kills.append(done)
                await done

        restarts = _Restarts(clock, FakeBackend(), tally, 1.0)  # type: ignore[arg-type]
        clock.pump([0.1] * 30)
        self.assertEqual(kills, [], "killed before it answered anything")
        tally.completed = 1
        clock.advance(0.1)
        self.assertEqual(len(kills), 1)
        clock.pump([0.1] * 30)
        self.assertEqual(len(kills), 1, "killed again while the last restart was under way")
        kills[0].callback(None)
        tally.completed = 2
        clock.pump([0.1] * 9)
        self.assertEqual(len(kills), 1, "killed before it had been up 1 s")
        clock.pump([0.1] * 2)
        self.assertEqual(len(kills), 2)
        kills[1].callback(None)
        restarts.stop()
        clock.pump([0.1] * 30)
        self.assertEqual(len(kills), 2)
