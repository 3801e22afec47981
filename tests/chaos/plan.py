"""The fault plan: everything the seed decides, before anything starts.

The plan fixes, for a given `--runs`, `--seed` and `--wave`: each run's question and readers (which
runs also get a `client.py` reader, after how many chunks each reader is cut and resumed), and each
wave's faults (their kinds, their order, how long after the wave's runs started streaming they strike,
which of the busy workers they pick, how long a freeze lasts). Every fault kind is in the plan at least
once. What the seed cannot fix is timing: where in an answer a fault lands, which worker serves which run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

WORKER_KILL, WORKER_FREEZE, WORKER_TERM = "worker SIGKILL", "worker SIGSTOP", "worker SIGTERM"
REDIS_CLIENT_KILL, REDIS_RESTART = "Redis CLIENT KILL", "Redis restart"
READER_CUT = "reader cut"
THAWED = "thawed"  # not a fault: the SIGCONT that ends a freeze
WORKER_FAULTS = (WORKER_KILL, WORKER_FREEZE, WORKER_TERM)
REDIS_FAULTS = (REDIS_CLIENT_KILL, REDIS_RESTART)
WAVE_FAULTS = (*WORKER_FAULTS, *REDIS_FAULTS)
FAULT_KINDS = (*WAVE_FAULTS, READER_CUT)

FREEZE_SECONDS = (11.0, 14.0)  # longer than the scheduler's lease (5 s ping interval + 5 s ping timeout)
STRIKE_AFTER_SECONDS = (0.3, 3.0)  # after every run of the wave streams: mid-answer at 40 ms a token
DESTINATIONS = ("Rome", "Oslo", "Lima", "Kyoto", "Cairo", "Quito", "Seoul", "Porto", "Bergen", "Ghent", "Nice")
PROCESS_READER_SHARE = 0.3  # runs that also get a client.py reader (each costs a Python start-up)


@dataclass(frozen=True)
class RunPlan:
    index: int
    wave: int
    message: str
    cuts: tuple[int, ...]  # the in-process resuming reader is cut after this many chunks, each time
    client_cuts: tuple[int, ...] | None  # a client.py reader killed after this many lines, or None: no such reader


@dataclass(frozen=True)
class Fault:
    wave: int
    kind: str
    after: float  # seconds after every run of the wave has started streaming
    pick: int  # which busy worker (modulo how many there are): timing decides who is busy
    seconds: float = 0.0  # a freeze's length


@dataclass(frozen=True)
class Plan:
    seed: int
    runs: tuple[RunPlan, ...]
    faults: tuple[Fault, ...]
    waves: int

    def faults_in(self, wave: int) -> list[Fault]:
        return sorted((fault for fault in self.faults if fault.wave == wave), key=lambda fault: fault.after)

    def runs_in(self, wave: int) -> list[RunPlan]:
        return [run for run in self.runs if run.wave == wave]


def make_plan(runs: int, seed: int, wave_size: int) -> Plan:
    rng = random.Random(seed)
    waves = max(1, -(-runs // wave_size))
    planned = [_run_plan(rng, index, index // wave_size) for index in range(runs)]
    if not any(run.cuts for run in planned):  # every kind at least once: a reader cut
        planned[0] = RunPlan(0, 0, planned[0].message, (rng.randint(5, 40),), planned[0].client_cuts)
    if not any(run.client_cuts is not None for run in planned):
        planned[-1] = RunPlan(planned[-1].index, planned[-1].wave, planned[-1].message, planned[-1].cuts, (12,))
    # Three faults per twenty runs, every kind at least once, at most two worker faults a wave.
    kinds = [*WAVE_FAULTS, *(rng.choice(WAVE_FAULTS) for _ in range(max(0, runs * 3 // 20 - len(WAVE_FAULTS))))]
    rng.shuffle(kinds)
    faults = [_fault(rng, wave, kind) for wave, kind in _spread(kinds, waves, rng)]
    return Plan(seed, tuple(planned), tuple(faults), waves)


def _run_plan(rng: random.Random, index: int, wave: int) -> RunPlan:
    message = f"Plan a {rng.choice((2, 3))}-day trip to {rng.choice(DESTINATIONS)}"
    cuts = tuple(sorted(rng.sample(range(1, 90), rng.choice((0, 1, 1, 2, 3)))))
    client_cuts = (
        tuple(rng.randint(3, 60) for _ in range(rng.choice((0, 1, 1)))) if rng.random() < PROCESS_READER_SHARE else None
    )
    return RunPlan(index, wave, message, cuts, client_cuts)


def _spread(kinds: list[str], waves: int, rng: random.Random) -> list[tuple[int, str]]:
    """Deal the kinds out over the waves in turn, skipping a wave that already has two worker faults."""
    placed: list[tuple[int, str]] = []
    order = list(range(waves))
    rng.shuffle(order)
    for position, kind in enumerate(kinds):
        wave = order[position % waves]
        for step in range(waves):
            candidate = order[(position + step) % waves]
            if kind not in WORKER_FAULTS or sum(k in WORKER_FAULTS for w, k in placed if w == candidate) < 2:
                wave = candidate
                break
        placed.append((wave, kind))
    return placed


def _fault(rng: random.Random, wave: int, kind: str) -> Fault:
    after, pick = rng.uniform(*STRIKE_AFTER_SECONDS), rng.randrange(1000)
    return Fault(wave, kind, after, pick, rng.uniform(*FREEZE_SECONDS) if kind == WORKER_FREEZE else 0.0)
