"""One run read, tracked and encoded ONCE for every SSE reader that follows it from the same place.

The readers of one answer (a user's tabs and devices, a support agent, a dashboard) ask for the
same thing: session S's run R after cursor C. Each running its own `read_run` (the run tracker),
`to_event` and SSE encoding made every event cost Python work per reader, and 10,000 readers ran
one web process out of CPU (docs/benchmarks.md, the fan-out section). Here the readers of one
(session, cursor, run) share one `SharedRun`:

    stream hub ──▶ SharedRun: read_run ──▶ to_event ──▶ encode ──▶ frames [f0 f1 f2 f3 ...]
                                                                       ▲           ▲
                                                     a reader at position 1    a reader at 4 ...

- **Per reader, only a socket write.** A reader holds its position in the frames and writes what
  it has not sent yet, several frames in one send when it fell behind (webapp/sse_response.py).
- **Same bytes as a read of its own.** What a run's frames are depends only on the entries after
  the cursor, which never change: a reader that arrives later with the same (session, cursor, run)
  joins and starts at frame 0. A reader with another cursor (one resuming with Last-Event-ID) gets
  a SharedRun of its own, so its resume is exact.
- **Bounded memory.** Past 2 × BUFFER_ENTRIES frames the oldest BUFFER_ENTRIES are dropped, and no
  later reader joins that SharedRun; a reader still among the dropped frames is too slow and gets
  an error event with the id to resume from, as the hub's own buffers do (webapp/stream_hub.py).
- **The run's end is everyone's.** Its done or error frame ends every reader; so do the hub
  stopping, a reader-too-slow cut of the shared read, or Redis failing: each reader then sends its
  own error event, with the last id IT sent.
- **An ending the record can correct.** A read that ends with an error (the idle timeout, a worker's
  error marker) is offered to `recover` first: where the durable record holds the run's answer (its
  done marker never reached Redis), readers get the `done` event it returns instead (webapp/app.py).
- The idle timeout is the stream's silence as seen by the shared read (a reader that joined late
  may hear it sooner than its own read would have: the stream was just as silent).

Seen at work: tests/webapp/test_shared_runs.py, and every SSE test in tests/webapp.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from redis_stream_response_handler import ERROR, START_OF_STREAM, StreamChunk
from reliability.run_tracker import EntrySource, read_run
from webapp.stream_hub import BUFFER_ENTRIES, ReaderTooSlowError, ServerStoppingError

logger = logging.getLogger(__name__)

RunKey = tuple[str, str | None, str | None]  # (session key, cursor, correlation id): readers that share a run
Encoder = Callable[[StreamChunk], "Frame | None"]  # a chunk's SSE bytes (None: nothing to send for it)
# A read that ended with an error chunk, for (session key, chunk): the frame to end it with instead, else None.
Recover = Callable[[str, StreamChunk], Awaitable["Frame | None"]]


@dataclass(frozen=True, slots=True)
class Frame:
    """One encoded SSE event and the entry id it carries (the reader's resume point once sent)."""

    entry_id: str
    data: bytes


@dataclass(eq=False)
class RunReader:
    """One reader's place in a SharedRun: the next frame it sends, and the last id it sent."""

    run: SharedRun
    last_sent: str  # the entry id to resume after: the last frame's it sent, else its cursor
    position: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set when there is news for this reader
    gone: bool = False  # the client disconnected

    def unsent(self) -> bytes:
        """Every frame this reader has not sent yet, as one write; raises ReaderTooSlowError past the kept ones."""
        run = self.run
        if self.position < run.first:
            raise ReaderTooSlowError(f"the reader fell {BUFFER_ENTRIES} events behind its stream")
        frames = run.frames[self.position - run.first :]
        self.position = run.first + len(run.frames)
        self.last_sent = frames[-1].entry_id
        return frames[0].data if len(frames) == 1 else b"".join(frame.data for frame in frames)

    def wake(self) -> None:
        self.arrived.set()


class SharedRun:
    """The frames of one (session, cursor, run), read and encoded by one task for all its readers."""

    def __init__(self, key: RunKey, source: EntrySource, encode: Encoder, recover: Recover | None = None) -> None:
        self.key = key
        self.frames: list[Frame] = []
        self.first = 0  # the position of frames[0]: the frames before it were dropped
        self.ended = False  # no frame will follow the last one
        self.failure: Exception | None = None  # why the read ended early (each reader tells its client)
        self.readers: set[RunReader] = set()
        self._task = asyncio.create_task(self._read(source, encode, recover), name=f"shared-run {key[0]}")

    @property
    def end(self) -> int:
        """The position after the newest frame."""
        return self.first + len(self.frames)

    @property
    def joinable(self) -> bool:
        """A new reader gets exactly its own read's frames only while none was dropped, and the read goes on."""
        return self.first == 0 and not self.ended

    async def _read(self, source: EntrySource, encode: Encoder, recover: Recover | None) -> None:
        session_key, cursor, correlation_id = self.key
        try:
            async for chunk in read_run(source, session_key, cursor, correlation_id):
                recovered = await recover(session_key, chunk) if recover and chunk.kind == ERROR else None
                frame = recovered or encode(chunk)
                if frame is not None:
                    self._publish(frame)
        except (ReaderTooSlowError, ServerStoppingError, RedisError) as error:
            self.failure = error
        except Exception as error:  # a bug: every reader's response ends (its client reconnects), logged once
            logger.exception("the shared read of %s failed", session_key)
            self.failure = error
        self.ended = True
        self._wake_all()

    def _publish(self, frame: Frame) -> None:
        self.frames.append(frame)
        if len(self.frames) >= 2 * BUFFER_ENTRIES:  # bounded: readers still in this half are too slow
            del self.frames[:BUFFER_ENTRIES]
            self.first += BUFFER_ENTRIES
        self._wake_all()

    def _wake_all(self) -> None:
        for reader in self.readers:
            reader.wake()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class SharedRuns:
    """Which SharedRun each reader joins: the live one for its (session, cursor, run), or a new one."""

    def __init__(self, source: EntrySource, encode: Encoder, recover: Recover | None = None) -> None:
        self.source, self.encode, self.recover = source, encode, recover
        self.joinable: dict[RunKey, SharedRun] = {}
        self._closing: set[asyncio.Task[None]] = set()  # held until done (the loop keeps only weak references)

    def join(self, key: RunKey) -> RunReader:
        run = self.joinable.get(key)
        if run is None or not run.joinable:
            run = self.joinable[key] = SharedRun(key, self.source, self.encode, self.recover)
        reader = RunReader(run, last_sent=key[1] or START_OF_STREAM)
        run.readers.add(reader)
        return reader

    def leave(self, reader: RunReader) -> None:
        """The reader is done; the last reader of a run stops its read (a reader that joins later starts anew)."""
        run = reader.run
        run.readers.discard(reader)
        if run.readers:
            return
        if self.joinable.get(run.key) is run:
            del self.joinable[run.key]
        task = asyncio.get_running_loop().create_task(run.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
