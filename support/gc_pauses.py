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

Try it: `uv run python -m support.gc_pauses` prints how many objects a worker's imports leave.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> int:
    """Collect once, then exclude every surviving object from future collections; returns how many."""
    gc.collect()  # garbage from start-up goes now, not frozen for ever
    gc.freeze()
    return gc.get_freeze_count()


if __name__ == "__main__":
    import agent_framework_durabletask  # noqa: F401  (the heaviest imports a worker process holds)
    import durabletask.azuremanaged.worker  # noqa: F401

    print(f"{freeze_startup_objects():,} objects frozen after importing Agent Framework and Durable Task")
