"""Shorter garbage-collector pauses for a long-running worker: freeze what start-up created.

CPython's full (generation 2) collection walks every tracked object in the process, and the
worker's imports and set-up (Agent Framework, gRPC, redis-py, OpenTelemetry) leave about
70,000 to 90,000 of them that live for ever. Agent Framework's response streams form reference cycles (a
stream's clean-up hook closes over the stream), so each finished run leaves about a thousand
objects that only a full collection frees, and with 100 concurrent runs one comes every second
or two. While it runs, no thread of the worker runs, and tokens wait.

`gc.freeze()` moves every object alive at that moment into a permanent generation that
collections skip. Called once the worker is set up, it shortened those full collections from
84–166 ms to 60–117 ms in the process-separated benchmark at 100 sessions (docs/benchmarks.md,
section 6); what remains is the runs' own garbage. CPython's documentation suggests the same
call before forking workers, for copy-on-write; here it is for the pauses.

A web process that holds thousands of open streams also considers full collections less often
(`collect_fully_less_often`): each walks ~100 objects per open stream, ~0.6 s at 10,000 readers
(docs/benchmarks.md, the fan-out section).

Try it: `uv run python -m support.gc_pauses` prints how many objects a worker's imports leave.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> int:
    """Collect once, then exclude every surviving object from future collections; returns how many."""
    gc.collect()  # garbage from start-up goes now, not frozen for ever
    gc.freeze()
    return gc.get_freeze_count()


def collect_fully_less_often(per_full: int = 100) -> None:
    """Consider a full collection after `per_full` middle ones (CPython: 10); the young ones, most garbage, as before.

    The price: garbage in reference cycles that outlived the young collections waits longer to be freed.
    """
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, per_full)


if __name__ == "__main__":
    import agent_framework_durabletask  # noqa: F401  (the heaviest imports a worker process holds)
    import durabletask.azuremanaged.worker  # noqa: F401

    print(f"{freeze_startup_objects():,} objects frozen after importing Agent Framework and Durable Task")
