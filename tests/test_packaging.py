"""
The package as installed: its metadata (pyproject.toml) and its news
fragments (towncrier).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent


class MetadataTests(SynchronousTestCase):
    def test_coreNeedsTwistedAlone(self) -> None:
        """
        The library requires Twisted and nothing else; what the gateway's
        metrics, the plots and the tests need are extras.
        """
        dist = distribution("twisted_sockshare")
        self.assertEqual(dist.metadata["Requires-Python"], ">=3.11")
        required = [r for r in dist.requires or [] if "extra ==" not in r]
        self.assertEqual([re.split(r"[<>=! ]", r)[0] for r in required], ["Twisted"])
        self.assertTrue(any("prometheus_client" in r and 'extra == "metrics"' in r for r in dist.requires or []))
        self.assertIn("metrics", dist.metadata.get_all("Provides-Extra") or [])

    def test_command(self) -> None:
        """The C{sockshare} command is installed, and reports the package's version."""
        scripts = {
            e.name: e.value for e in distribution("twisted_sockshare").entry_points if e.group == "console_scripts"
        }
        self.assertEqual(scripts, {"sockshare": "twisted_sockshare.bench.cli:main"})
        from twisted_sockshare import __version__

        self.assertEqual(distribution("twisted_sockshare").version, __version__)


class NewsTests(SynchronousTestCase):
    def test_fragmentsRender(self) -> None:
        """
        C{towncrier build --draft} (which writes nothing) renders every news
        fragment in changelog.d/ under its issue number.
        """
        towncrier = shutil.which("towncrier", path=str(Path(sys.executable).parent)) or shutil.which("towncrier")
        self.assertIsNotNone(towncrier, "towncrier is in the test extra")
        result = subprocess.run(
            [towncrier, "build", "--draft", "--version", "99.0.0"], cwd=ROOT, capture_output=True, text=True
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        fragments = sorted((ROOT / "changelog.d").glob("*.rst"))
        self.assertNotEqual(fragments, [])
        for fragment in fragments:
            issue = fragment.name.split(".")[0]
            first = " ".join(fragment.read_text().split())[:60]
            self.assertIn(first, " ".join(result.stdout.split()))
            self.assertIn(f"(#{issue})", result.stdout)
