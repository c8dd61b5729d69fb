"""
The documentation's examples run as written.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "examples")


class ExampleTests(SynchronousTestCase):
    """
    Each example exits 0 and prints what the docs say it prints.
    """

    def runExample(self, name: str) -> str:
        result = subprocess.run(
            [sys.executable, os.path.join(EXAMPLES, name)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    def test_quickstart(self) -> None:
        """The quick start shares one connection among 100 requests."""
        self.assertEqual(
            self.runExample("quickstart.py"),
            "[b'HELLO 0', b'HELLO 1', b'HELLO 2'] ... 100 replies over 1 connection\n",
        )

    def test_netstringCodec(self) -> None:
        """The user-written codec of docs/codecs.rst pipelines 100 requests over one connection."""
        self.assertEqual(
            self.runExample("netstring_codec.py"),
            "[b'HELLO 0', b'HELLO 1'] ... 100 replies over 1 connection\n",
        )

    def test_dnsCodec(self) -> None:
        """docs/codecs.rst's DNS-over-TCP codec pipelines 100 queries to Twisted's DNS server over one connection."""
        self.assertEqual(
            self.runExample("dns_codec.py"),
            "['host0.example.test', 'host1.example.test'] ... 100 answers over 1 connection\n",
        )

    def test_testingDoubles(self) -> None:
        """docs/testing.rst's example tests code against the stub and the in-memory backend."""
        self.assertEqual(
            self.runExample("testing_with_doubles.py"),
            "stub: hello ada [b'HELLO Ada']\nmemory: ['Hello Ada', 'Hello Grace'] over 1 connection\n",
        )

    def test_asyncioApp(self) -> None:
        """
        docs/asyncio.rst's application awaits the client's Deferreds as asyncio
        futures on Twisted's asyncio reactor; cancelling a future cancels its
        request (CANCEL sent) and the connection stays shared.
        """
        self.assertEqual(
            self.runExample("asyncio_app.py"),
            "replies: ['HELLO 0', 'HELLO 1', 'HELLO 2']\n"
            "slow request cancelled after 0.2 s\n"
            "after cancelling: STILL SHARED\n"
            "cancelled=1 cancelsSent=1 connections=1\n",
        )

    def test_readmeUsage(self) -> None:
        """The README's usage example runs as written and prints what the README says."""
        with open(os.path.join(os.path.dirname(EXAMPLES), "..", "README.md"), encoding="utf-8") as readme:
            text = readme.read()
        code = text.split("```python\n", 1)[1].split("```", 1)[0]
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"prints `{result.stdout.strip()}`", text)
