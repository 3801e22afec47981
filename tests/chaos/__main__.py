"""`uv run python -m tests.chaos --runs 200 --seed 7`: see tests/chaos/__init__.py."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from tests.chaos.check import Report
from tests.chaos.plan import make_plan
from tests.chaos.run import ChaosRun
from tests.chaos.stack import Stack, temporary_folder


def run_chaos(runs: int, seed: int, wave: int = 20, keep: Path | None = None) -> Report:
    """Start the stack, run the plan, stop everything; the report."""
    plan = make_plan(runs, seed, wave)
    with temporary_folder() as folder:
        where = keep or Path(folder)
        where.mkdir(parents=True, exist_ok=True)
        log = logging.FileHandler(where / "chaos.log")  # the faults, and the readers' warnings (reconnects)
        log.setFormatter(logging.Formatter("%(created).3f %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(log)
        stack = Stack(where)
        try:
            stack.start()
            return asyncio.run(ChaosRun(plan, stack, where).execute())
        finally:
            stack.close()
            logging.getLogger().removeHandler(log)
            log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos", description="Fault injection that proves exactly-once."
    )
    parser.add_argument("--runs", type=int, default=200, help="how many runs (default: 200)")
    parser.add_argument("--seed", type=int, default=7, help="the seed of the fault plan (default: 7)")
    parser.add_argument("--wave", type=int, default=20, help="runs at once (default: 20)")
    parser.add_argument("--keep", type=Path, help="keep the logs (workers, scheduler, Redis, clients) in this folder")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.wave < 1:
        parser.error("--runs and --wave must be at least 1")
    report = run_chaos(args.runs, args.seed, args.wave, args.keep)
    print(report.table())
    if evidence := report.evidence():
        print("\n" + evidence)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
