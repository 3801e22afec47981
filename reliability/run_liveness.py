"""Liveness: a heartbeat says "this run is alive", so a writer sends one only while its run is.

Readers wait as long as something arrives on the stream; heartbeats are what lets them wait
through a slow tool call or a slow first token without timing out. Heartbeats written merely
because a writer exists would let a run that can no longer end its stream keep every reader
waiting for ever. So before each heartbeat the flusher asks the run's `RunLiveness`, which
gives a reason to end the stream instead when:

- the run's task has ended but nothing wrote its done or error marker (a failure path that
  skipped the report: nothing else will ever write it);
- the run has shown no progress (no update from the agent: no token, no tool call) for
  `max_silence_seconds` (STREAM_MAX_SILENCE_SECONDS, default 300): a model or tool call that hangs.

The writer then ends the stream with an error marker that gives the reason, so readers stop
at once, with that reason, instead of at their idle timeout or never. The run itself is left
alone: if a stuck run ever finishes, its answer is in the durable record (`uv run client.py
--session <key>` prints it once the stream has expired).

Try it (no Redis needed): what it says about a run that ended, a live one, and a silent one:

    uv run python -m reliability.run_liveness
"""

from __future__ import annotations

import asyncio
import time

DEFAULT_MAX_SILENCE_SECONDS = 300.0
ENDED_WITHOUT_A_MARKER = "the run ended without ending its stream (no done or error marker was written)"


class RunLiveness:
    """Whether one run can still end its stream. Create it on the run's own task (the writer does)."""

    def __init__(self, max_silence_seconds: float = DEFAULT_MAX_SILENCE_SECONDS) -> None:
        # The entity runs the agent's stream, the callback and the final marker in ONE asyncio task
        # (AgentEntity.run), so the task that creates the run's writer is the run: once it is done,
        # nothing more will be written for it.
        self.task = asyncio.current_task()
        self.max_silence_seconds = max_silence_seconds
        self.last_progress = time.monotonic()

    def progressed(self, at: float | None = None) -> None:
        self.last_progress = time.monotonic() if at is None else at

    def reason_to_end(self, now: float) -> str | None:
        """None while the run may still write its final marker; otherwise the error to end its stream with."""
        if self.task is not None and self.task.done():
            return ENDED_WITHOUT_A_MARKER
        if now - self.last_progress >= self.max_silence_seconds:
            return (
                f"the run showed no progress for {self.max_silence_seconds:g}s (STREAM_MAX_SILENCE_SECONDS); "
                "if it ever ends, its answer is in the durable record"
            )
        return None


async def _demo() -> None:
    async def a_run_that_ends() -> RunLiveness:
        return RunLiveness(max_silence_seconds=0.2)

    ended = await asyncio.create_task(a_run_that_ends())
    live = RunLiveness(max_silence_seconds=0.2)  # on this task, which goes on
    print("a run whose task ended: ", ended.reason_to_end(time.monotonic()))
    print("a live run:             ", live.reason_to_end(time.monotonic()))
    await asyncio.sleep(0.3)
    print("the same run, silent:   ", live.reason_to_end(time.monotonic()))


if __name__ == "__main__":
    asyncio.run(_demo())
