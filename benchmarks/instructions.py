"""
Instructions per request of the request_path.py cases (the client's) and
the server_path.py cases (the server's), counted by callgrind: the same
figure on a busy or an idle machine.

One run executes every case at C{LOW} rounds; one more run per case raises
that case alone to C{HIGH} rounds, so the difference divided by the extra
requests cancels start-up and import costs.  Every case makes 100 requests
a round.

    python benchmarks/instructions.py [CASE ...]      (needs valgrind)
    python benchmarks/instructions.py --check         (the budget, as CI checks it)
    python benchmarks/instructions.py --write-budget  (after a deliberate change)

The counts depend on the interpreter: the budget has an entry for each
Python version CI tests, written by --write-budget on that version, and
--check reads the running interpreter's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import twisted

HERE = Path(__file__).resolve().parent
SCRIPTS = (HERE / "request_path.py", HERE / "server_path.py")
BUDGET = HERE / "instruction_budget.json"
LOW, HIGH = 20, 70
PER_ROUND = 100

#: The cases the budget covers.
BUDGETED = ("minimal", "shared", "minimal-server", "server")
#: The budget's ratios: each library case against its floor.
RATIOS = (("shared", "minimal"), ("server", "minimal-server"))
#: How far over its budget a count may go.
TOLERANCE = 0.03


def cases() -> dict[str, Path]:
    """
    Every case, and the script that runs it.
    """
    sys.path.insert(0, str(HERE))
    import request_path
    import server_path

    return {
        **{case: SCRIPTS[0] for case in request_path.CASES},
        **{case: SCRIPTS[1] for case in server_path.CASES},
    }


def collected(script: Path, runs: list[str]) -> int:
    """
    Instructions callgrind counts for one process of C{script} running
    C{runs} (C{CASE:ROUNDS} each).
    """
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, str(script)]
    for run in runs:
        command += ["--run", run]
    env = dict(os.environ, PYTHONHASHSEED="0")  # the same dict and set layouts on every run
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stderr
    match = re.search(r"Collected : (\d+)", output)
    if match is None:
        raise RuntimeError(f"no count in callgrind's output:\n{output}")
    return int(match.group(1))


def perRequest(names: list[str]) -> dict[str, int]:
    """
    Instructions per request of each of the cases C{names}: those of one
    script run in one process.
    """
    scripts = cases()
    extra = (HIGH - LOW) * PER_ROUND
    counts = {}
    for script in SCRIPTS:
        mine = [name for name in names if scripts[name] == script]
        if not mine:
            continue
        base = collected(script, [f"{case}:{LOW}" for case in mine])
        for case in mine:
            runs = [f"{other}:{HIGH if other == case else LOW}" for other in mine]
            counts[case] = round((collected(script, runs) - base) / extra)
    return {name: counts[name] for name in names}


def versions() -> dict[str, str]:
    """
    What the counts depend on besides the code.
    """
    return {"python": f"{sys.version_info[0]}.{sys.version_info[1]}", "twisted": twisted.__version__}


def budgetFor(budgets: dict[str, dict], python: str) -> dict | None:
    """
    The entry of C{budgets} (the budget file) for Python C{python}
    (C{"3.12"}), if it has one.
    """
    return budgets.get(python)


def overBudget(counts: dict[str, int], budget: dict) -> list[str]:
    """
    Why C{counts} break C{budget}, if they do: the shared client's count
    relative to minimal's always, and the absolute counts when Python's
    and Twisted's versions are those the budget was written with.
    """
    problems = []
    for case, floor in RATIOS:
        if case not in budget:
            problems.append(f"no budget for {case}; write one with --write-budget")
            continue
        limit = budget[case] / budget[floor] * (1 + TOLERANCE)
        ratio = counts[case] / counts[floor]
        if ratio > limit:
            problems.append(f"{case}/{floor} is {ratio:.3f}, above the budget's {limit:.3f}")
    if budget["versions"] == versions():
        for case in BUDGETED:
            if case in budget and counts[case] > budget[case] * (1 + TOLERANCE):
                problems.append(f"{case}: {counts[case]:,} instructions per request, budget {budget[case]:,}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", help="default: every case")
    parser.add_argument("--check", action="store_true", help=f"fail if over {BUDGET.name} by > 3%%")
    parser.add_argument("--write-budget", action="store_true", help=f"write {BUDGET.name}")
    args = parser.parse_args()
    if args.check or args.write_budget:
        args.cases = list(BUDGETED)
    if not args.cases:
        args.cases = list(cases())
    python = versions()["python"]
    print(f"Python {sys.version.split()[0]}, Twisted {twisted.__version__}")
    counts = perRequest(args.cases)
    for case, count in counts.items():
        print(f"{case:<20} {count:>7,} instructions/request")
    budgets = json.loads(BUDGET.read_text()) if BUDGET.exists() else {}
    if args.write_budget:
        budgets[python] = {**counts, "versions": versions()}
        BUDGET.write_text(json.dumps(dict(sorted(budgets.items())), indent=2) + "\n")
    if args.check:
        budget = budgetFor(budgets, python)
        if budget is None:
            problems = [f"no budget for Python {python} in {BUDGET.name}; write one with --write-budget"]
        else:
            problems = overBudget(counts, budget)
        print("\n".join(problems) or "within budget")
        sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
