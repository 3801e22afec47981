"""Write-behind for one run: the agent never waits on Redis.

The durable entity awaits the streaming callback for every token, inline, in
the same asyncio task that drives the model. If the callback awaited an XADD
round trip per token, Redis latency would sit on the agent's own streaming
path. Instead the callback appends the token to this writer's buffer and
returns at once; one flusher task per run writes whatever accumulated while the
previous write was in flight, in order, in a single MULTI/EXEC pipeline:

    callback: append ─▶ [buffer] ─▶ flusher: XADD × n + EXPIRE (one round trip) ─▶ Redis

At model pace (a token every 20 ms) every token is its own small batch and
arrives within a millisecond or two; under load the batches grow by themselves.
The flusher also:

- writes a `heartbeat` when the run is silent (a slow tool, a slow first
  token), so readers can tell a slow run from a dead worker;
- retries a failed write with backoff, and if Redis is still unreachable
  counts the tokens it could not write and goes on: Redis trouble never fails
  the agent run, and the done marker's `chunks` lets a reader detect the gap;
- writes the final `done` or `error` marker only after every earlier entry.

Try it: `uv run python run_stream_writer.py` streams a short run to the local Redis.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid

from redis.exceptions import RedisError

from redis_stream_response_handler import DONE, ERROR, HEARTBEAT, RESTART, START, TOKEN, RedisStreamResponseHandler
from redis_stream_response_handler import entry_fields as make_entry

logger = logging.getLogger(__name__)

WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"
WRITE_ATTEMPTS = 4
FIRST_RETRY_DELAY_SECONDS = 0.1


class RunStreamWriter:
    """Buffers one run's entries and flushes them to `agent-stream:{conversation_id}` in order."""

    def __init__(
        self,
        handler: RedisStreamResponseHandler,
        conversation_id: str,
        correlation_id: str,
        *,
        heartbeat_seconds: float = 2.0,
    ) -> None:
        self.handler = handler
        self.conversation_id = conversation_id
        self.correlation_id = correlation_id
        self.heartbeat_seconds = heartbeat_seconds
        self.streamed_text: list[str] = []  # what readers have been sent, to compare with the final answer
        self.tokens_written = 0
        self.tokens_lost = 0
        self._next_sequence = 0
        self._buffer: list[dict[str, str]] = []
        self._wakeup = asyncio.Event()
        self._finished = False
        self._flusher: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Announce the run on the stream and start the flusher on the running loop."""
        # Naming the worker on the start marker shows which process served a run (scale-out, redelivery).
        self._enqueue(make_entry(START, self.correlation_id, 0, worker=WORKER_NAME))
        self._flusher = asyncio.get_running_loop().create_task(self._flush_until_finished())

    def append_token(self, text: str) -> None:
        """Queue one token; returns at once (never awaits Redis)."""
        if self._finished or not text:
            return
        self._enqueue(make_entry(TOKEN, self.correlation_id, self._next_sequence, text))
        self._next_sequence += 1
        self.streamed_text.append(text)

    def restart_with(self, full_text: str, reason: str) -> None:
        """Replace what was streamed with `full_text`: readers discard the partial attempt."""
        self._enqueue(make_entry(RESTART, self.correlation_id, 0, reason=reason))
        self._next_sequence = 0
        self.streamed_text = []
        self.append_token(full_text)

    async def finish(self, error: str | None = None) -> None:
        """Queue the done (or error) marker after everything else and wait until it is written."""
        if self._finished:
            return
        if error is None:
            marker = make_entry(DONE, self.correlation_id, self._next_sequence, chunks=self._next_sequence)
        else:
            marker = make_entry(ERROR, self.correlation_id, self._next_sequence, error=error)
        self._enqueue(marker)
        self._finished = True
        if self._flusher is None:
            await self._flush_until_finished()
        else:
            await self._flusher

    @property
    def streamed(self) -> str:
        return "".join(self.streamed_text)

    def _enqueue(self, fields: dict[str, str]) -> None:
        self._buffer.append(fields)
        self._wakeup.set()

    async def _flush_until_finished(self) -> None:
        while True:
            if not self._buffer and not await self._wait_for_entries():
                self._buffer.append(make_entry(HEARTBEAT, self.correlation_id, self._next_sequence))
            batch, self._buffer = self._buffer, []
            self._wakeup.clear()
            await self._write_with_retries(batch)
            if batch[-1]["kind"] in (DONE, ERROR):
                return

    async def _wait_for_entries(self) -> bool:
        """Wait for new entries; False when the run stayed silent for a heartbeat interval."""
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout=self.heartbeat_seconds)
            return True
        except TimeoutError:
            return False

    async def _write_with_retries(self, batch: list[dict[str, str]]) -> None:
        tokens = sum(1 for fields in batch if fields["kind"] == TOKEN)
        delay = FIRST_RETRY_DELAY_SECONDS
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                await self.handler.write_entries(self.conversation_id, batch)
                self.tokens_written += tokens
                return
            except (RedisError, OSError) as error:
                if attempt == WRITE_ATTEMPTS:
                    self.tokens_lost += tokens
                    logger.error(
                        "Redis write failed %d times (%s); %d tokens of run %s not streamed",
                        attempt,
                        error,
                        tokens,
                        self.correlation_id,
                    )
                    return
                await asyncio.sleep(delay)
                delay *= 2


async def _demo() -> None:
    async with RedisStreamResponseHandler.from_url("redis://localhost:6379", ttl_seconds=60) as handler:
        conversation = f"writer-demo-{uuid.uuid4().hex}"
        writer = RunStreamWriter(handler, conversation, "run-1")
        writer.start()
        for word in ["Write-behind", "keeps", "Redis", "off", "the", "agent's", "path."]:
            writer.append_token(word + " ")
            await asyncio.sleep(0.02)
        await writer.finish()
        async for chunk in handler.read_stream(conversation, correlation_id="run-1"):
            print(chunk.entry_id, chunk.kind, repr(chunk.text))


if __name__ == "__main__":
    asyncio.run(_demo())
