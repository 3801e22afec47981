"""Write-behind: the agent never waits on Redis, and one flusher serves every run.

The durable entity awaits the streaming callback for every token, inline, in
the same asyncio task that drives the model. If the callback awaited an XADD
round trip per token, Redis latency would sit on the agent's own streaming
path. Instead the callback appends the token (and the update's tool activity,
see reliability/activity.py) to its run's `RunStreamWriter` and returns at once.
One `StreamFlusher` per Redis client (so per worker event loop; the callback
creates it and hands it to every writer) then writes whatever accumulated,
for ALL runs, while its previous write was in flight, in ONE pipeline:

    run A: append ─▶ [A's buffer] ─┐
    run B: append ─▶ [B's buffer] ─┼─▶ flusher: XADD × n per stream (+ EXPIRE) ─▶ Redis, one round trip
    run C: append ─▶ [C's buffer] ─┘

At model pace with one run, every token is its own small batch and arrives
within a millisecond or two. With many concurrent runs, or a burst, batches
grow by themselves: a hundred conversations cost about as many round trips as
one, which is what keeps a 2-core worker's CPU for the model instead of for
redis-py (see docs/benchmarks.md). The flusher also:

- writes a `heartbeat` for a run that has been silent for a while (a slow tool,
  a slow first token), so readers can tell a slow run from a dead worker; but
  only while the run is alive: a run whose task ended without its final marker,
  or that made no progress for `max_silence_seconds`, gets an error marker
  instead, so no reader waits for it for ever (see run_liveness.py);
- refreshes each stream's TTL with EXPIRE when it is due, not on every token;
- retries a failed write with capped backoff for as long as readers wait out an
  outage (the idle timeout), so an answer that ends while Redis restarts still
  ends with its done marker; if Redis is still unreachable it counts
  the tokens it could not write and goes on: Redis trouble never fails the
  agent run, and the done marker's `chunks` lets a reader detect the gap;
- writes a run's `done`, `error` or `cancelled` marker only after every earlier entry;
- on `aclose()` (a stopping worker), ends every unfinished run with an error marker
  and cancels its task (see reliability/shutdown.py);
- with telemetry on (support/telemetry.py), gives each run attempt an `agent_stream.write` span, from
  its start marker (which carries the span's `traceparent` for readers) to its final marker, and
  records the per-chunk metrics from each batch's timestamps: nothing per token in the callback.

The flusher runs on the event loop it is given: the caller's by default, or, in the worker,
a loop on a thread of its own (reliability/flusher_thread.py), so that a burst of agent work
on the agents' loop cannot hold tokens back. Writers may live on another thread than their
flusher: they hand entries over under a lock, and the first entry since the flusher last took theirs puts the
writer in its queue and, if it sleeps, wakes it with `call_soon_threadsafe`.

A retried write may repeat entries that did reach Redis before the connection
dropped (the pipeline is not a transaction, so it also works on a cluster).
Readers skip them: tokens and tool entries by sequence number, start markers by `attempt` id.

Try it: `uv run python -m reliability.write_behind` streams a short run to Redis (the one sample.py would use).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from agent_framework import AgentResponseUpdate, UsageDetails

from redis_stream_response_handler import (
    CANCELLED,
    DONE,
    ERROR,
    HEARTBEAT,
    RESTART,
    START,
    TOKEN,
    RedisStreamResponseHandler,
    entry_fields,
)
from reliability.activity import RunActivity, usage_fields
from reliability.dispatch import current_dispatch
from reliability.fencing import Entry, FencedBatch, Token, write_fenced
from reliability.run_liveness import DEFAULT_MAX_SILENCE_SECONDS, RunLiveness
from reliability.run_tracker import NUMBERED_KINDS, read_run
from support import telemetry
from support.redis_connection import REDIS_FAILURES

logger = logging.getLogger(__name__)
T = TypeVar("T")

WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"
FIRST_RETRY_DELAY_SECONDS = 0.1
MAX_RETRY_DELAY_SECONDS = 1.0
FINAL_WRITE_SECONDS = 1.0
DEFAULT_HEARTBEAT_SECONDS = 2.0
ABANDONED = "the worker stopped before this run finished (Ctrl+C or SIGTERM); ask again"


class _RunContext(Protocol):  # agent_framework_durabletask's AgentCallbackContext
    @property
    def correlation_id(self) -> str: ...


RunKey = tuple[str, "asyncio.Task[Any] | None"]


def run_key(context: _RunContext) -> RunKey:
    """Which writer an update belongs to: its run's correlation id AND the task running that attempt.

    Every callback of one attempt runs in that attempt's task. The scheduler may deliver a run again
    to the very process still running it (a frozen worker wakes up, reconnects and gets its own run
    back, or runs a work item its lost connection had already handed over), so two attempts at one
    correlation id can run side by side in one worker. Keyed by the correlation id alone they would
    share a writer: their tokens spliced under one attempt id, and a `done` from each. Keyed by task,
    each attempt has its own writer, attempt id and fence: the newer claims the run, the older is cancelled.
    """
    return context.correlation_id, _current_task_or_none()


class RunStreamWriter:
    """One run's entries, in order, waiting for the flusher: what the callback talks to."""

    def __init__(
        self,
        flusher: StreamFlusher,
        session_key: str,
        correlation_id: str,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
    ) -> None:
        self.session_key = session_key
        self.correlation_id = correlation_id
        self.heartbeat_seconds = heartbeat_seconds
        self.streamed_text: list[str] = []  # the text readers have been sent, to compare with the final answer
        self.activity = RunActivity()  # the run's tool calls and usage, from its updates
        self.tokens_lost = 0  # tokens and tool entries the flusher could not write
        self.pending: list[Entry] = []  # guarded by _pending_lock: the flusher may be on another thread
        self.last_activity = time.monotonic()
        self.last_expire = float("-inf")
        self.finished = False  # the final marker is queued or held: nothing more is accepted (under _pending_lock)
        self.final_queued = False  # ... and it is among the pending entries, for the flusher to write
        # The scheduler's delivery of this run (reliability/dispatch.py), if the worker tracks them: its number
        # is the fence, and the run's own final marker is held until the scheduler accepts the run's completion.
        self.dispatch = current_dispatch()
        self.held_final: Entry | None = None
        self.written: Future[None] = Future()  # ... and the flusher has written it (awaitable from any loop)
        self.liveness = RunLiveness(flusher.max_silence_seconds)  # created on the run's task, like the writer
        self._next_sequence = 0
        self.attempt = ""  # the attempt at the answer, written on every entry: readers follow the newest only
        self.fence = ""  # this writer's claim on the run (reliability/fencing.py): its delivery, or first attempt's id
        self.fence_claimed = False  # set once a write claimed the run
        self.claimed: Future[bool] = Future()  # the claim's outcome: False if an attempt of a later delivery owns it
        self.superseded = False  # a newer attempt owns the run: this one writes nothing more
        self.span: telemetry.Span | None = None  # telemetry: this attempt's agent_stream.write span (else None)
        self.chunks: telemetry.ChunkClock | None = None  # telemetry: the chunk metrics, fed by the flusher
        self.entries_written = 0
        self.final_error: str | None = None  # the error marker's message, once queued
        self._pending_lock = threading.Lock()
        self.flusher = flusher
        # The callback runs inline in the run's own task: a stopping worker cancels it (reliability/shutdown.py).
        self.run_task = asyncio.current_task()
        self.run_loop = asyncio.get_running_loop()
        flusher.add(self)

    def start(self) -> RunStreamWriter:
        """Announce the run on the stream; the flusher takes it from here."""
        self.span, self.chunks = telemetry.start_stream_write(self.correlation_id, WORKER_NAME), telemetry.chunk_clock()
        # Naming the worker shows which process served a run; with telemetry, its trace context for readers.
        self._begin_attempt(START, worker=WORKER_NAME, **telemetry.carrier_of(self.span))
        return self

    def append_token(self, text: str) -> None:
        """Queue one token; returns at once (never awaits Redis)."""
        if self.finished or not text:
            return
        # A Token, not a dict of six strings: the fenced write's script fills in the rest (reliability/fencing.py).
        self._enqueue(Token(text, self._next_sequence, time.time_ns() // 1000, self.attempt))
        self._next_sequence += 1
        self.streamed_text.append(text)

    def append_update(self, update: AgentResponseUpdate) -> None:
        """Queue an update's text and tool activity, in order; returns at once (never awaits Redis)."""
        text = self.activity.only_text(update)  # a plain token: most updates, and every token's path
        if text:
            self.append_token(text)  # its entry shows the run moving
            return
        self.liveness.progressed()  # every update shows the run moving, even one with no entry (an argument fragment)
        for kind, fields in self.activity.entries(update):
            self._append_entry(kind, fields)

    def _append_entry(self, kind: str, fields: dict[str, str]) -> None:
        if kind == TOKEN:
            self.append_token(fields["text"])
        elif not self.finished:
            self._enqueue_numbered(kind, **fields)  # tool entries share the tokens' sequence: same repeat/gap rules

    def restart_with(self, full_text: str, reason: str) -> None:
        """Replace what was streamed with `full_text`: readers discard the partial attempt."""
        self._begin_attempt(RESTART, reason=reason, **telemetry.carrier_of(self.span))
        self.streamed_text = []
        self.append_token(full_text)

    async def finish(
        self, error: str | None = None, *, usage: UsageDetails | None = None, cancelled: str | None = None
    ) -> None:
        """The run's own end: queue the done (error, cancelled) marker after everything else.

        The done and cancelled markers carry the run's usage: what the updates reported, else `usage`
        (the final response's, e.g. of an answer the host produced without streaming).

        On a worker that tracks its deliveries (reliability/dispatch.py) the marker is HELD until the
        scheduler gives its verdict on the run's completion, which comes after this returns: written
        if it accepted it (the answer is recorded), dropped if it refused it (the run was delivered
        again; the newer attempt ends the stream). Otherwise it is queued, and this waits until it is written.
        """
        self.queue_final_marker(error, usage=usage, cancelled=cancelled, hold=self.dispatch is not None)
        if self.dispatch is None:
            # Shielded: a cancelled run must not cancel the flusher's `written`, which it still sets.
            await asyncio.shield(asyncio.wrap_future(self.written))

    def queue_final_marker(
        self,
        error: str | None = None,
        *,
        usage: UsageDetails | None = None,
        cancelled: str | None = None,
        hold: bool = False,
    ) -> None:
        """`finish` without the wait: the marker is queued, or `hold`s for the scheduler's verdict (once)."""
        if self.finished:
            return
        for kind, fields in self.activity.flush():  # tool calls whose arguments never completed
            self._append_entry(kind, fields)
        counts = usage_fields(self.activity.usage or usage)
        if error is not None:
            marker = entry_fields(ERROR, self.correlation_id, self._next_sequence, error=error)
            self.final_error = error
        elif cancelled is not None:
            telemetry.cancels.add(1)
            marker = entry_fields(CANCELLED, self.correlation_id, self._next_sequence, reason=cancelled, **counts)
        else:
            marker = entry_fields(DONE, self.correlation_id, self._next_sequence, chunks=self._next_sequence, **counts)
        self._enqueue(marker, final=True, hold=hold)

    @property
    def streamed(self) -> str:
        return "".join(self.streamed_text)

    def take_pending(self) -> tuple[list[Entry], bool]:
        """The entries queued so far, and whether the final marker is among them."""
        with self._pending_lock:
            batch, self.pending = self.pending, []
            return batch, self.final_queued

    def supersede(self) -> None:
        """A newer attempt owns the run (the scheduler delivered it again): stop this one, write nothing more."""
        with self._pending_lock:
            self.superseded, self.finished, self.pending, self.held_final = True, True, [], None
        self.flusher.queued(self)  # for the flusher to drop it
        logger.warning(
            "run %s: attempt %s was superseded by a newer attempt (the run was delivered again); stopping it",
            self.correlation_id,
            self.attempt,
        )
        self.cancel_run()

    def cancel_run(self) -> None:
        """Cancel the run's task, from any thread (a stopping worker)."""
        if self.run_task is not None and self.run_task is not _current_task_or_none():
            with contextlib.suppress(RuntimeError):  # its loop has closed: the run is over anyway
                self.run_loop.call_soon_threadsafe(self.run_task.cancel)

    def add_heartbeat_if_silent(self, now: float) -> None:
        """A heartbeat when the run is silent but alive; an error marker when it can no longer end its stream.

        A run whose final marker is held (see `finish`) has ended: it gets heartbeats until the verdict
        (another operation of the same work item may still be running), never an error marker.
        """
        if self.final_queued or self.superseded:
            return
        reason = None if self.held_final is not None else self.liveness.reason_to_end(now)
        if reason is not None:  # a heartbeat would tell readers to go on waiting for a run that will never end
            logger.error("run %s: %s", self.correlation_id, reason)
            self.final_error = reason
            self._enqueue(entry_fields(ERROR, self.correlation_id, self._next_sequence, error=reason), final=True)
        elif not self.pending and now - self.last_activity >= self.heartbeat_seconds:
            self._enqueue(entry_fields(HEARTBEAT, self.correlation_id, self._next_sequence))

    def _begin_attempt(self, kind: str, **extra: str) -> None:
        # A fresh attempt id tells a reader "the answer starts over" apart from a start marker written twice.
        self._next_sequence, self.attempt = 0, uuid.uuid4().hex[:12]
        self.fence = self.fence or (self.dispatch and self.dispatch.fence) or self.attempt
        self._enqueue(entry_fields(kind, self.correlation_id, 0, **extra))

    def _enqueue_numbered(self, kind: str, text: str = "", **extra: str) -> None:
        self._enqueue(entry_fields(kind, self.correlation_id, self._next_sequence, text, **extra))
        self._next_sequence += 1

    def _enqueue(self, entry: dict[str, str] | Token, *, final: bool = False, hold: bool = False) -> None:
        # Under the lock the flusher takes entries with: the final marker and `final_queued` go together,
        # so the flusher knows the batch that ends the run, and nothing is queued after it.
        heartbeat = False
        if not isinstance(entry, Token):  # a token carries its attempt already
            entry["attempt"] = self.attempt
            heartbeat = entry["kind"] == HEARTBEAT
        with self._pending_lock:
            if self.final_queued or (self.finished and not heartbeat):
                return
            first = not self.pending  # the first entry since the flusher last took them: it must hear of this run
            if final and hold:
                self.held_final, first = entry, False
            else:
                self.pending.append(entry)
            self.finished |= final
            self.final_queued |= final and not hold
        self.last_activity = time.monotonic()
        if not heartbeat:
            self.liveness.progressed(self.last_activity)
        if final and hold:
            assert self.dispatch is not None
            self.dispatch.on_verdict(self._release_final)
        if first:
            self.flusher.queued(self)

    def _release_final(self, recorded: bool) -> None:
        # The scheduler's verdict on the run's completion (reliability/dispatch.py), from its worker thread.
        with self._pending_lock:
            held, self.held_final = self.held_final, None
            if recorded and held is not None:
                self.pending.append(held)
                self.final_queued = True
            else:  # refused or handed back: the run is delivered again, and the newer attempt ends the stream
                self.superseded = True
        if not recorded:
            logger.warning(
                "run %s: the scheduler did not record attempt %s; its end is not streamed",
                self.correlation_id,
                self.attempt,
            )
        self.flusher.queued(self)  # to write its marker, or to drop it


class StreamFlusher:
    """Writes the pending entries of every run on one Redis client: one write per flush, of the runs that queued some.

    It runs on `loop` (default: the caller's), the loop its handler's client belongs to.
    """

    def __init__(
        self,
        handler: RedisStreamResponseHandler,
        *,
        max_silence_seconds: float = DEFAULT_MAX_SILENCE_SECONDS,
        loop: asyncio.AbstractEventLoop | None = None,
        on_closed: Callable[[], None] | None = None,
    ) -> None:
        self.handler = handler
        self.max_silence_seconds = max_silence_seconds  # a run silent this long is presumed stuck
        self.round_trips = 0
        self.loop = loop or asyncio.get_running_loop()
        self._on_closed = on_closed  # e.g. stop the flusher's own thread (flusher_thread.py)
        self._writers: dict[RunStreamWriter, None] = {}  # every unfinished run's writer (an ordered set)
        # The writers with something new to write, in the order they queued it; a writer is put here when its
        # first entry since the last take is queued, so a flush looks at these, never at every writer.
        self._queued: collections.deque[RunStreamWriter] = collections.deque()  # append/popleft: thread-safe
        self._wakeup = asyncio.Event()
        self._wake_requested = False  # a wake-up is on its way, or the flusher is busy: no need to send another
        self._heartbeat_seconds = DEFAULT_HEARTBEAT_SECONDS  # the shortest of the writers', from the last check
        self._task: asyncio.Task[None] | None = None

    def add(self, writer: RunStreamWriter) -> None:
        self.loop.call_soon_threadsafe(self._add, writer)

    def queued(self, writer: RunStreamWriter) -> None:
        """`writer` has something new for the flusher (from any thread)."""
        self._queued.append(writer)
        # One call_soon_threadsafe (a write to the loop's self-pipe) when the flusher sleeps, not per token:
        # while it writes, what comes meanwhile is taken by its next flush without waking it.
        if not self._wake_requested:
            self._wake_requested = True
            self.loop.call_soon_threadsafe(self._wakeup.set)

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Await `work` on the flusher's loop, whose Redis client it may use (the stop watcher does)."""
        if asyncio.get_running_loop() is self.loop:
            return await work
        # Shielded: a caller cancelled meanwhile (a stopping worker's stop watcher) leaves the short work to end on
        # the flusher's loop, and its outcome, an error too, is still consumed: never "Task exception was never
        # retrieved" when the flusher's client closes under it.
        return await asyncio.shield(asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self.loop)))

    async def aclose(self, abandon_reason: str | None = ABANDONED) -> None:
        """Stop every unfinished run (its task cancelled) and close the client: a worker is stopping.

        With an `abandon_reason`, each unfinished run's stream ends with an error marker saying it,
        after what was queued (within FINAL_WRITE_SECONDS: a worker stops promptly). Without, the
        runs just stop: a scheduler that outlives this worker delivers them again, and the new
        attempt replaces this one for readers.
        """
        try:
            await self.run(self._close(abandon_reason))
        finally:
            if self._on_closed is not None:
                self._on_closed()

    def _add(self, writer: RunStreamWriter) -> None:
        if not writer.written.done():  # not a run that started and ended before this call got here
            self._writers[writer] = None
        if self._task is None or self._task.done():
            self._task = self.loop.create_task(self._flush_forever())
            self._task.add_done_callback(_log_if_failed)

    async def _close(self, abandon_reason: str | None) -> None:
        unfinished = [writer for writer in self._writers if not writer.finished]
        for writer in unfinished:
            writer.cancel_run()
        if abandon_reason is not None:
            for writer in unfinished:
                writer.queue_final_marker(error=abandon_reason)
        # The markers queued above, and those of runs that ended just now: a run's own, queued when the scheduler
        # accepted its completion (reliability/dispatch.py), or awaited in `finish` on a worker without dispatches.
        ending = [asyncio.wrap_future(w.written) for w in self._writers if w.final_queued and not w.written.done()]
        if ending:
            await asyncio.wait(ending, timeout=FINAL_WRITE_SECONDS)  # the late ones are dropped with the task below
        if self._task is not None:
            self._task.cancel()  # no heartbeats for runs that stopped
        for writer in self._writers:  # whatever is left is never written: its span ends here
            _end_span(writer, "abandoned", abandon_reason or "the worker stopped")
            if not writer.written.done():
                # Released, so no run waits for ever on a flusher that stopped: a run whose marker was being
                # written when the worker stopped held its work-item thread, and the process never exited.
                writer.written.set_result(None)
        self._writers.clear()
        await self.handler.aclose()

    async def _flush_forever(self) -> None:
        heartbeats_due = 0.0
        while self._writers:
            await self._wait_for_work()
            now = time.monotonic()
            if now >= heartbeats_due:  # every writer, a few times per heartbeat interval: never per token
                self._heartbeat_seconds = min(writer.heartbeat_seconds for writer in self._writers)
                for writer in self._writers:
                    writer.add_heartbeat_if_silent(now)
                heartbeats_due = now + self._heartbeat_seconds / 4
            taken = self._take_queued()
            for writer, (entries, _) in taken.items():
                if writer.chunks is not None:  # telemetry: the GenAI chunk metrics, a batch at a time
                    writer.chunks.observe(map(_kind_and_time, entries), TOKEN, RESTART)
            batch = {writer: entries for writer, (entries, _) in taken.items() if entries}
            if batch:
                await self._write_with_retries(batch, now)
            for writer, (_, final) in taken.items():
                if (final or writer.superseded) and not writer.written.done():
                    self._writers.pop(writer, None)
                    _end_span(writer, "superseded" if writer.superseded else "final", writer.final_error)
                    writer.written.set_result(None)

    def _take_queued(self) -> dict[RunStreamWriter, tuple[list[Entry], bool]]:
        # Each queued writer's entries, once (a writer may be queued twice: its second take is empty).
        taken: dict[RunStreamWriter, tuple[list[Entry], bool]] = {}
        while self._queued:
            writer = self._queued.popleft()
            if writer not in taken:
                taken[writer] = writer.take_pending()
        return taken

    async def _wait_for_work(self) -> None:
        if self._queued:  # entries came while the last write was in flight: write them now, no wake-up needed
            return
        self._wake_requested = False  # asleep: the next writer with something new wakes the flusher
        if self._queued:  # ... one that queued just before the flag was cleared, without a wake-up
            return
        # Wake for new entries, or in time to write a heartbeat for a silent run.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._heartbeat_seconds / 2):  # cheaper than wait_for (no new task)
                await self._wakeup.wait()
        self._wakeup.clear()

    async def _write_with_retries(self, batch: dict[RunStreamWriter, list[Entry]], now: float) -> None:
        # The TTL is minutes long: refresh it a few times per TTL, and always with the final marker,
        # so the stream lives a full TTL after the answer ends.
        refresh_after = min(self.handler.ttl_seconds / 4, 60)
        fenced = [
            FencedBatch(
                w.session_key,
                w.correlation_id,
                w.fence,
                claim=not w.fence_claimed,
                entries=e,
                trace="" if w.fence_claimed else _trace(w),
                expire=w.finished or now - w.last_expire >= refresh_after,
            )
            for w, e in batch.items()
        ]
        # Retried for as long as readers wait out an outage (their idle timeout), so an answer that ends
        # while Redis restarts still ends with its done marker; capped backoff, so it is written soon after.
        delay, deadline = FIRST_RETRY_DELAY_SECONDS, time.monotonic() + self.handler.idle_timeout_seconds
        while True:
            try:
                owned = await write_fenced(self.handler, fenced)  # refused where a newer attempt owns the run
                self.round_trips += 1
                written = 0
                for writer, sent, (still_owner, first_trace) in zip(batch, fenced, owned, strict=True):
                    if sent.expire:
                        writer.last_expire = now
                    if not writer.fence_claimed:  # the claim: its outcome, and (telemetry) a link to the first attempt
                        telemetry.link_to_first_attempt(writer.span, first_trace)
                        writer.fence_claimed = True
                        if not writer.claimed.done():
                            writer.claimed.set_result(still_owner)
                    if not still_owner:
                        writer.supersede()
                    else:
                        writer.entries_written += len(sent.entries)
                        written += len(sent.entries)
                telemetry.entries_written.add(written)
                return
            except REDIS_FAILURES as error:
                if time.monotonic() + delay > deadline:
                    self._give_up(batch, error)
                    return
                telemetry.write_retries.add(1)
                if delay == FIRST_RETRY_DELAY_SECONDS:
                    left = deadline - time.monotonic()
                    logger.warning("Redis write failed (%s); retrying for up to %.0fs", error, left)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_SECONDS)

    def _give_up(self, batch: dict[RunStreamWriter, list[Entry]], error: Exception) -> None:
        telemetry.entries_lost.add(_count(batch))
        for writer, entries in batch.items():
            if not writer.claimed.done():  # unknown: the run goes on, as it does through any Redis trouble
                writer.claimed.set_result(True)
            writer.tokens_lost += _count_tokens(entries)
            logger.error(
                "Redis writes failed for %gs (%s); %d tokens of run %s not streamed",
                self.handler.idle_timeout_seconds,
                error,
                _count_tokens(entries),
                writer.correlation_id,
                extra={"tokens_lost": _count_tokens(entries)},  # for log processors (and tests) to add up
            )


