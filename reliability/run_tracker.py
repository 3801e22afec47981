"""Following ONE run through a conversation's shared stream: what a reader should see, and what it missed.

A conversation's stream holds every turn, heartbeats, and (after faults) repeated or restarted
entries. `read_run` turns the raw entries after a cursor into the chunks of one run, ending with
its done or error marker, or with an error chunk when nothing arrives for the idle timeout.

Try it: `uv run python -m reliability.run_tracker` writes a run with a repeated entry, a restart and a gap,
then prints what a reader sees of it (Redis: the one sample.py would use).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Protocol

from redis_stream_response_handler import (
    DONE,
    ERROR,
    HEARTBEAT,
    MARKERS_THAT_END_A_RUN,
    QUEUED,
    RESTART,
    START,
    START_OF_STREAM,
    TOKEN,
    TOOL_CALL,
    TOOL_RESULT,
    RedisStreamResponseHandler,
    StreamChunk,
    StreamIdleTimeoutError,
    entry_fields,
)
from reliability.resume_point import ResumePoint, StreamSource, resume_point
from support import telemetry

# Entries numbered by the run's one sequence counter: a reader drops repeats and counts gaps among them.
NUMBERED_KINDS = (TOKEN, TOOL_CALL, TOOL_RESULT)


class EntrySource(StreamSource, Protocol):
    """What `read_run` reads: RedisStreamResponseHandler (an XREAD per reader), or the web app's stream hub.

    The hub (webapp/stream_hub.py) reads each stream once for all of a web process's readers, and
    hands every reader the same raw entries this handler would: the run logic below is shared.
    """

    @property
    def idle_timeout_seconds(self) -> float: ...

    def read_entries(self, session_key: str, cursor: str | None = None) -> AsyncIterator[StreamChunk]: ...


async def read_run(
    handler: EntrySource, session_key: str, cursor: str | None = None, correlation_id: str | None = None
) -> AsyncIterator[StreamChunk]:
    """The chunks of ONE run after `cursor`, ending with its done or error marker.

    With `correlation_id`, only that run's entries are yielded; without it, the reader follows
    the first run it meets after the cursor. Heartbeats and other runs' entries are not yielded
    but prove the worker alive. When nothing arrives for the idle timeout, the read ends with an
    error chunk instead of hanging, whether or not any data arrived before.

    With telemetry on, the read is an `agent_stream.read` span in the run's trace (support/telemetry.py).
    """
    run = RunTracker(correlation_id, await resume_point(handler, session_key, cursor))
    last_entry_id = cursor or START_OF_STREAM
    reading, ending = telemetry.stream_read(), StreamChunk(entry_id=last_entry_id, kind="closed")  # until an end
    try:
        async for chunk in handler.read_entries(session_key, cursor):
            last_entry_id = chunk.entry_id
            visible = run.accept(chunk)
            if visible is None:
                continue
            if reading is not None:  # telemetry: the entry's delivery lag; the run's trace context on its start
                reading.entry(visible)
            if visible.kind in MARKERS_THAT_END_A_RUN:
                ending = visible
            yield visible
            if visible.kind in MARKERS_THAT_END_A_RUN:
                return
    except StreamIdleTimeoutError:
        ending = StreamChunk(
            entry_id=last_entry_id,
            kind=ERROR,
            correlation_id=run.correlation_id or "",
            sequence=run.next_sequence,
            error=run.idle_message(handler.idle_timeout_seconds),
        )
        yield ending
    finally:
        if reading is not None:
            reading.end(run.correlation_id or "", ending.kind, ending.error if ending.kind == ERROR else None)


class RunTracker:
    """Turns one run's raw entries into what a reader should see.

    - entries of other runs, and heartbeats, are dropped;
    - the first `queued` notice (the run waits for a free worker slot) is passed on, once;
      like heartbeats, the notices that follow only prove the worker alive;
    - a token or tool entry already seen (a batch the worker wrote twice after a dropped connection) is dropped;
    - a second `start` for the same run with a new attempt id (the scheduler delivered it again
      after a worker died) becomes a `restart`: the answer starts over; the same attempt id again
      is a repeat, and is dropped;
    - every entry names the attempt that wrote it, and only the newest attempt is followed: an
      entry of a superseded attempt (a frozen worker that woke up; reliability/fencing.py stops
      most of them at the source) is dropped, its `done` or `error` never ends the read;
    - a jump in sequence numbers, or a done marker whose `chunks` is more than what arrived, is
      counted in `missing`, set on the done chunk: the reader can then take the answer from the
      durable record instead.
    """

    def __init__(self, correlation_id: str | None, resumed_at: ResumePoint | None = None) -> None:
        self.correlation_id = correlation_id
        self.resumed_at = resumed_at or ResumePoint()
        self.next_sequence = 0
        self.seen_any = False
        self.attempt: str | None = None  # id of the attempt being read; None until its start marker
        self.superseded: set[str] = set()  # attempts a newer start marker replaced
        self.missing = 0
        self.queued_at: str | None = None  # the busy worker this run waited for, once a `queued` notice came

    def accept(self, chunk: StreamChunk) -> StreamChunk | None:
        if self.correlation_id is None and chunk.kind != HEARTBEAT:
            self.correlation_id = chunk.correlation_id  # follow the first run after the cursor
        if chunk.correlation_id != self.correlation_id or chunk.kind == HEARTBEAT:
            return None
        if chunk.kind == QUEUED:
            first, self.queued_at = self.queued_at is None, chunk.worker or "a worker"
            return chunk if first and not self.seen_any else None
        if not self.seen_any:
            self._position_after_cursor()
        if self._of_another_attempt(chunk):
            return None
        if chunk.kind in (START, RESTART):
            restarted = self._begin_attempt(chunk)
            if restarted is None:
                return None
            chunk = restarted
        elif chunk.kind in NUMBERED_KINDS:
            if chunk.sequence < self.next_sequence:
                return None
            # Any jump is a gap, the first token included: without the run's start (a cursor that
            # was trimmed, or a stream that lost its head) a first token above 0 is a leading gap.
            self.missing += chunk.sequence - self.next_sequence
            self.next_sequence = chunk.sequence + 1
        elif chunk.kind == DONE:
            self.missing += max(0, (chunk.chunks or 0) - self.next_sequence)
            chunk = replace(chunk, missing=self.missing)
        self.seen_any = True
        return chunk

    def _position_after_cursor(self) -> None:
        """Before the followed run's first entry: expect where the cursor left that run, else its start."""
        expected = self.resumed_at.expected_sequence(self.correlation_id)
        if expected is not None:
            self.next_sequence = expected
            self.attempt = self.resumed_at.attempt or ""  # inside an attempt: another start is a restart

    def _of_another_attempt(self, chunk: StreamChunk) -> bool:
        """True for an entry this reader must not show: written by an attempt that is not the newest."""
        if not chunk.attempt or chunk.attempt in self.superseded:
            return bool(chunk.attempt)
        if chunk.kind in (START, RESTART):
            return False  # a newer attempt begins (or the current one's marker, repeated)
        if not self.attempt:  # the run's start marker is before the cursor, or trimmed: follow this attempt
            self.attempt = chunk.attempt
        return chunk.attempt != self.attempt

    def _begin_attempt(self, chunk: StreamChunk) -> StreamChunk | None:
        if chunk.attempt is not None and chunk.attempt == self.attempt:
            return None  # the same marker written twice by a retried write
        if self.attempt:
            self.superseded.add(self.attempt)
        again = chunk.kind == START and self.attempt is not None
        self.attempt, self.next_sequence, self.missing = chunk.attempt or "", 0, 0
        if again:
            return replace(chunk, kind=RESTART, error="the run was delivered again after its worker stopped")
        return chunk

    def idle_message(self, idle_timeout: float) -> str:
        if not self.seen_any and self.queued_at is not None:
            return (
                f"the run was waiting for a free slot on {self.queued_at} (all WORKER_MAX_CONCURRENT_RUNS busy), "
                f"then nothing arrived for {idle_timeout:g}s: that worker may have stopped; add workers"
            )
        if not self.seen_any:
            return (
                f"no answer started within {idle_timeout:g}s: is a worker running (uv run worker.py), "
                "and connected to the same scheduler and Redis?"
            )
        return f"the answer stopped: nothing arrived for {idle_timeout:g}s (the worker may have died)"


async def _demo(redis_url: str) -> None:
    session_key, run = f"tracker-demo-{uuid.uuid4().hex}", "run-1"
    entries = [
        entry_fields(START, run, 0, attempt="a1", worker="host-a:1"),
        entry_fields(TOKEN, run, 0, "Day 1 "),
        entry_fields(TOKEN, run, 0, "Day 1 "),  # written twice by a retried write: read once
        entry_fields(START, run, 0, attempt="a2", worker="host-b:2"),  # delivered again to another worker: a restart
        entry_fields(TOKEN, run, 0, "Day 1: "),
        entry_fields(TOKEN, run, 2, "museums."),  # sequence 1 never arrived: counted as missing
        entry_fields(DONE, run, 3, chunks=3),
    ]
    async with RedisStreamResponseHandler.from_url(redis_url, ttl_seconds=60, idle_timeout_seconds=1) as handler:
        await handler.write_streams([(session_key, entries)])
        async for chunk in read_run(handler, session_key):
            print(f"{chunk.kind:8} {chunk.text or chunk.error or ''!r:60} missing={chunk.missing}")


if __name__ == "__main__":
    from support.services import demo_redis

    with demo_redis() as demo_url:
        asyncio.run(_demo(demo_url))
