"""The chaos run, short: every fault kind at least once, and exactly-once holds for every run.

`uv run python -m tests.chaos --runs 12 --seed 1 --wave 6` in-process (tests/chaos/__init__.py explains the
stack, the faults and the checks): a scheduler, three workers and a persistent Redis, each its own
process; workers SIGKILLed, SIGSTOPped past their lease, SIGTERMed; Redis's connections dropped and
Redis restarted; readers cut and resumed. Every bad figure of its table must be 0, or explained by
the two open bugs (then it xfails, with the evidence: README, "Failure modes"). The full run,
`--runs 200 --seed 7`, takes about nine minutes and is not part of the default suite.

Run it: `uv run pytest tests/reliability/test_chaos.py -s` (prints the table).
"""

from __future__ import annotations

import pytest

from tests.chaos.__main__ import run_chaos
from tests.chaos.check import BAD
from tests.chaos.plan import FAULT_KINDS


@pytest.mark.timeout(300)  # 50 s on a quiet 2-core machine, 150 s under a load of 15: the freeze alone is 11-14 s
def test_a_short_chaos_run_injects_every_fault_and_every_run_is_exactly_once() -> None:
    report = run_chaos(runs=12, seed=1, wave=6)
    print("\n" + report.table())
    figures = report.figures()

    assert all(figures[f"faults: {kind}"] >= 1 for kind in FAULT_KINDS), report.table()
    if not report.ok and report.only_the_known_bugs:
        # Open (README, "Failure modes"): a stale delivery run by a thawed worker wins the fence; a done written
        # before the scheduler committed the run is superseded (tests/chaos/check.py diagnose_known_bugs).
        # Any other bad figure fails this test.
        pytest.xfail(f"the open bugs the chaos run finds:\n{report.evidence()}")
    assert {column: figures[column] for column in BAD} == dict.fromkeys(BAD, 0), report.evidence()
    assert figures["runs"] == 12 and figures["clear errors"] == 0, report.evidence()
