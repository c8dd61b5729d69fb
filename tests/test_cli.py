"""
Tests of the C{sockshare} command: option errors, and short real runs of
every strategy through the console entry point.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare.bench.cli import BenchOptions, Options
from twisted_sockshare.bench.contenders import DEFAULT_KINDS, KINDS

from .helpers import tempPath

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sockshare(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """
    Run C{python -m twisted_sockshare ARGV...}.
    """
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, "-m", "twisted_sockshare", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


@contextmanager
def socketPort() -> Iterator[int]:
    """
    A loopback port nothing listens on, held (bound, not listening) so that
    no other test takes it meanwhile: connecting to it is refused.
    """
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


class OptionTests(SynchronousTestCase):
    def parse(self, *argv: str) -> BenchOptions:
        options = Options()
        options.parseOptions(["bench", *argv])
        assert isinstance(options.subOptions, BenchOptions)
        return options.subOptions

    def test_requestOptionsNeedSharedClients(self) -> None:
        """
        --idempotent and --wait-for-ready are given to the shared clients'
        requests; alone they choose those strategies, and with another one
        they are refused, naming it.
        """
        options = self.parse("--idempotent", "--wait-for-ready")
        plan = options.plan()
        self.assertEqual((plan.idempotent, plan.waitForReady), (True, True))
        self.assertEqual(plan.strategies, ["shared", "shared-eager", "shared-linger", "persistent"])
        self.assertFalse(self.parse().plan().idempotent)
        with self.assertRaises(usage.UsageError) as refused:
            self.parse("--idempotent", "-s", "shared", "-s", "amp")
        self.assertIn("not of amp", str(refused.exception))

    def test_defaults(self) -> None:
        """
        With no options: every way of sending requests (not the server
        comparison), 100 callers, 2 s each, backend in its own process, pinned.
        """
        plan = self.parse().plan()
        self.assertEqual(plan.strategies, DEFAULT_KINDS)
        self.assertEqual(self.parse("-s", "all").plan().strategies, list(KINDS))
        self.assertEqual(set(KINDS) - set(DEFAULT_KINDS), {"server", "minimal-server"})
        self.assertEqual((plan.concurrencies, plan.duration, plan.requests), ([100], 2.0, None))
        self.assertTrue(plan.separateProcess and plan.pin)

    def test_repeatable(self) -> None:
        """--strategy and --concurrency repeat, or take comma lists; duplicates are dropped."""
        plan = self.parse("-s", "shared", "--strategy", "minimal,shared", "-c", "1,10", "--concurrency", "100").plan()
        self.assertEqual(plan.strategies, ["shared", "minimal"])
        self.assertEqual(plan.concurrencies, [1, 10, 100])

    def test_knobs(self) -> None:
        plan = self.parse(
            "--requests", "500", "--payload-size", "65536", "--delay", "0.01", "--idle-timeout", "2",
            "--in-process", "--no-pin", "--seed", "7", "--bursts", "4", "--memory", "100", "--repeat", "3",
        ).plan()  # fmt: skip
        self.assertEqual((plan.requests, plan.duration, plan.payloadSize, plan.delay), (500, None, 65536, 0.01))
        self.assertEqual((plan.idleTimeout, plan.seed, plan.bursts, plan.memory, plan.repeat), (2.0, 7, 4, 100, 3))
        self.assertFalse(plan.separateProcess or plan.pin)

    def test_mix(self) -> None:
        """--mix SMALL,LARGE:N is the mixed-size plan, with 10 small callers unless -c says; :N defaults to 1."""
        plan = self.parse("--mix", "64,1048576:2").plan()
        self.assertEqual((plan.mix.small, plan.mix.large, plan.mix.largeCallers), (64, 1_048_576, 2))  # type: ignore[union-attr]
        self.assertEqual(plan.concurrencies, [10])
        plan = self.parse("--mix", "0,5000", "-c", "3", "--backend", "tcp:127.0.0.1:1").plan()
        self.assertEqual((plan.mix.largeCallers, plan.concurrencies), (1, [3]))  # type: ignore[union-attr]
        self.assertIsNone(self.parse().plan().mix)

    def test_errorsNameTheOption(self) -> None:
        """Bad values are refused with a message naming the option."""
        for argv, words in [
            (["--strategy", "fast"], "--strategy must be 'all' or one of"),
            (["--concurrency", "0"], "--concurrency must be >= 1"),
            (["--concurrency", "many"], "--concurrency takes a number"),
            (["--requests", "10", "--duration", "1"], "--requests or --duration, not both"),
            (["--duration", "0"], "--duration must be > 0"),
            (["--payload-size", "-1"], "--payload-size must be >= 0"),
            (["--in-process", "--server-process"], "not both"),
            (["--backend", "nonsense:1"], "--backend 'nonsense:1' is not a valid endpoint"),
            (["--plot", "out.txt"], "--plot needs a .png or .svg"),
            (["--json", "/nonexistent/dir/x.json"], "the directory '/nonexistent/dir' does not exist"),
            (["--plot", "/nonexistent/dir/x.svg"], "the directory '/nonexistent/dir' does not exist"),
            (["--json", "/"], "--json '/' is a directory"),
            (["--max-errors", "2"], "--max-errors is a fraction of the requests, from 0 to 1"),
            (["--max-errors", "-0.1"], "--max-errors must be >= 0"),
            (["--mix", "64"], "--mix must be SMALL,LARGE:N"),
            (["--mix", "64,x:1"], "--mix must be SMALL,LARGE:N"),
            (["--mix", "4096,64"], "--mix needs 0 <= SMALL < LARGE"),
            (["--mix", "64,1024:0"], "--mix needs at least one large caller"),
            (["--mix", "64,2000000"], "--mix LARGE is at most 1,048,576 bytes"),
            (["--mix", "64,1024", "-s", "shared"], "--mix measures shared clients: give no --strategy"),
            (["--mix", "64,1024", "-n", "10"], "--mix runs for --duration: give no --requests"),
        ]:
            e = self.assertRaises(usage.UsageError, self.parse, *argv)
            self.assertIn(words, str(e))

    def test_help(self) -> None:
        """
        C{--help} names the command in its usage line, has no doubled
        periods, and lists the strategies one per line.
        """
        for command in ("bench", "demo"):
            printed = io.StringIO()
            self.patch(sys, "stdout", printed)
            with self.assertRaises(SystemExit):
                Options().parseOptions([command, "--help"])
            text = printed.getvalue()
            self.assertTrue(text.startswith(f"Usage: sockshare {command} [options]\n"), text[:80])
            self.assertNotIn("..", text)
        text = str(self.parse())
        for name, kind in KINDS.items():
            self.assertRegex(text, rf"\n  {re.escape(name)} +{re.escape(kind.summary)}")

    def test_commandNeeded(self) -> None:
        e = self.assertRaises(usage.UsageError, Options().parseOptions, [])
        self.assertIn("demo or bench", str(e))


class CommandTests(SynchronousTestCase):
    def test_badOptionExits2(self) -> None:
        """A bad option prints one clear line to stderr and exits 2."""
        result = sockshare("bench", "--concurrency", "0")
        self.assertEqual(result.returncode, 2)
        self.assertIn("sockshare bench: error: --concurrency must be >= 1, not 0", result.stderr)
        self.assertEqual(result.stdout, "")

    def test_version(self) -> None:
        """C{--version}, on the command or a subcommand, is the package's (and names Twisted's)."""
        import twisted
        from twisted_sockshare import __version__

        for argv in (["--version"], ["bench", "--version"], ["demo", "--version"]):
            result = sockshare(*argv)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(result.stdout, f"twisted_sockshare {__version__} (Twisted {twisted.__version__})\n")

    def test_jsonPathCheckedFirst(self) -> None:
        """An unwritable --json fails at once, before any measurement, with one line and exit 2."""
        result = sockshare("bench", "--json", "/nonexistent/dir/x.json", timeout=20)
        self.assertEqual(result.returncode, 2)
        self.assertIn(
            "--json '/nonexistent/dir/x.json': the directory '/nonexistent/dir' does not exist", result.stderr
        )
        self.assertNotIn("Traceback", result.stderr)

    def test_unreachableBackendFails(self) -> None:
        """
        Against a backend that refuses every connection, the rate counts no
        successes, the table names the errors' kind, and the run exits 1.
        """
        with socketPort() as port:
            result = sockshare(
                "bench", "--backend", f"tcp:127.0.0.1:{port}", "-s", "shared", "-n", "2000", "--warmup", "0",
                "-c", "10", "--quiet", timeout=60,
            )  # fmt: skip
        self.assertEqual(result.returncode, 1, result.stderr)
        row = next(line for line in result.stdout.splitlines() if line.startswith("shared "))
        self.assertIn(" 0 ", row)  # requests/s: no success
        self.assertIn("2,000 (ConnectFailed 2,000)", row)
        self.assertIn("sockshare bench: shared at 10 callers: 2,000 of 2,000 requests failed", result.stderr)
        self.assertIn("above --max-errors=0.01", result.stderr)

    def test_everyStrategy(self) -> None:
        """
        A tiny run of every strategy completes with no errors, compares the
        servers, and writes the documented JSON.
        """
        path = tempPath(self)
        result = sockshare("bench", "-s", "all", "--requests", "200", "--warmup", "20", "--concurrency", "10",
                           "--json", path)  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        for name in KINDS:
            self.assertIn(name, result.stdout)
        with open(path) as f:
            data = json.load(f)
        self.assertEqual(data["machine"]["cpus"], os.cpu_count())
        self.assertEqual([row["strategy"] for row in data["rows"]], list(KINDS))
        for row in data["rows"]:
            self.assertEqual(
                set(row),
                {"strategy", "library", "concurrency", "payloadSize", "requests", "errors", "errorKinds", "seconds",
                 "requestsPerSecond", "p50Ms", "p99Ms", "connectionsOpened", "cpuUsPerRequest", "spread",
                 "serverCpuUsPerRequest", "rates"},
            )  # fmt: skip
            self.assertEqual((row["requests"], row["errors"], row["concurrency"]), (200, 0, 10), row["strategy"])
            self.assertGreater(row["requestsPerSecond"], 0)
        opened = {row["strategy"]: row["connectionsOpened"] for row in data["rows"]}
        self.assertEqual(opened["per-request"], 220)
        self.assertEqual(opened["shared-linger"], 1)
        self.assertIn("c=10: the server does", result.stdout)

    def test_demo(self) -> None:
        """The demo compares every strategy, says what each is, and what it shows."""
        result = sockshare("demo", "--duration", "0.3", "--repeat", "1")
        self.assertEqual(result.returncode, 0, result.stderr)
        legend = result.stdout.split("The strategies:\n", 1)[1].split("\n\n", 1)[0]
        self.assertEqual(sorted(line.split()[0] for line in legend.splitlines()), sorted(DEFAULT_KINDS))
        self.assertIn("Sharing one connection (shared) served", result.stdout)
        self.assertIn("c=100: shared does", result.stdout)


class SoakTests(SynchronousTestCase):
    def test_shortSoak(self) -> None:
        """
        Six seconds of load while the backend process is killed and
        restarted every second, the requests idempotent and waiting for
        ready: none fails (each waits through the restart, or is sent
        again), most are served, no socket is left open, memory is steady.
        """
        path = tempPath(self)
        result = sockshare(
            "bench", "-s", "shared", "-c", "20", "--duration", "6", "--restart-every", "1", "--max-errors", "0",
            "--idempotent", "--wait-for-ready", "--json", path,
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr + result.stdout)
        with open(path) as f:
            data = json.load(f)
        (row,) = data["rows"]
        self.assertEqual(row["errors"], 0, row["errorKinds"])
        self.assertGreater(row["requests"], 1000)
        process = data["process"]
        # Each restart waits for the new process to listen (a Python start-up).
        self.assertGreaterEqual(process["restarts"], 2)
        self.assertEqual(process["socketsEnd"], process["socketsStart"])
        self.assertLess(process["rssEnd"] - process["rssStart"], 64 * 2**20)
        self.assertIn("backend restarted", result.stdout)

    def test_restartNeedsProcess(self) -> None:
        result = sockshare("bench", "--restart-every", "1", "--in-process")
        self.assertEqual(result.returncode, 2)
        self.assertIn("--restart-every needs the backend in its own process", result.stderr)
