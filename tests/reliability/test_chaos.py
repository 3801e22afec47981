"""The chaos run, short: every fault kind at least once, and exactly-once holds for every run.

`uv run python -m tests.chaos --runs 12 --seed 1 --wave 6` in-process (tests/chaos/__init__.py explains the
stack, the faults and the checks): a scheduler, three workers and a persistent Redis, each its own
process; workers SIGKILLed, SIGSTOPped past their lease, SIGTERMed; Redis's connections dropped and
Redis restarted; readers cut and resumed. Every bad figure of its table must be 0. The full run,
`--runs 200 --seed 7`, takes 3 to 9 minutes (idle to loaded machine) and is not part of the default suite.

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
    assert {column: figures[column] for column in BAD} == dict.fromkeys(BAD, 0), report.evidence()
    assert figures["runs"] == 12 and figures["clear errors"] == 0, report.evidence()
