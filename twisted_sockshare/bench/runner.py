# -*- test-case-name: tests.test_bench -*-
"""
Runs a benchmark plan: starts the backend (in its own process by default),
measures every contender at every concurrency, then the optional bursty and
memory cases, and returns the figures.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import random
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, clientFromString
from twisted.internet.interfaces import IReactorProcess, IStreamClientEndpoint
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

import twisted

from .. import __version__
from ..client import SockShareClientFactory
from . import backend as _backend
from . import mixed
from .contenders import DEFAULT_KINDS, KINDS, Contender, CountingEndpoint, Kind, Settings
from .load import ClosedLoop, Tally, bursts, openSockets, outstandingMemory, payloads, peakResidentBytes, residentBytes


@dataclass
class Plan:
    """
    What to measure; see C{sockshare bench --help} for each field.
    """

    strategies: list[str] = field(default_factory=lambda: list(DEFAULT_KINDS))
    concurrencies: list[int] = field(default_factory=lambda: [100])
    requests: int | None = None
    duration: float | None = 2.0
    payloadSize: int = 64
    delay: float = 0.0
    idleTimeout: float = 1.0
    backend: str | None = None
    separateProcess: bool = True
    pin: bool = True
    warmup: int = 200
    bursts: int = 0
    burstSize: int = 100
    burstGap: float = 0.05
    memory: int = 0
    seed: int = 1
    repeat: int = 1
    stallTimeout: float = 10.0
    restartEvery: float | None = None
    #: The request options the library's shared clients are given
    #: (C{request(payload, idempotent=..., waitForReady=...)}).
    idempotent: bool = False
    waitForReady: bool = False
    #: The mixed-size scenario instead of the strategies (C{--mix}).
    mix: mixed.Mix | None = None


@dataclass
class Row:
    """
    One contender at one concurrency.
    """

    strategy: str
    library: bool
    concurrency: int
    payloadSize: int
    requests: int
    errors: int
    errorKinds: dict[str, int]
    seconds: float
    requestsPerSecond: float
    p50Ms: float
    p99Ms: float
    connectionsOpened: int
    cpuUsPerRequest: float
    #: With repeats: (fastest - slowest) / median requests/s of the runs.
    spread: float = 0.0
    #: The backend process's CPU time per request (0: not measured, as
    #: with --backend or --in-process).
    serverCpuUsPerRequest: float = 0.0
    #: The requests/s of each run, in the order of the repeats: the runs of
    #: two contenders with the same index were measured one after the other.
    rates: list[float] = field(default_factory=list)

    @classmethod
    def fromTally(cls, kind: Kind, concurrency: int, payloadSize: int, tally: Tally, opened: int) -> Row:
        return cls(
            kind.name,
            kind.library,
            concurrency,
            payloadSize,
            tally.completed,
            tally.failed,
            dict(tally.errors),
            round(tally.seconds, 4),
            round(tally.requestsPerSecond, 1),
            round(tally.percentile(0.50) * 1000, 3),
            round(tally.percentile(0.99) * 1000, 3),
            opened,
            round(tally.cpuPerRequest * 1e6, 2),
        )


@dataclass
class Results:
    """
    Everything a run measured, as written by C{--json}.
    """

    machine: dict[str, Any]
    plan: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    bursty: list[dict[str, Any]] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    process: dict[str, int] = field(default_factory=dict)
    mixed: list[dict[str, Any]] = field(default_factory=list)

    def toJSON(self) -> dict[str, Any]:
        return asdict(self)


class _BackendProcess(ProcessProtocol):
    """
    The backend's process: its first line of output gives its ports; closing
    its standard input stops it.
    """

    def __init__(self) -> None:
        self.ready: Deferred[dict[str, int]] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self._out = b""
        self._err = b""

    def outReceived(self, data: bytes) -> None:
        self._out += data
        if b"\n" in self._out and not self.ready.called:
            self.ready.callback(json.loads(self._out.split(b"\n", 1)[0]))

    def errReceived(self, data: bytes) -> None:
        self._err = (self._err + data)[-4000:]

    def processEnded(self, reason: Failure) -> None:
        if not self.ready.called:
            why = self._err.decode("utf-8", "replace").strip() or reason.getErrorMessage()
            self.ready.errback(RuntimeError(f"the benchmark backend exited before listening: {why}"))
        self.ended.callback(None)


class Backend:
    """
    Where the contenders connect: C{address(service)} gives an endpoint.
    """

    def __init__(self, reactor: Any, plan: Plan) -> None:
        self._reactor = reactor
        self._plan = plan
        self._ports: dict[str, int] = {}
        self._listening: list[Any] = []
        self._process: _BackendProcess | None = None
        self._backendCpu: int | None = None
        self.restarts = 0
        #: Fires once a restart under way is complete.
        self.restarting: Deferred[None] | None = None

    @property
    def services(self) -> set[str]:
        if self._plan.backend is not None:
            return {"sockshare"}
        return set(self._ports)

    def endpoint(self, service: str) -> IStreamClientEndpoint:
        if self._plan.backend is not None:
            endpoint: IStreamClientEndpoint = clientFromString(self._reactor, self._plan.backend)
            return endpoint
        return TCP4ClientEndpoint(self._reactor, "127.0.0.1", self._ports[service])

    async def start(self, clientCpu: int | None, backendCpu: int | None) -> None:
        plan = self._plan
        if plan.backend is not None:
            return
        if not plan.separateProcess:
            ports = await _backend.listen(self._reactor, plan.delay)
            self._listening = list(ports.values())
            self._ports = {name: port.getHost().port for name, port in ports.items()}
            return
        self._backendCpu = backendCpu
        await self._spawn()

    async def _spawn(self) -> None:
        argv = [sys.executable, "-m", "twisted_sockshare.bench.backend", "--delay", repr(self._plan.delay)]
        argv += ["--ports", json.dumps(self._ports)]
        if self._backendCpu is not None:
            argv += ["--cpu", str(self._backendCpu)]
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        self._process = _BackendProcess()
        assert IReactorProcess.providedBy(self._reactor)
        self._reactor.spawnProcess(self._process, sys.executable, argv, env=env)
        self._ports = await self._process.ready

    def cpuSeconds(self) -> float | None:
        """
        The CPU time the backend's process has used so far, or L{None} if
        it is not a process of ours or the system does not say.
        """
        transport = self._process.transport if self._process is not None else None
        pid = getattr(transport, "pid", None)
        if pid is None:
            return None
        try:
            with open(f"/proc/{pid}/stat") as stat:
                # The fields after the command's name, which may hold spaces:
                # utime and stime are the 14th and 15th of the whole line.
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def restart(self) -> None:
        """
        Kill the backend's process (SIGKILL: a crash, as its clients see
        it) and start it again on the same ports.
        """
        assert self._process is not None and self._process.transport is not None
        self._process.transport.signalProcess("KILL")
        self.restarting = Deferred.fromCoroutine(self._respawn())
        await self.restarting
        self.restarting = None

    async def _respawn(self) -> None:
        assert self._process is not None
        await self._process.ended
        self.restarts += 1
        await self._spawn()

    async def stop(self) -> None:
        for port in self._listening:
            await port.stopListening()
        if self._process is not None and self._process.transport is not None:
            self._process.transport.closeStdin()
            await self._process.ended


def _cpus(plan: Plan) -> tuple[int | None, int | None]:
    """
    The cores for the load generator and the backend, when pinning applies.
    """
    if not (plan.pin and plan.separateProcess and plan.backend is None and hasattr(os, "sched_getaffinity")):
        return None, None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[1]


def machine(clientCpu: int | None, backendCpu: int | None) -> dict[str, Any]:
    """
    The facts a reader needs to compare figures.
    """
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "twisted": twisted.__version__,
        "twisted_sockshare": __version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "clientCpu": clientCpu,
        "backendCpu": backendCpu,
    }


Progress = Callable[[str, ClosedLoop | None], None]


async def run(reactor: Any, plan: Plan, progress: Progress | None = None) -> Results:
    """
    Measure what C{plan} asks for.

    @param progress: called with a label and the running load when each
        measurement starts, and with C{("", None)} when it ends.
    """
    clientCpu, backendCpu = _cpus(plan)
    backend = Backend(reactor, plan)
    await backend.start(clientCpu, backendCpu)
    before = os.sched_getaffinity(0) if clientCpu is not None else None
    if clientCpu is not None:
        os.sched_setaffinity(0, {clientCpu})
    try:
        results = Results(machine(clientCpu, backendCpu), asdict(plan))
        results.process = {"rssStart": residentBytes(), "socketsStart": openSockets()}
        if plan.mix is not None:
            results.mixed = await _mixed(reactor, backend, plan, progress)
        kinds = [KINDS[name] for name in plan.strategies] if plan.mix is None else []
        for kind in kinds:
            if kind.service not in backend.services:
                results.skipped.append(f"{kind.name}: needs the benchmark backend's {kind.service} service")
            elif plan.payloadSize > kind.maxPayload:
                results.skipped.append(f"{kind.name}: carries at most {kind.maxPayload:,} bytes per message")
        kinds = [kind for kind in kinds if kind.service in backend.services and plan.payloadSize <= kind.maxPayload]
        order = random.Random(plan.seed)
        for concurrency in plan.concurrencies if plan.requests != 0 and kinds else []:
            settings = Settings(concurrency, plan.idleTimeout, max(10_000, concurrency))
            measured: dict[str, list[Row]] = {kind.name: [] for kind in kinds}
            for _ in range(plan.repeat):
                for kind in order.sample(kinds, len(kinds)):
                    measured[kind.name].append(await _measure(reactor, backend, kind, settings, plan, progress))
            results.rows.extend(_median(measured[kind.name]) for kind in kinds)
        if plan.bursts:
            settings = Settings(plan.burstSize, plan.idleTimeout, max(10_000, plan.burstSize))
            for kind in kinds:
                results.bursty.append(await _bursty(reactor, backend, kind, settings, plan))
        if plan.memory:
            for kind in kinds:
                if kind.name in ("shared", "minimal"):
                    results.memory.append(await _memory(reactor, backend, kind, plan))
        rssEnd = residentBytes()
        results.process.update(
            rssEnd=rssEnd,
            # The kernel's high-water mark is counted at its own moments: the
            # peak reported is never below what was just read.
            peakRss=max(peakResidentBytes(), rssEnd),
            socketsEnd=openSockets(),
            restarts=backend.restarts,
        )
        return results
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)
        await backend.stop()


class _Watchdog:
    """
    Abandons a load that has made no progress for C{stall} seconds (a
    contender that lost requests), so a run never hangs.
    """

    def __init__(self, reactor: Any, load: ClosedLoop, stall: float) -> None:
        self._load = load
        self._seen = -1
        self._call = LoopingCall(self._check)
        self._call.clock = reactor
        self._call.start(stall, now=False)

    def _check(self) -> None:
        completed = self._load.tally.completed
        if completed == self._seen:
            self._load.abandon()
        self._seen = completed

    def stop(self) -> None:
        if self._call.running:
            self._call.stop()


async def _drive(reactor: Any, load: ClosedLoop, stall: float) -> Tally:
    """
    Run C{load}, abandoning it if it stalls for C{stall} seconds.
    """
    watchdog = _Watchdog(reactor, load, stall)
    try:
        return await load.run()
    finally:
        watchdog.stop()


async def _closed(reactor: Any, contender: Contender, limit: float) -> None:
    """
    Close C{contender}, waiting at most C{limit} seconds.
    """
    closing = contender.close()
    closing.addTimeout(limit, reactor)
    try:
        await closing
    except defer.TimeoutError:
        pass


def _median(rows: list[Row]) -> Row:
    """
    The run with the median requests/s (the slower middle one for an even
    count), so one disturbed run does not move the figures.
    """
    ordered = sorted(rows, key=lambda row: row.requestsPerSecond)
    median = ordered[(len(rows) - 1) // 2]
    rate = median.requestsPerSecond
    spread = (ordered[-1].requestsPerSecond - ordered[0].requestsPerSecond) / rate if rate else 0.0
    return replace(median, spread=round(spread, 4), rates=[row.requestsPerSecond for row in rows])


class _Restarts:
    """
    Kill and restart the backend's process every C{every} seconds of it
    serving: each kill waits until the process has been ready for C{every}
    seconds I{and} has answered a request since, so that a loaded machine,
    on which a process takes longer to start, still gets a soak rather than
    a backend that never serves.
    """

    def __init__(self, reactor: Any, backend: Backend, tally: Tally, every: float) -> None:
        self._reactor, self._backend, self._tally, self._every = reactor, backend, tally, every
        self._ready()
        self._call = LoopingCall(self._check)
        self._call.clock = reactor
        self._call.start(min(0.1, every), now=False)

    def _ready(self, ignored: object = None) -> None:
        self._readyAt = self._reactor.seconds()
        self._served = self._tally.succeeded

    def _check(self) -> Deferred[None] | None:
        if self._reactor.seconds() - self._readyAt < self._every or self._tally.succeeded <= self._served:
            return None
        return Deferred.fromCoroutine(self._backend.restart()).addCallback(self._ready)

    def stop(self) -> None:
        self._call.stop()


async def _measure(
    reactor: Any, backend: Backend, kind: Kind, settings: Settings, plan: Plan, progress: Progress | None
) -> Row:
    endpoint = CountingEndpoint(backend.endpoint(kind.service))
    contender = kind.build(endpoint, reactor, settings)
    sent = payloads(settings.concurrency, plan.payloadSize)
    request = contender.request
    if plan.idempotent or plan.waitForReady:
        assert isinstance(contender, SockShareClientFactory), "request options need a shared client"
        request = partial(contender.request, idempotent=plan.idempotent, waitForReady=plan.waitForReady)
    if plan.warmup:
        await _drive(reactor, ClosedLoop(request, sent, total=plan.warmup), plan.stallTimeout)
    gc.collect()
    load = ClosedLoop(request, sent, total=plan.requests, duration=plan.duration)
    if progress is not None:
        progress(f"{kind.name} c={settings.concurrency}", load)
    serverCpu = backend.cpuSeconds()
    restarts = None
    if plan.restartEvery is not None:
        restarts = _Restarts(reactor, backend, load.tally, plan.restartEvery)
    try:
        tally = await _drive(reactor, load, plan.stallTimeout)
    finally:
        if restarts is not None:
            restarts.stop()
            if backend.restarting is not None:
                await backend.restarting
        if progress is not None:
            progress("", None)
    opened = endpoint.connections
    serverCpuAfter = backend.cpuSeconds()
    await _closed(reactor, contender, plan.stallTimeout)
    row = Row.fromTally(kind, settings.concurrency, plan.payloadSize, tally, opened)
    if serverCpu is not None and serverCpuAfter is not None and tally.completed and not backend.restarts:
        row.serverCpuUsPerRequest = round((serverCpuAfter - serverCpu) / tally.completed * 1e6, 2)
    return row


async def _mixed(reactor: Any, backend: Backend, plan: Plan, progress: Progress | None) -> list[dict[str, Any]]:
    assert plan.mix is not None and plan.duration is not None

    async def drive(load: ClosedLoop) -> Tally:
        return await _drive(reactor, load, plan.stallTimeout)

    if progress is not None:
        progress("", None)
    callers = plan.concurrencies[0]
    endpoint = backend.endpoint("sockshare")
    return await mixed.measure(reactor, endpoint, plan.mix, callers, plan.duration, plan.repeat, plan.seed, drive)


async def _bursty(reactor: Any, backend: Backend, kind: Kind, settings: Settings, plan: Plan) -> dict[str, Any]:
    endpoint = CountingEndpoint(backend.endpoint(kind.service))
    contender = kind.build(endpoint, reactor, settings)
    tally = await bursts(
        reactor, contender.request, payloads(plan.burstSize, plan.payloadSize), plan.bursts, plan.burstGap
    )
    opened = endpoint.connections
    await _closed(reactor, contender, plan.stallTimeout)
    return {
        "strategy": kind.name,
        "bursts": plan.bursts,
        "burstSize": plan.burstSize,
        "gapSeconds": plan.burstGap,
        "requests": tally.completed,
        "errors": tally.failed,
        "p99Ms": round(tally.percentile(0.99) * 1000, 3),
        "connectionsOpened": opened,
    }


async def _memory(reactor: Any, backend: Backend, kind: Kind, plan: Plan) -> dict[str, Any]:
    settings = Settings(plan.memory, plan.idleTimeout, max(10_000, plan.memory))
    contender = kind.build(CountingEndpoint(backend.endpoint(kind.service)), reactor, settings)
    pending = (lambda: int(contender.pending)) if hasattr(contender, "pending") else None
    memory = await outstandingMemory(reactor, contender.request, plan.memory, 2.0, pending)
    await contender.close()
    return {"strategy": kind.name, **asdict(memory), "bytesPerRequest": round(memory.bytesPerRequest, 1)}
