"""Exactly once when a run is delivered again while its first attempt still runs (a frozen worker).

Two lines of defence, each tested on its own against a real Redis:
- the fence (reliability/fencing.py): once a newer attempt has claimed the run, the older
  attempt's writes are refused atomically, and its run is cancelled;
- the reader (reliability/run_tracker.py): entries of a superseded attempt that reached the
  stream anyway are never shown, and a superseded `done` never ends the read.
Every attempt here says different words ("old…", "new…"), so a splice would show.
tests/reliability/test_frozen_worker.py stages the same with real processes and SIGSTOP.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from agent_framework import AgentResponse, AgentResponseUpdate, Content, Message
from agent_framework_durabletask import AgentCallbackContext

from redis_stream_response_handler import DONE, START, TOKEN, RedisStreamResponseHandler, entry_fields
from reliability.run_tracker import read_run
from reliability.write_behind import RunStreamWriter, StreamFlusher
from support.config import load_settings
from tests.streams import all_entries, until_written, write_entries
from worker import RedisStreamCallback

RUN = "run-1"


async def test_a_superseded_attempt_is_fenced_out_and_its_run_cancelled(redis_url: str) -> None:
    session = f"fence-{uuid.uuid4().hex}"
    async with RedisStreamResponseHandler.from_url(redis_url) as handler:
        flusher = StreamFlusher(handler)
        new_attempt_started = asyncio.Event()
        old_writer: list[RunStreamWriter] = []

        async def old_attempt() -> None:  # the frozen worker's run: it wakes up after the new attempt began
            writer = RunStreamWriter(flusher, session, RUN)
            old_writer.append(writer)
            writer.start()
            for n in range(3):
                writer.append_token(f"old{n} ")
            await new_attempt_started.wait()
            writer.append_token("old3 ")
            await writer.finish()
            await asyncio.sleep(10)  # the fence cancels this run long before

        old_run = asyncio.create_task(old_attempt())
        await until_written(handler, session, 4)
        new = RunStreamWriter(flusher, session, RUN)
        new.start()
        new.append_token("new0 ")
        await until_written(handler, session, 6)
        new_attempt_started.set()

        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(old_run, 5)  # the old attempt's write was refused, and its run stopped
        new.append_token("new1 ")
        await new.finish()
        written = await all_entries(handler, session)
        chunks = [chunk async for chunk in read_run(handler, session, correlation_id=RUN)]

    assert old_writer[0].superseded and not new.superseded
    new_start = next(index for index, fields in enumerate(written) if fields.get("attempt") == new.attempt)
    assert all(fields["attempt"] == new.attempt for fields in written[new_start:])  # nothing of the old one after
    assert [fields["kind"] for fields in written].count(DONE) == 1
    after_restart = chunks[[chunk.kind for chunk in chunks].index("restart") + 1 :]
    assert "".join(chunk.text for chunk in after_restart) == "new0 new1 " and after_restart[-1].kind == DONE


async def test_a_reader_never_shows_a_superseded_attempt_that_reached_the_stream(redis_url: str) -> None:
    # The fence's second line: the stream holds the old attempt's late tokens and its done (written
    # unfenced here), interleaved with the new attempt's. Readers from the start, and readers resuming
    # inside the new attempt, see the new attempt alone and end on ITS done.
    session = f"splice-{uuid.uuid4().hex}"

    def entry(kind: str, attempt: str, sequence: int, text: str = "", **extra: str) -> dict[str, str]:
        return entry_fields(kind, RUN, sequence, text, attempt=attempt, **extra)

    async with RedisStreamResponseHandler.from_url(redis_url, idle_timeout_seconds=2) as handler:
        old_head = [entry(START, "old", 0), entry(TOKEN, "old", 0, "old0 "), entry(TOKEN, "old", 1, "old1 ")]
        new_head = [entry(START, "new", 0), entry(TOKEN, "new", 0, "new0 ")]
        zombie = [entry(TOKEN, "old", 2, "old2 "), entry(DONE, "old", 3, chunks="3")]
        new_tail = [entry(TOKEN, "new", 1, "new1 "), entry(DONE, "new", 2, chunks="2")]
        ids = await write_entries(handler, session, [*old_head, *new_head, *zombie, *new_tail])
        from_start = [chunk async for chunk in read_run(handler, session, correlation_id=RUN)]
        resumed = [chunk async for chunk in read_run(handler, session, ids[4], RUN)]  # after "new0 "

    restart = [chunk.kind for chunk in from_start].index("restart")
    assert "".join(chunk.text for chunk in from_start[restart:]) == "new0 new1 "
    assert from_start[-1].kind == DONE and from_start[-1].attempt == "new" and from_start[-1].missing == 0
    assert "".join(chunk.text for chunk in resumed) == "new1 " and resumed[-1].attempt == "new"
    assert all(chunk.attempt == "new" for chunk in resumed)


async def test_a_run_delivered_again_to_the_worker_still_running_it_is_two_attempts_not_one(redis_url: str) -> None:
    # Found by the chaos run (tests/chaos): a worker frozen past its lease wakes up, reconnects and
    # receives its own run back while the old attempt still runs in it. Both attempts call the ONE
    # callback with equal contexts (same correlation id); keyed by correlation id they shared a writer,
    # spliced their tokens under one attempt id, and each wrote a `done`.
    session = f"same-worker-{uuid.uuid4().hex}"
    callback = RedisStreamCallback(load_settings({}), redis_url)
    context = AgentCallbackContext(agent_name="TravelPlanner", correlation_id=RUN, session_id=session)
    again = AgentCallbackContext(agent_name="TravelPlanner", correlation_id=RUN, session_id=session)
    new_attempt_started = asyncio.Event()

    async def attempt(context: AgentCallbackContext, words: list[str], wait: bool = False) -> None:
        for index, word in enumerate(words):
            if wait and index == 2:
                await new_attempt_started.wait()  # the old attempt goes on after the new one began
            await callback.on_streaming_response_update(
                AgentResponseUpdate(contents=[Content.from_text(word)]), context
            )
            await asyncio.sleep(0.05)
        await callback.on_agent_response(AgentResponse(messages=[Message("assistant", ["".join(words)])]), context)

    async with RedisStreamResponseHandler.from_url(redis_url, idle_timeout_seconds=5) as handler:
        old_run = asyncio.create_task(attempt(context, ["old0 ", "old1 ", "old2 ", "old3 "], wait=True))
        await until_written(handler, session, 3)  # start, old0, old1
        new_run = asyncio.create_task(attempt(again, ["new0 ", "new1 ", "new2 "]))
        await until_written(handler, session, 5)  # the new attempt's start and first token
        new_attempt_started.set()
        await asyncio.wait_for(new_run, 10)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(old_run, 5)  # its write was refused: superseded, its run cancelled
        written = await all_entries(handler, session)
        chunks = [chunk async for chunk in read_run(handler, session, correlation_id=RUN)]
    await callback.aclose(None)

    starts = [fields["attempt"] for fields in written if fields["kind"] == START]
    assert len(starts) == 2 and starts[0] != starts[1]  # two attempts, told apart
    assert [fields["attempt"] for fields in written if fields["kind"] == DONE] == [starts[1]]  # one done, the new one's
    new_begins = next(index for index, fields in enumerate(written) if fields["attempt"] == starts[1])
    assert all(fields["attempt"] == starts[1] for fields in written[new_begins:])  # nothing of the old one after
    restart = [chunk.kind for chunk in chunks].index("restart")
    assert "".join(chunk.text for chunk in chunks[restart:]) == "new0 new1 new2 " and chunks[-1].kind == DONE
