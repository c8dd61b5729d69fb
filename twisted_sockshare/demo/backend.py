# -*- test-case-name: tests.test_tap -*-
"""
The demo backend's request handler: an echo server with a few documented
operations that make the demo telling.

Requests whose payload starts with C{!} are operations:

    - C{!stats}: the backend's own counters, as JSON (connections open and
      opened, requests, responses, errors, violations).
    - C{!error TEXT}: fails with C{RuntimeError: TEXT}, to show L{RemoteError}.
    - C{!sleep SECONDS}: answers C{slept} after that many seconds.

Any other payload is echoed back after C{delay} plus up to C{jitter} seconds.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater


class DemoBackend:
    """
    Echoes payloads, after an optional simulated delay.
    """

    def __init__(
        self,
        clock: IReactorTime,
        delay: float = 0.0,
        jitter: float = 0.0,
        stats: Callable[[], dict[str, int]] | None = None,
        random: Callable[[], float] = random.random,
    ) -> None:
        """
        @param clock: schedules the delays.
        @param delay: seconds of simulated work per request.
        @param jitter: up to this many more seconds, at random.
        @param stats: gives the counters C{!stats} reports.
        @param random: gives numbers in [0, 1) for the jitter.
        """
        self._clock = clock
        self.delay = delay
        self.jitter = jitter
        self.stats = stats
        self._random = random

    def __call__(self, payload: bytes) -> bytes | Deferred[bytes]:
        if payload[:1] == b"!":
            return self._operation(payload)
        wait = self.delay + (self.jitter * self._random() if self.jitter else 0.0)
        if wait <= 0:
            return payload
        return deferLater(self._clock, wait, lambda: payload)

    def _operation(self, payload: bytes) -> bytes | Deferred[bytes]:
        name, _, argument = payload[1:].partition(b" ")
        if name == b"stats":
            return json.dumps(self.stats() if self.stats else {}).encode()
        if name == b"error":
            raise RuntimeError(argument.decode("utf-8", "replace"))
        if name == b"sleep":
            return deferLater(self._clock, float(argument), lambda: b"slept")
        raise ValueError(f"unknown operation {name.decode('utf-8', 'replace')!r}")
