"""The SSE response of a shared run: per event and per reader, one socket write of bytes encoded once.

sse-starlette's EventSourceResponse (which AG-UI still uses) takes events from a generator per
reader, encodes each one for that reader, and runs four tasks and a cancel scope per send: at
10,000 readers that per-reader work ran the web process out of CPU. This response writes the
frames of a SharedRun (webapp/shared_runs.py), already encoded, and does only what is per reader:

- the same headers as sse-starlette (text/event-stream, no-store, keep-alive, no proxy buffering),
  and the `retry` hint first, so a browser's EventSource behaves as before;
- the frames this reader has not sent, in one send (several when it fell behind);
- a keep-alive comment once nothing was sent for `ping` seconds, so proxies keep the connection;
- on a cut (too slow, the server stopping) an error event whose id is the last one THIS reader
  sent, so its Last-Event-ID resumes it losing nothing;
- the client gone: it leaves the run (the run's last reader stops its read) and the budget.

Seen at work: tests/webapp/test_shared_runs.py (the same bytes as a lone reader's), and the browser tests.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

from redis.exceptions import RedisError
from sse_starlette import ServerSentEvent
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from webapp.shared_runs import RunKey, RunReader, SharedRuns
from webapp.stream_budget import StreamBudget
from webapp.stream_hub import ReaderTooSlowError, ServerStoppingError

RETRY_MILLISECONDS = 1000  # how soon a browser's EventSource reconnects after a dropped connection
# No data, so no event for the page: just the reconnect delay, sent at once.
PREAMBLE = ServerSentEvent(comment="streaming", retry=RETRY_MILLISECONDS).encode()
HEADERS = {"Cache-Control": "no-store", "Connection": "keep-alive", "X-Accel-Buffering": "no"}


class SharedRunResponse(Response):
    """text/event-stream of the SharedRun for `key`; gives its reserved stream back however it ends."""

    media_type = "text/event-stream"

    def __init__(self, runs: SharedRuns, key: RunKey, *, budget: StreamBudget, ping: float) -> None:
        # Not Response.__init__: a stream has no body to measure (it would send Content-Length: 0).
        self.status_code, self.background = 200, None
        self.init_headers(HEADERS)
        self.runs, self.key, self.budget = runs, key, budget
        # Readers that connect together (a wall of dashboards, a shared link) would send their keep-alive
        # comments together for ever: 10,000 in one burst, holding up the tokens. 1–1.5× the interval spreads them.
        self.ping_seconds = ping * random.uniform(1.0, 1.5)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if scope["method"] != "HEAD":  # Starlette answers HEAD on every GET route: the headers only
                await self._follow(scope, receive, send)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.budget.close()

    async def _follow(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["app"].state
        state.active_streams += 1  # tests check that disconnects bring it back to 0
        reader = self.runs.join(self.key)
        watcher = asyncio.create_task(_until_disconnect(receive, reader))
        try:
            await _write(send, PREAMBLE)
            await self._stream(send, reader)
        finally:
            watcher.cancel()
            self.runs.leave(reader)
            state.active_streams -= 1

    async def _stream(self, send: Send, reader: RunReader) -> None:
        """The run's frames as they come, until its end, a cut, or the client leaving."""
        run, pinger = reader.run, _Pinger(reader, self.ping_seconds)
        try:
            while not reader.gone:
                reader.arrived.clear()  # before looking: news that comes while this reader writes sets it again
                if reader.position < run.end:
                    try:
                        data = reader.unsent()
                    except ReaderTooSlowError as error:
                        await _write(send, resume_event(error, reader.last_sent))
                        return
                    pinger.wrote()
                    await _write(send, data)
                elif run.ended:
                    if run.failure is not None:
                        await self._tell_failure(send, reader, run.failure)
                    return
                elif pinger.owed:
                    pinger.wrote()
                    await _write(send, ServerSentEvent(comment=f"ping - {datetime.now(UTC)}").encode())
                else:
                    await reader.arrived.wait()
        finally:
            pinger.cancel()

    @staticmethod
    async def _tell_failure(send: Send, reader: RunReader, failure: Exception) -> None:
        if isinstance(failure, ReaderTooSlowError | ServerStoppingError):
            await _write(send, resume_event(failure, reader.last_sent))
        elif isinstance(failure, RedisError):  # an error event the page shows, not an aborted response
            await _write(
                send,
                ServerSentEvent(f"Redis failed while streaming ({failure}); reload to resume", event="error").encode(),
            )
        # Anything else (a bug, logged by the run): the response just ends, and the client reconnects.


def resume_event(error: Exception, last_sent: str) -> bytes:
    """The error event of a reader cut off (too slow, the server stopping): why, and where to resume."""
    return ServerSentEvent(f"{error}; resume after {last_sent}", event="error", id=last_sent).encode()


async def _write(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


class _Pinger:
    """Owes the reader a keep-alive comment once nothing was written for `seconds`.

    One timer per reader, moved on only when it fires (not a timeout per wait: that was a timer
    created and cancelled for every event of every reader).
    """

    def __init__(self, reader: RunReader, seconds: float) -> None:
        self.reader, self.seconds, self.owed = reader, seconds, False
        self.loop = asyncio.get_running_loop()
        self.written_at = self.loop.time()
        self.timer = self.loop.call_later(seconds, self._due)

    def wrote(self) -> None:
        self.owed, self.written_at = False, self.loop.time()

    def _due(self) -> None:
        quiet = self.loop.time() - self.written_at
        if quiet >= self.seconds:
            self.owed, quiet = True, 0.0
            self.reader.wake()
        self.timer = self.loop.call_later(self.seconds - quiet, self._due)

    def cancel(self) -> None:
        self.timer.cancel()


async def _until_disconnect(receive: Receive, reader: RunReader) -> None:
    """Wake the reader when its client goes (uvicorn's send would otherwise drop its writes silently)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    reader.gone = True
    reader.wake()
