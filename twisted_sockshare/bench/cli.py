# -*- test-case-name: tests.test_cli -*-
"""
The C{sockshare} command (also C{python -m twisted_sockshare}):

    - C{sockshare demo}: compare the ways of talking to a backend on this
      machine, in about 15 seconds, and say what it shows;
    - C{sockshare bench}: the same engine with every knob.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from twisted.internet.endpoints import clientFromString
from twisted.internet.task import react
from twisted.python import usage

import twisted

from .. import __version__
from ..demo.convert import number
from .backend import MAX_PAYLOAD as _BACKEND_MAX_PAYLOAD
from .contenders import DEFAULT_KINDS, KINDS, SHARED_CLIENTS
from .mixed import Mix, parseMix
from .report import ProgressLine, legend, plot, render, summary, writeJSON
from .runner import Plan, Row, run


def _strategyList() -> str:
    return "\n".join(
        f"  {kind.name:<14} {kind.summary}{'' if kind.library else ' (other tool)'}" for kind in KINDS.values()
    )


def _version() -> None:
    print(f"twisted_sockshare {__version__} (Twisted {twisted.__version__})")
    sys.exit(0)


def _fraction(text: str) -> float:
    value: float = number(float, "max-errors", 0)(text)
    if value > 1:
        raise ValueError(f"--max-errors is a fraction of the requests, from 0 to 1, not {text}")
    return value


_fraction.coerceDoc = "A fraction, 0 to 1."  # type: ignore[attr-defined]


def _mix(text: str) -> Mix:
    try:
        return parseMix(text)
    except ValueError as e:
        raise usage.UsageError(str(e)) from None


def _checkWritable(option: str, path: str) -> None:
    """
    Refuse an output file that could not be written, before the run.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise usage.UsageError(f"--{option} {path!r}: the directory {directory!r} does not exist")
    if not os.access(directory, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise usage.UsageError(f"--{option} {path!r}: cannot write there")
    if os.path.isdir(path):
        raise usage.UsageError(f"--{option} {path!r} is a directory")


class _Command(usage.Options):
    """
    A C{sockshare} command: its usage line names it, and C{--version} is the
    package's.
    """

    command = ""

    def getSynopsis(self) -> str:
        return f"Usage: sockshare {self.command} [options]"

    def opt_version(self) -> None:
        """
        Print twisted_sockshare's version (and Twisted's) and exit.
        """
        _version()


class BenchOptions(_Command):
    """
    Options of C{sockshare bench}.
    """

    command = "bench"
    longdesc = (
        "Measure how fast each strategy exchanges request/response messages with a backend "
        "(requests/s counting successes only, p50/p99 latency, errors by kind, connections opened)."
    )
    optParameters: list[Any] = [
        [
            "requests",
            "n",
            None,
            "Requests per measurement (instead of --duration); 0 skips the closed-loop load",
            number(int, "requests", 0),
        ],
        ["duration", "d", None, "Seconds per measurement (default 2)", number(float, "duration", 0, False)],
        ["payload-size", None, 64, "Bytes per request payload.", number(int, "payload-size", 0)],
        ["delay", None, 0.0, "Seconds of backend work per request.", number(float, "delay", 0)],
        ["idle-timeout", None, 1.0, "Linger of shared-linger, in seconds.", number(float, "idle-timeout", 0)],
        ["backend", "b", None, "Bench a running sockshare-server at this client endpoint instead."],
        ["warmup", None, 200, "Requests sent before each measurement.", number(int, "warmup", 0)],
        ["bursts", None, 0, "Also run this many bursts per strategy (0: none).", number(int, "bursts", 0)],
        ["burst-size", None, 100, "Requests per burst, sent at once.", number(int, "burst-size", 1)],
        ["burst-gap", None, 0.05, "Seconds between bursts.", number(float, "burst-gap", 0)],
        ["memory", None, 0, "Also measure memory with this many requests outstanding.", number(int, "memory", 0)],
        [
            "mix",
            None,
            None,
            "Instead of the strategies: SMALL,LARGE:N - the callers of -c (default 10) send SMALL-byte requests "
            "while N callers send LARGE-byte ones, on the same shared client, on a client of their own, on the "
            "same client without fragments, and nowhere; prints the small requests' requests/s, p50 and p99 in "
            "each (e.g. 64,1048576:1)",
            _mix,
        ],
        ["json", None, None, "Write the results as JSON to this file."],
        ["plot", None, None, "Draw requests/s and p99 against concurrency to this .png or .svg (needs matplotlib)."],
        ["seed", None, 1, "Seed of the order the strategies run in.", number(int, "seed", 0)],
        [
            "restart-every",
            None,
            None,
            (
                "Kill and restart the backend process during each measurement (a soak), each time it has been"
                " up this many seconds and has answered a request since it started"
            ),
            number(float, "restart-every", 0, False),
        ],
        [
            "repeat",
            "r",
            1,
            "Measure each case this many times, interleaved; report the median.",
            number(int, "repeat", 1),
        ],
        [
            "max-errors",
            None,
            0.01,
            "Exit 1 if a measurement's errors exceed this fraction of its requests.",
            _fraction,
        ],
    ]
    optFlags = [
        ["server-process", None, "Run the backend in its own process (the default)."],
        ["in-process", None, "Run the backend in the load generator's process."],
        ["no-pin", None, "Do not pin the load generator and the backend to different CPUs."],
        ["quiet", "q", "No progress line."],
        [
            "idempotent",
            None,
            "Send every request with idempotent=True: one the backend closed its connection on is sent again "
            "(shared clients only).",
        ],
        [
            "wait-for-ready",
            None,
            "Send every request with waitForReady=True: it waits through the connect backoff rather than "
            "failing at once (shared clients only).",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["strategies"] = []
        self["concurrencies"] = []

    def opt_strategy(self, name: str) -> None:
        """
        A strategy to measure (repeatable; 'all', or a comma-separated list). Default: all.
        """
        for one in name.split(","):
            if one == "all":
                self["strategies"].extend(KINDS)
            elif one in KINDS:
                self["strategies"].append(one)
            else:
                raise usage.UsageError(f"--strategy must be 'all' or one of {', '.join(KINDS)}, not {one!r}")

    opt_s = opt_strategy

    def opt_concurrency(self, value: str) -> None:
        """
        Concurrent callers (repeatable, or comma-separated, for a sweep). Default: 100.
        """
        for one in value.split(","):
            try:
                self["concurrencies"].append(number(int, "concurrency", 1)(one))
            except ValueError as e:
                raise usage.UsageError(str(e)) from None

    opt_c = opt_concurrency

    def getUsage(self, width: int | None = None) -> str:
        # The strategies as a table: Twisted would reflow them into the
        # description's paragraph.
        return super().getUsage(width) + "\nStrategies:\n" + _strategyList() + "\n"

    def postOptions(self) -> None:
        for option in ("json", "plot"):
            if self[option] is not None:
                _checkWritable(option, self[option])
        if self["requests"] is not None and self["duration"] is not None:
            raise usage.UsageError("give --requests or --duration, not both")
        if self["mix"] is not None:
            if self["strategies"]:
                raise usage.UsageError("--mix measures shared clients: give no --strategy with it")
            if self["requests"] is not None:
                raise usage.UsageError("--mix runs for --duration: give no --requests with it")
            if self["backend"] is None and self["mix"].large > _BACKEND_MAX_PAYLOAD:
                raise usage.UsageError(
                    f"--mix LARGE is at most {_BACKEND_MAX_PAYLOAD:,} bytes, the benchmark backend's maxPayload"
                )
        if self["server-process"] and self["in-process"]:
            raise usage.UsageError("give --server-process or --in-process, not both")
        if self["idempotent"] or self["wait-for-ready"]:
            given = set(self["strategies"])
            others = sorted(given - set(SHARED_CLIENTS))
            if others:
                raise usage.UsageError(
                    f"--idempotent and --wait-for-ready are options of the shared clients "
                    f"({', '.join(SHARED_CLIENTS)}), not of {', '.join(others)}"
                )
            if not given:
                self["strategies"] = list(SHARED_CLIENTS)
        if self["restart-every"] is not None and (self["in-process"] or self["backend"] is not None):
            raise usage.UsageError(
                "--restart-every needs the backend in its own process (not --in-process or --backend)"
            )
        if self["backend"] is not None:
            from twisted.internet import reactor

            try:
                clientFromString(reactor, self["backend"])
            except (ValueError, TypeError, KeyError) as e:
                raise usage.UsageError(f"--backend {self['backend']!r} is not a valid endpoint: {e}") from e
        if self["plot"] is not None:
            if not self["plot"].endswith((".png", ".svg")):
                raise usage.UsageError(f"--plot needs a .png or .svg file name, not {self['plot']!r}")
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise usage.UsageError("--plot needs matplotlib: pip install 'twisted_sockshare[plot]'") from None

    def plan(self) -> Plan:
        """
        The L{Plan} these options describe.
        """
        duration = self["duration"]
        if duration is None and self["requests"] is None:
            duration = 2.0
        return Plan(
            strategies=list(dict.fromkeys(self["strategies"])) or list(DEFAULT_KINDS),
            concurrencies=list(dict.fromkeys(self["concurrencies"])) or [100 if self["mix"] is None else 10],
            requests=self["requests"],
            duration=duration,
            payloadSize=self["payload-size"],
            delay=self["delay"],
            idleTimeout=self["idle-timeout"],
            backend=self["backend"],
            separateProcess=not self["in-process"],
            pin=not self["no-pin"],
            warmup=self["warmup"],
            bursts=self["bursts"],
            burstSize=self["burst-size"],
            burstGap=self["burst-gap"],
            memory=self["memory"],
            seed=self["seed"],
            repeat=self["repeat"],
            restartEvery=self["restart-every"],
            idempotent=bool(self["idempotent"]),
            waitForReady=bool(self["wait-for-ready"]),
            mix=self["mix"],
        )


class DemoOptions(_Command):
    """
    Options of C{sockshare demo}: none are needed.
    """

    command = "demo"
    longdesc = (
        "Start a demo backend in its own process and drive 100 concurrent callers through each "
        "strategy, three short interleaved runs each (about 15 s in all); print the median of each, "
        "and what it shows."
    )
    optParameters: list[Any] = [
        ["duration", "d", 0.5, "Seconds per run.", number(float, "duration", 0, False)],
        ["repeat", "r", 3, "Runs per strategy; the median is reported.", number(int, "repeat", 1)],
    ]

    def plan(self) -> Plan:
        return Plan(duration=self["duration"], concurrencies=[100], warmup=300, repeat=self["repeat"])


class Options(usage.Options):
    """
    C{sockshare COMMAND [options]}.
    """

    synopsis = "Usage: sockshare [--version] COMMAND [options]"
    longdesc = "Compare ways of sharing a connection to a backend: try 'sockshare demo'."
    subCommands = [
        ["demo", None, DemoOptions, "Run the comparison with the defaults (about 15 s)."],
        ["bench", None, BenchOptions, "Run benchmarks, with every knob."],
    ]

    def opt_version(self) -> None:
        """
        Print twisted_sockshare's version (and Twisted's) and exit.
        """
        _version()

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("give a command: demo or bench")


async def _main(reactor: Any, options: Options, out: TextIO) -> None:
    command = options.subOptions
    plan = command.plan()
    progress = None if command.get("quiet") else ProgressLine(sys.stderr, reactor)
    if options.subCommand == "demo":
        print(
            f"Measuring {len(plan.strategies)} ways of sending requests to a backend (a separate process), "
            f"{plan.concurrencies[0]} concurrent callers, {plan.duration} s each...",
            file=out,
            flush=True,
        )
    results = await run(reactor, plan, progress)
    print(render(results), file=out)
    if options.subCommand == "demo":
        print("", file=out)
        print("The strategies:", file=out)
        print(legend(results.rows), file=out)
        print("", file=out)
        print(summary(results.rows), file=out)
    if command.get("json"):
        writeJSON(results, command["json"])
        print(f"wrote {command['json']}", file=out)
    if command.get("plot"):
        plot(results, command["plot"])
        print(f"wrote {command['plot']}", file=out)
    failed = tooManyErrors(results.rows, command.get("max-errors", 0.01))
    if failed:
        for line in failed:
            print(f"sockshare {options.subCommand}: {line}", file=sys.stderr)
        raise SystemExit(1)


def tooManyErrors(rows: list[Row], limit: float) -> list[str]:
    """
    What to say of each measurement whose errors are over C{limit} (a
    fraction of its requests).
    """
    return [
        f"{row.strategy} at {row.concurrency} callers: {row.errors:,} of {row.requests:,} requests failed "
        f"({', '.join(f'{kind} {n:,}' for kind, n in sorted(row.errorKinds.items()))}), "
        f"above --max-errors={limit}"
        for row in rows
        if row.requests and row.errors / row.requests > limit
    ]


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> None:
    """
    The C{sockshare} console script.  Exits 0 on success, 1 when a
    measurement's errors exceed C{--max-errors}, 2 on bad options.
    """
    options = Options()
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except usage.UsageError as e:
        command = f"sockshare {options.subCommand}" if options.subCommand else "sockshare"
        print(f"{command}: error: {e}", file=sys.stderr)
        print(f"Try '{command} --help'.", file=sys.stderr)
        sys.exit(2)
    react(_main, (options, out or sys.stdout))


__all__ = ["main", "Options", "BenchOptions", "DemoOptions"]
