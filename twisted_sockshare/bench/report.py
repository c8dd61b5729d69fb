# -*- test-case-name: tests.test_bench -*-
"""
How a run's figures are shown: a table, the ratios the project's targets
are stated in, a live progress line, JSON and a plot.
"""

from __future__ import annotations

import json
from typing import IO, Any

from twisted.internet.task import LoopingCall

from .contenders import KINDS
from .load import ClosedLoop
from .runner import Results, Row


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(
            str(cell).ljust(w) if i == 0 else str(cell).rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )


def table(rows: list[Row]) -> str:
    """
    The main table: one line per contender and concurrency.
    """
    header = [
        "strategy",
        "concurrency",
        "requests",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "connections*",
        "CPU us/req",
        "server us/req",
    ]
    lines = []
    for row in rows:
        name = row.strategy if row.library else f"{row.strategy} (other tool)"
        lines.append(
            [
                name,
                str(row.concurrency),
                str(row.requests),
                f"{row.requestsPerSecond:,.0f}",
                f"{row.p50Ms:.2f}",
                f"{row.p99Ms:.2f}",
                _errors(row.errors, row.errorKinds),
                str(row.connectionsOpened),
                f"{row.cpuUsPerRequest:.1f}",
                f"{row.serverCpuUsPerRequest:.1f}" if row.serverCpuUsPerRequest else "-",
            ]
        )
    return _table(header, lines) + (
        "\n* connections opened, warm-up included; CPU us/req: the load generator's CPU time per request; "
        "server us/req: the backend process's"
    )


def _errors(count: int, kinds: dict[str, int]) -> str:
    """
    An error count and its kinds, most frequent first: C{"12 (RequestTimeout 10, WrongReply 2)"}.
    """
    if not count:
        return "0"
    ordered = sorted(kinds.items(), key=lambda item: (-item[1], item[0]))
    return f"{count:,} (" + ", ".join(f"{kind} {n:,}" for kind, n in ordered) + ")"


def burstyTable(bursty: list[dict[str, Any]]) -> str:
    header = ["strategy", "bursts", "requests", "errors", "p99 ms", "connections"]
    return _table(
        header,
        [
            [
                b["strategy"],
                f"{b['bursts']}x{b['burstSize']}",
                str(b["requests"]),
                str(b["errors"]),
                f"{b['p99Ms']:.2f}",
                str(b["connectionsOpened"]),
            ]
            for b in bursty
        ],
    )


def memoryTable(memory: list[dict[str, Any]]) -> str:
    header = ["strategy", "outstanding", "bytes/request", "peak RSS MiB", "errors"]
    return _table(
        header,
        [
            [
                m["strategy"],
                str(m["outstanding"]),
                f"{m['bytesPerRequest']:.0f}",
                f"{m['peakResidentBytes'] / 2**20:.1f}",
                str(sum(m["errors"].values())),
            ]
            for m in memory
        ],
    )


def ratios(rows: list[Row]) -> list[str]:
    """
    The comparisons the project's targets are stated in, for every
    concurrency where both sides were measured.
    """
    found: dict[tuple[int, str], Row] = {(row.concurrency, row.strategy): row for row in rows}
    lines = []
    for concurrency in sorted({row.concurrency for row in rows}):
        server = serverRatio(found.get((concurrency, "server")), found.get((concurrency, "minimal-server")))
        if server:
            lines.append(f"c={concurrency}: {server}")
        shared = found.get((concurrency, "shared"))
        if shared is None or shared.requestsPerSecond == 0:
            continue
        parts = []
        for other in ("per-request", "serialized", "amp", "http"):
            row = found.get((concurrency, other))
            if row is not None and row.requestsPerSecond:
                part = f"{shared.requestsPerSecond / row.requestsPerSecond:.1f}x {other}"
                if other == "per-request" and shared.p99Ms:
                    part += f" (p99 1/{row.p99Ms / shared.p99Ms:.1f})"
                parts.append(part)
        costs = []
        for other in ("minimal", "persistent"):
            row = found.get((concurrency, other))
            if row is not None and row.requestsPerSecond:
                parts.append(f"{100 * shared.requestsPerSecond / row.requestsPerSecond:.0f}% of {other}")
                if row.cpuUsPerRequest:
                    costs.append(f"{100 * (shared.cpuUsPerRequest / row.cpuUsPerRequest - 1):+.0f}% vs {other}")
        if parts:
            lines.append(f"c={concurrency}: shared does " + ", ".join(parts) + " in requests/s")
        if costs:
            lines.append(
                f"c={concurrency}: shared's CPU per request ({shared.cpuUsPerRequest:.1f} us): " + ", ".join(costs)
            )
    return lines


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def serverRatio(server: Row | None, floor: Row | None) -> str:
    """
    How the library's server compares with the simplest hand-written one,
    both driven by the same client: the median of the ratios of runs made
    one after the other (so a disturbance of the machine touches both sides
    of a pair), p99 and the server process's CPU per request.  Empty if
    either was not measured.
    """
    if server is None or floor is None or not floor.requestsPerSecond:
        return ""
    pairs = [mine / theirs for mine, theirs in zip(server.rates, floor.rates, strict=False) if theirs]
    ratio = _median(pairs) if pairs else server.requestsPerSecond / floor.requestsPerSecond
    text = f"the server does {ratio:.2f}x the requests/s of minimal-server"
    if len(pairs) > 1:
        text += f" (median of {len(pairs)} pairs, {min(pairs):.2f}-{max(pairs):.2f})"
    text += f", p99 {server.p99Ms:.2f} ms vs {floor.p99Ms:.2f} ms"
    if server.serverCpuUsPerRequest and floor.serverCpuUsPerRequest:
        text += f", server CPU {server.serverCpuUsPerRequest:.1f} vs {floor.serverCpuUsPerRequest:.1f} us/request"
    return text