def _log_if_failed(task: asyncio.Task[None]) -> None:
    # A flusher that stopped would leave every run waiting for `written`: say why, loudly.
    if not task.cancelled() and task.exception() is not None:
        logger.error("the stream flusher stopped", exc_info=task.exception())


def _trace(writer: RunStreamWriter) -> str:
    # A claiming write keeps the run's first traceparent beside the fence (reliability/fencing.py).
    return telemetry.carrier_of(writer.span).get("traceparent", "")


def _end_span(writer: RunStreamWriter, outcome: str, error: str | None) -> None:
    if writer.span is not None:
        telemetry.end_stream_write(writer.span, outcome, writer.entries_written, writer.tokens_lost, error)
        writer.span = None


def _count(batch: dict[RunStreamWriter, list[Entry]]) -> int:
    return sum(len(entries) for entries in batch.values())


def _current_task_or_none() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no loop runs on this thread
        return None


def _kind_and_time(entry: Entry) -> tuple[str, float]:
    # All telemetry's chunk clock reads of an entry: no dict built per token for it.
    if isinstance(entry, Token):
        return TOKEN, entry.microseconds / 1e6
    return entry["kind"], float(entry["timestamp"])


def _count_tokens(entries: list[Entry]) -> int:
    # Tool entries count too: they take sequence numbers, so a reader sees them missing like tokens.
    return sum(1 for entry in entries if isinstance(entry, Token) or entry["kind"] in NUMBERED_KINDS)


async def _demo(redis_url: str) -> None:
    async with RedisStreamResponseHandler.from_url(redis_url, ttl_seconds=60) as handler:
        conversation = f"writer-demo-{uuid.uuid4().hex}"
        writer = RunStreamWriter(StreamFlusher(handler), conversation, "run-1")
        writer.start()
        for word in ["Write-behind", "keeps", "Redis", "off", "the", "agent's", "path."]:
            writer.append_token(word + " ")
            await asyncio.sleep(0.02)
        await writer.finish()
        async for chunk in read_run(handler, conversation, correlation_id="run-1"):
            print(chunk.entry_id, chunk.kind, repr(chunk.text))


if __name__ == "__main__":
    from support.services import demo_redis

    with demo_redis() as demo_url:
        asyncio.run(_demo(demo_url))
