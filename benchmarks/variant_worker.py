"""worker.py with one part of its streaming changed: the other side of section 7's comparisons (streaming_cost.py).

    BENCH_WORKER_VARIANT=markers-only uv run python -m benchmarks.variant_worker
    BENCH_WORKER_VARIANT=plain-xadd   uv run python -m benchmarks.variant_worker

- `markers-only`: each run's stream gets its start marker and its done (error, cancelled) marker, and nothing in
  between: no tokens, no tool entries. The agent, the model, the scheduler and the writer are the same, so worker.py's
  CPU time minus this one's is what streaming the tokens costs.
- `plain-xadd`: every token streamed, but each batch is written with a plain pipelined XADD
  (`RedisStreamResponseHandler.write_streams`) instead of the fenced Lua script (reliability/fencing.py): what the
  fence costs. Without it a superseded attempt can write to a run's stream: never run it outside a benchmark.

Both are worker.py's own start path (`worker.main`), with one name swapped in this process before it starts.
BENCH_WORKER_VARIANT is read here only; the product has no such setting, and nothing in it imports this module
(pyproject.toml's import-linter contracts put `benchmarks` above everything).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from agent_framework import AgentResponse, AgentResponseUpdate
from agent_framework_durabletask import AgentCallbackContext

import worker
from redis_stream_response_handler import RedisStreamResponseHandler
from reliability import write_behind
from reliability.fencing import Fenced, FencedBatch, fields_of
from reliability.stop_watch import cancel_reason
from reliability.write_behind import run_key
from support.console import run_entry_point

VARIANT_VARIABLE = "BENCH_WORKER_VARIANT"
MARKERS_ONLY = "markers-only"
PLAIN_XADD = "plain-xadd"


class MarkersOnlyCallback(worker.RedisStreamCallback):
    """worker.py's callback, but a run's updates are dropped: only its start and final markers are written."""

    async def on_streaming_response_update(self, update: AgentResponseUpdate, context: AgentCallbackContext) -> None:
        if run_key(context) not in self._writers:
            # The run's first update opens its writer (the start marker), as in worker.py; its contents are dropped
            # too (with the demo model it is the tool-call reply, whose entries and usage would be streamed).
            await super().on_streaming_response_update(AgentResponseUpdate(), context)

    async def on_agent_response(self, response: AgentResponse, context: AgentCallbackContext) -> None:
        writer = self._writers.pop(run_key(context), None)
        if writer is None:  # no update came at all: worker.py's own path
            await super().on_agent_response(response, context)
            return
        # worker.py would now write the answer it did not see streamed as one entry: here only the done marker,
        # with the response's usage (the model's output tokens, which the benchmark divides by).
        await writer.finish(usage=response.usage_details, cancelled=cancel_reason(response))


async def write_plain(handler: RedisStreamResponseHandler, batches: Sequence[FencedBatch]) -> list[Fenced]:
    """`reliability.fencing.write_fenced` without the fence: one pipeline of XADDs (+ EXPIREs); every attempt owns."""
    streams = [
        (batch.session_key, [fields_of(entry, batch.correlation_id) for entry in batch.entries]) for batch in batches
    ]
    await handler.write_streams(streams, [batch.session_key for batch in batches if batch.expire])
    return [Fenced(owned=True)] * len(batches)


def apply(variants: str) -> None:
    """Swap in the variants named in `variants` (comma-separated); an unknown name is an error."""
    for variant in filter(None, (name.strip() for name in variants.split(","))):
        if variant == MARKERS_ONLY:
            worker.RedisStreamCallback = MarkersOnlyCallback  # what worker.setup_worker instantiates
        elif variant == PLAIN_XADD:
            write_behind.write_fenced = write_plain  # what StreamFlusher._write_with_retries calls
        else:
            raise SystemExit(f"{VARIANT_VARIABLE}: unknown variant {variant!r} (known: {MARKERS_ONLY}, {PLAIN_XADD})")


def main() -> int:
    apply(os.environ.get(VARIANT_VARIABLE, ""))
    return worker.main()


if __name__ == "__main__":
    sys.exit(run_entry_point(main))