#: Above this spread of repeated runs ((fastest - slowest) / median), two
#: contenders' rates are not compared.
SPREAD_LIMIT = 0.15


def legend(rows: list[Row]) -> str:
    """
    What each strategy of C{rows} is, one per line, in the table's order.
    """
    names = list(dict.fromkeys(row.strategy for row in rows))
    width = max((len(name) for name in names), default=0)
    return "\n".join(f"  {name:<{width}}  {KINDS[name].summary}" for name in names if name in KINDS)


def summary(rows: list[Row]) -> str:
    """
    What the demo shows, in a few sentences drawn from its figures.
    """
    found = {row.strategy: row for row in rows}
    shared, legacy = found.get("shared"), found.get("per-request")
    if shared is None or legacy is None or not legacy.requestsPerSecond or not shared.requestsPerSecond:
        return ""
    sentences = [
        f"Sharing one connection (shared) served {shared.requestsPerSecond / legacy.requestsPerSecond:.0f}x the "
        f"requests per second of a connection per request, with a median latency of {shared.p50Ms:.1f} ms instead "
        f"of {legacy.p50Ms:.1f} ms, over {shared.connectionsOpened} connection(s) instead of "
        f"{legacy.connectionsOpened:,}, and {shared.errors} errors."
    ]
    serialized = found.get("serialized")
    if serialized is not None and serialized.requestsPerSecond:
        sentences.append(
            f"One request at a time on one connection (serialized) made callers queue: "
            f"{shared.requestsPerSecond / serialized.requestsPerSecond:.0f}x slower than shared."
        )
    minimal = found.get("minimal")
    if minimal is not None and minimal.requestsPerSecond:
        spread = max(shared.spread, minimal.spread)
        ratio = shared.requestsPerSecond / minimal.requestsPerSecond
        if spread > SPREAD_LIMIT and abs(ratio - 1) < spread:
            sentences.append(
                f"Against minimal, the simplest correct hand-written client, no conclusion: the repeated runs "
                f"of each spread by up to {100 * spread:.0f}% of their median, more than the difference "
                "measured (the machine is busy; run 'sockshare bench -s shared,minimal --repeat 5')."
            )
        else:
            sentences.append(
                f"With its timeouts, counting and idle close, shared ran at "
                f"{100 * ratio:.0f}% of the rate of minimal, the "
                "simplest correct hand-written client, which has none of them (median of the runs)."
            )
    return " ".join(sentences)


def mixedTable(rows: list[dict[str, Any]]) -> str:
    """
    The mixed-size figures, one line per placement.
    """
    where = {
        "alone": "nowhere (small alone)",
        "shared": "the same shared client",
        "separate": "a client of their own",
        "whole": "the same client, no fragments",
    }
    return _table(
        ["large requests go to", "small req/s", "small p50 ms", "small p99 ms", "large req/s", "errors"],
        [
            [
                where[row["placement"]],
                f"{row['smallRequestsPerSecond']:,.0f}",
                f"{row['smallP50Ms']:.2f}",
                f"{row['smallP99Ms']:.2f}",
                f"{row['largeRequestsPerSecond']:,.1f}" if row["placement"] != "alone" else "-",
                str(row["smallErrors"] + row["largeErrors"]),
            ]
            for row in rows
        ],
    )


def mixedSummary(rows: list[dict[str, Any]]) -> str:
    """
    What sharing the connection with the large requests costs the small
    ones, against a connection of their own.
    """
    byPlacement = {row["placement"]: row for row in rows}
    shared, separate = byPlacement["shared"], byPlacement["separate"]

    def ratio(name: str, row: dict[str, Any]) -> str:
        return f"{row[name] / separate[name]:.2f}x" if separate[name] else "-"

    text = (
        f"Shared against separate: small requests/s {ratio('smallRequestsPerSecond', shared)}, "
        f"small p99 {ratio('smallP99Ms', shared)}, large requests/s {ratio('largeRequestsPerSecond', shared)}"
    )
    whole = byPlacement.get("whole")
    if whole is not None:
        text += (
            f"; with no fragments (fragmentSize=None): {ratio('smallRequestsPerSecond', whole)}, "
            f"{ratio('smallP99Ms', whole)}, {ratio('largeRequestsPerSecond', whole)}"
        )
    return text + " (medians of the runs)."


