# -*- test-case-name: tests.test_bench_mixed -*-
"""
The mixed-size scenario (C{sockshare bench --mix SMALL,LARGE:N}): callers
sending small requests while N callers send large ones, with the large
requests on the same shared client, on a client of their own (its own
connection), and nowhere; what the small requests get in each.
"""

from __future__ import annotations

import gc
import random
import statistics
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from typing import Any

from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.interfaces import IStreamClientEndpoint

from ..client import SockShareClientFactory
from .load import ClosedLoop, Tally, payloads

#: Where the large requests go: nowhere, the small requests' client, a
#: client of their own, the small requests' client with no fragments
#: (C{fragmentSize=None}: whole messages both ways, as before wire v3's
#: FRAGMENTS).
PLACEMENTS = ("alone", "shared", "separate", "whole")

#: Runs a load to its end (the runner's, with its stall watchdog).
Drive = Callable[[ClosedLoop], Coroutine[Any, Any, Tally]]


@dataclass(frozen=True)
class Mix:
    """
    Small requests of C{small} bytes, with C{largeCallers} callers sending
    requests of C{large} bytes.
    """

    small: int
    large: int
    largeCallers: int


def parseMix(text: str) -> Mix:
    """
    Read C{SMALL,LARGE:N} (C{:N} may be left out: one large caller).

    @raise ValueError: saying what is wrong.
    """
    sizes, _, callers = text.partition(":")
    parts = sizes.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        small, large = int(parts[0]), int(parts[1])
        count = int(callers) if callers else 1
    except ValueError:
        raise ValueError(f"--mix must be SMALL,LARGE:N (bytes, bytes, large callers), not {text!r}") from None
    if not 0 <= small < large:
        raise ValueError(f"--mix needs 0 <= SMALL < LARGE, not {small:,} and {large:,}")
    if count < 1:
        raise ValueError(f"--mix needs at least one large caller, not {count}")
    return Mix(small, large, count)


@dataclass
class MixedRun:
    """
    One run of one placement.
    """

    placement: str
    smallRequestsPerSecond: float
    smallP50Ms: float
    smallP99Ms: float
    smallErrors: int
    largeRequestsPerSecond: float
    largeErrors: int


async def _once(
    reactor: Any,
    endpoint: IStreamClientEndpoint,
    mix: Mix,
    placement: str,
    callers: int,
    duration: float,
    drive: Drive,
) -> MixedRun:
    options: dict[str, Any] = {"idleTimeout": 10.0, "maxPending": 10_000, "maxPayload": max(mix.large, 1_048_576)}
    if placement == "whole":
        options["fragmentSize"] = None
    small = SockShareClientFactory(endpoint, reactor, **options)
    large = small if placement in ("shared", "whole") else SockShareClientFactory(endpoint, reactor, **options)
    try:
        # Both connections are open before the clock starts.
        await gatherResults([small.request(b"warm up"), large.request(b"warm up")])
        gc.collect()
        smallLoad = ClosedLoop(small.request, payloads(callers, mix.small), duration=duration)
        loads = [drive(smallLoad)]
        largeLoad = None
        if placement != "alone":
            largeLoad = ClosedLoop(large.request, payloads(mix.largeCallers, mix.large), duration=duration)
            loads.append(drive(largeLoad))
        await gatherResults([ensureDeferred(load) for load in loads])
    finally:
        await small.close()
        if large is not small:
            await large.close()
    tally = smallLoad.tally
    largeTally = largeLoad.tally if largeLoad is not None else Tally()
    return MixedRun(
        placement,
        round(tally.requestsPerSecond, 1),
        round(tally.percentile(0.50) * 1000, 3),
        round(tally.percentile(0.99) * 1000, 3),
        tally.failed,
        round(largeTally.requestsPerSecond, 1),
        largeTally.failed,
    )


async def measure(
    reactor: Any,
    endpoint: IStreamClientEndpoint,
    mix: Mix,
    callers: int,
    duration: float,
    repeat: int,
    seed: int,
    drive: Drive,
) -> list[dict[str, Any]]:
    """
    Run each placement C{repeat} times, interleaved in a seeded order.

    @return: per placement, the median of each figure over its runs, and
        the runs.
    """
    order = random.Random(seed)
    runs: dict[str, list[MixedRun]] = {placement: [] for placement in PLACEMENTS}
    for _ in range(repeat):
        for placement in order.sample(PLACEMENTS, len(PLACEMENTS)):
            runs[placement].append(await _once(reactor, endpoint, mix, placement, callers, duration, drive))
    rows = []
    for placement in PLACEMENTS:
        measured = runs[placement]
        row: dict[str, Any] = {"placement": placement, "smallCallers": callers, **asdict(mix)}
        for name in ("smallRequestsPerSecond", "smallP50Ms", "smallP99Ms", "largeRequestsPerSecond"):
            row[name] = statistics.median(getattr(run, name) for run in measured)
        row["smallErrors"] = sum(run.smallErrors for run in measured)
        row["largeErrors"] = sum(run.largeErrors for run in measured)
        row["runs"] = [asdict(run) for run in measured]
        rows.append(row)
    return rows
