"""
Tests of the C{sockshare} command: option errors, and short real runs of
every strategy through the console entry point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare.bench.cli import BenchOptions, Options
from twisted_sockshare.bench.contenders import KINDS

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


class OptionTests(SynchronousTestCase):
    def parse(self, *argv: str) -> BenchOptions:
        options = Options()
        options.parseOptions(["bench", *argv])
        assert isinstance(options.subOptions, BenchOptions)
        return options.subOptions

    def test_defaults(self) -> None:
        """With no options: every strategy, 100 callers, 2 s each, backend in its own process, pinned."""
        plan = self.parse().plan()
        self.assertEqual(plan.strategies, list(KINDS))
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
        ]:
            e = self.assertRaises(usage.UsageError, self.parse, *argv)
            self.assertIn(words, str(e))

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

    def test_everyStrategy(self) -> None:
        """A tiny run of every strategy completes with no errors and writes the documented JSON."""
        path = tempPath(self)
        result = sockshare("bench", "--requests", "200", "--warmup", "20", "--concurrency", "10", "--json", path)
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
                 "requestsPerSecond", "p50Ms", "p99Ms", "connectionsOpened", "cpuUsPerRequest"},
            )  # fmt: skip
            self.assertEqual((row["requests"], row["errors"], row["concurrency"]), (200, 0, 10), row["strategy"])
            self.assertGreater(row["requestsPerSecond"], 0)
        opened = {row["strategy"]: row["connectionsOpened"] for row in data["rows"]}
        self.assertEqual(opened["per-request"], 220)
        self.assertEqual(opened["shared-linger"], 1)

    def test_demo(self) -> None:
        """The demo compares every strategy and says what it shows."""
        result = sockshare("demo", "--duration", "0.3")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Sharing one connection (shared) served", result.stdout)
        self.assertIn("c=100: shared does", result.stdout)


class SoakTests(SynchronousTestCase):
    def test_shortSoak(self) -> None:
        """
        Six seconds of load while the backend process is killed and
        restarted every second: only connection errors, most requests
        served, no socket left open, memory steady.
        """
        path = tempPath(self)
        result = sockshare(
            "bench", "-s", "shared", "-c", "20", "--duration", "6", "--restart-every", "1", "--json", path
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(path) as f:
            data = json.load(f)
        (row,) = data["rows"]
        self.assertLessEqual(set(row["errorKinds"]), {"ConnectFailed", "ConnectionDropped"})
        self.assertGreater(row["requests"] - row["errors"], 1000)
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