def render(results: Results) -> str:
    """
    The whole report, as printed.
    """
    m = results.machine
    pinned = (
        f"load generator on CPU {m['clientCpu']}, backend on CPU {m['backendCpu']}"
        if m["clientCpu"] is not None
        else "not pinned"
    )
    backend = results.plan["backend"] or ("separate process" if results.plan["separateProcess"] else "in process")
    parts = [
        f"twisted_sockshare {m['twisted_sockshare']} on Python {m['python']}, Twisted {m['twisted']}, "
        f"{m['cpus']} CPUs; backend: {backend}; {pinned}; payload {results.plan['payloadSize']} bytes, "
        f"backend delay {results.plan['delay']} s",
    ]
    if results.rows:
        parts += ["", table(results.rows)]
    lines = ratios(results.rows)
    if lines:
        parts += ["", *lines]
    if results.bursty:
        parts += [
            "",
            "Bursty load (bursts of requests all at once, with gaps between them):",
            burstyTable(results.bursty),
        ]
    if results.memory:
        parts += ["", "Memory held by outstanding requests:", memoryTable(results.memory)]
    if results.mixed:
        first = results.mixed[0]
        parts += [
            "",
            f"Mixed sizes: {first['smallCallers']} callers sending {first['small']:,}-byte requests while "
            f"{first['largeCallers']} send {first['large']:,}-byte ones:",
            mixedTable(results.mixed),
            mixedSummary(results.mixed),
        ]
    process = results.process
    if "rssEnd" in process:
        restarts = f", backend restarted {process['restarts']} times" if process["restarts"] else ""
        parts += [
            "",
            f"Load generator process: RSS {process['rssStart'] / 2**20:.1f} MiB at the start, "
            f"{process['rssEnd'] / 2**20:.1f} MiB at the end (peak {process['peakRss'] / 2**20:.1f}); "
            f"open sockets {process['socketsStart']} at the start, {process['socketsEnd']} at the end{restarts}",
        ]
    for skipped in results.skipped:
        parts.append(f"skipped {skipped}")
    return "\n".join(parts)


def writeJSON(results: Results, path: str) -> None:
    with open(path, "w") as f:
        json.dump(results.toJSON(), f, indent=2)
        f.write("\n")


def plot(results: Results, path: str) -> None:
    """
    Requests/s and p99 latency against concurrency, one line per strategy.

    @raise ImportError: if matplotlib is not installed (the C{plot} extra).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rate, p99) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name in KINDS:
        rows = sorted((row for row in results.rows if row.strategy == name), key=lambda row: row.concurrency)
        if not rows:
            continue
        label = name if KINDS[name].library else f"{name} (other tool)"
        style = "-" if KINDS[name].library else "--"
        x = [row.concurrency for row in rows]
        rate.plot(x, [row.requestsPerSecond for row in rows], style, marker="o", label=label)
        p99.plot(x, [row.p99Ms for row in rows], style, marker="o", label=label)
    for axes, title in ((rate, "requests/s"), (p99, "p99 latency (ms)")):
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("concurrent callers")
        axes.set_title(title)
        axes.grid(True, which="both", alpha=0.3)
    rate.legend(fontsize="small")
    figure.suptitle(f"sockshare bench, payload {results.plan['payloadSize']} bytes")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


class ProgressLine:
    """
    A live line on a terminal: requests done, rate and errors of the running
    measurement, from its start (or once it has run for C{after} seconds),
    every C{every} seconds.  Silent when the stream is not a terminal.
    """

    def __init__(self, stream: IO[str], reactor: Any, after: float = 0.0, every: float = 0.5) -> None:
        self._stream = stream
        self._reactor = reactor
        self._after = after
        self._every = every
        self._enabled = stream.isatty()
        self._call: LoopingCall | None = None
        self._shown = False

    def __call__(self, label: str, load: ClosedLoop | None) -> None:
        if not self._enabled:
            return
        if self._call is not None and self._call.running:
            self._call.stop()
        self._call = None
        if self._shown:
            self._stream.write("\r\033[K")
            self._stream.flush()
            self._shown = False
        if load is not None:
            started = self._reactor.seconds()
            self._call = LoopingCall(self._show, label, load, started)
            self._call.clock = self._reactor
            self._call.start(self._every, now=self._after == 0)

    def _show(self, label: str, load: ClosedLoop, started: float) -> None:
        elapsed = self._reactor.seconds() - started
        if elapsed < self._after:
            return
        tally = load.tally
        rate = f"{tally.succeeded / elapsed:,.0f} req/s" if elapsed > 0 else "starting"
        self._stream.write(
            f"\r\033[K  {label}: {tally.completed:,} done, {rate}, {tally.failed} errors, {elapsed:.1f} s"
        )
        self._stream.flush()
        self._shown = True
