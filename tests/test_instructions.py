"""
The request path's instruction budget: callgrind counts instructions, so the
check holds on a busy machine where a timing would not.  The budget itself is
a benchmark, run once by C{.ci/run} (C{python benchmarks/instructions.py
--check}, about 45 s of callgrind), not by the unit suites; these tests check
the checker.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import tomllib
from pathlib import Path
from types import ModuleType

from twisted.trial.unittest import SynchronousTestCase

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "instructions.py"


def _instructions() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sockshare_instructions", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class InstructionBudgetTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.instructions = _instructions()
        self.budget = json.loads(self.instructions.BUDGET.read_text())

    def test_overBudgetNamed(self) -> None:
        """
        Counts over the budget are refused, each with the figure that broke
        it; those within it are not.
        """
        overBudget = self.instructions.overBudget
        servers = {"minimal-server": 500, "server": 550}
        budget = {"minimal": 1000, "shared": 1200, **servers, "versions": self.instructions.versions()}
        self.assertEqual(overBudget({"minimal": 1000, "shared": 1236, **servers}, budget), [])
        self.assertEqual(overBudget({"minimal": 1030, "shared": 1236, **servers}, budget), [])
        problems = overBudget({"minimal": 1000, "shared": 1240, **servers}, budget)
        self.assertEqual(len(problems), 2, problems)
        self.assertIn("shared/minimal is 1.240", problems[0])
        self.assertIn("shared: 1,240 instructions per request, budget 1,200", problems[1])
        # The server against its floor, the same way.
        problems = overBudget({"minimal": 1000, "shared": 1200, "minimal-server": 500, "server": 580}, budget)
        self.assertEqual(len(problems), 2, problems)
        self.assertIn("server/minimal-server is 1.160", problems[0])
        self.assertIn("server: 580 instructions per request, budget 550", problems[1])
        # On other versions, only the ratios count.
        budget["versions"] = {"python": "2.7", "twisted": "8.0"}
        counts = {"minimal": 2000, "shared": 2400, "minimal-server": 900, "server": 990}
        self.assertEqual(overBudget(counts, budget), [])
        self.assertEqual(len(overBudget({"minimal": 2000, "shared": 2500, **servers}, budget)), 1)
        # A budget written before the server had one says so.
        del budget["server"]
        self.assertIn("no budget for server", overBudget({"minimal": 1000, "shared": 1200, **servers}, budget)[0])

    def test_anEntryPerTestedPython(self) -> None:
        """
        The budget has an entry, written on that interpreter, for each
        Python version the package's classifiers list (those CI tests).
        """
        with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "pyproject.toml"), "rb") as f:
            classifiers = tomllib.load(f)["project"]["classifiers"]
        tested = sorted(c.rsplit(" ", 1)[1] for c in classifiers if re.fullmatch(r"Programming .* :: 3\.\d+", c))
        self.assertEqual(sorted(self.budget), tested)
        for python in tested:
            entry = self.instructions.budgetFor(self.budget, python)
            self.assertEqual(entry["versions"]["python"], python)
            self.assertGreater(entry["shared"], entry["minimal"])
            self.assertGreater(entry["server"], entry["minimal-server"])
        self.assertIsNone(self.instructions.budgetFor(self.budget, "2.7"))
