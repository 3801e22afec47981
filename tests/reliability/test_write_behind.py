"""Write-behind against a real Redis: order, batching, heartbeats, markers."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import redis
from agent_framework import AgentResponseUpdate

from redis_stream_response_handler import (
    DONE,
    ERROR,
    HEARTBEAT,
    RESTART,
    START,
    TOKEN,
    RedisStreamResponseHandler,
    entry_fields,
    stream_key,
)
from reliability.fencing import attempts_key
from reliability.run_liveness import ENDED_WITHOUT_A_MARKER
from reliability.run_tracker import read_run
from reliability.write_behind import RunStreamWriter, StreamFlusher
from support.ports import free_port
from support.private_redis import PrivateRedisServer
from tests.streams import all_entries, until_written, write_entries


async def test_tokens_appended_faster_than_redis_round_trips_arrive_complete_and_in_order(redis_url: str) -> None:
    conversation = f"writer-{uuid.uuid4().hex}"
    async with RedisStreamResponseHandler.from_url(redis_url) as handler:
        writer = RunStreamWriter(StreamFlusher(handler), conversation, "run-1")
        writer.start()
        for n in range(2000):  # no await between appends: the flusher must batch
            writer.append_token(f"{n} ")
        await writer.finish()
        entries = await all_entries(handler, conversation)

    tokens = [e for e in entries if e["kind"] == TOKEN]
    assert [int(e["sequence"]) for e in tokens] == list(range(2000))
    assert "".join(e["text"] for e in tokens) == "".join(f"{n} " for n in range(2000))
    assert entries[0]["kind"] == START and entries[-1]["kind"] == DONE and entries[-1]["chunks"] == "2000"
    assert writer.tokens_lost == 0


async def test_a_token_is_stored_with_the_fields_entry_fields_describes(redis_url: str) -> None:
    # The writer queues a token as a compact Token and the fenced write's Lua script fills in its fields:
    # what Redis stores must still be `entry_fields`'s description, name for name, in the same order.
    conversation, text = f"writer-{uuid.uuid4().hex}", 'naïve "quoted" ✓ \\ tab\t'
    async with RedisStreamResponseHandler.from_url(redis_url) as handler:
        writer = RunStreamWriter(StreamFlusher(handler), conversation, "run-1")
        writer.start()
        before = time.time_ns() // 1000  # whole microseconds, the unit the writer stores
        writer.append_token(text)
        await writer.finish()
        stored = [e for e in await all_entries(handler, conversation) if e["kind"] == TOKEN]

    assert len(stored) == 1
    expected = entry_fields(TOKEN, "run-1", 0, text) | {"timestamp": stored[0]["timestamp"], "attempt": writer.attempt}
    assert list(stored[0].items()) == list(expected.items())
    assert re.fullmatch(r"\d+\.\d{6}", stored[0]["timestamp"])
    # In whole microseconds: time.time() keeps the fraction of a microsecond that the stored timestamp floors away.
    assert before <= int(stored[0]["timestamp"].replace(".", "")) <= time.time_ns() // 1000


async def test_a_silent_run_writes_heartbeats(redis_url: str) -> None:
    conversation = f"writer-{uuid.uuid4().hex}"
    async with RedisStreamResponseHandler.from_url(redis_url) as handler:
        writer = RunStreamWriter(StreamFlusher(handler), conversation, "run-1", heartbeat_seconds=0.1)
        writer.start()
        await asyncio.sleep(0.55)  # a slow tool call
        writer.append_token("done thinking")
        await writer.finish()
        kinds = [e["kind"] for e in await all_entries(handler, conversation)]

    assert kinds[0] == START and kinds[-2:] == [TOKEN, DONE]
    assert kinds.count(HEARTBEAT) >= 3


async def test_a_run_that_ended_without_its_marker_gets_an_error_marker_not_heartbeats(redis_url: str) -> None:
    """Default settings. Heartbeats prove a run alive: once its task is gone, readers get an error, not more waiting."""
    conversation = f"writer-{uuid.uuid4().hex}"
    async with RedisStreamResponseHandler.from_url(redis_url) as handler:
        flusher = StreamFlusher(handler)

        async def a_run_that_skips_its_report() -> None:  # a failure path that never writes the final marker
            writer = RunStreamWriter(flusher, conversation, "run-1")
            writer.start()
            writer.append_token("partial ")

        await asyncio.create_task(a_run_that_skips_its_report())
        async with asyncio.timeout(10):  # the hang this guards against: heartbeats for ever (it takes < 1 s)
            chunks = [c async for c in read_run(handler, conversation, correlation_id="run-1")]

    assert [c.kind for c in chunks] == [START, TOKEN, ERROR]
    assert chunks[-1].error == ENDED_WITHOUT_A_MARKER


async def test_a_run_silent_for_the_max_silence_gets_an_error_marker(redis_url: str) -> None:
    conversation = f"writer-{uuid.uuid4().hex}"
    async with RedisStreamResponseHandler.from_url(redis_url) as handler:
        flusher = StreamFlusher(handler, max_silence_seconds=1.0)
        writer = RunStreamWriter(flusher, conversation, "run-1", heartbeat_seconds=0.1)
        writer.start()
        writer.append_token("thinking ")  # then the model call hangs: no more updates
        async with asyncio.timeout(10):  # heartbeats every 0.1 s would keep this reader waiting for ever
            chunks = [c async for c in read_run(handler, conversation, correlation_id="run-1")]
        writer.append_token("too late ")
        await writer.finish()  # the stream has ended: returns at once, writes nothing
        kinds = [e["kind"] for e in await all_entries(handler, conversation)]

    assert [c.kind for c in chunks] == [START, TOKEN, ERROR]
    assert chunks[-1].error is not None and "no progress for 1s" in chunks[-1].error
    assert HEARTBEAT in kinds and kinds[-1] == ERROR  # alive until the limit; nothing after the error marker


async def test_updates_without_text_are_progress_too(redis_url: str) -> None:
    """Updates that add no entry (a tool call's argument fragments, say) still show the run alive."""
    conversation = f"writer-{uuid.uuid4().hex}"
    async with RedisStreamResponseHandler.from_url(redis_url) as handler:
        writer = RunStreamWriter(StreamFlusher(handler, max_silence_seconds=2.0), conversation, "run-1")
        writer.start()
        for _ in range(30):  # three seconds of updates without text, each well within the limit
            await asyncio.sleep(0.1)
            writer.append_update(AgentResponseUpdate(role="assistant"))
        writer.append_token("the answer")
        await writer.finish()
        chunks = [c async for c in read_run(handler, conversation, correlation_id="run-1")]

    assert [c.kind for c in chunks] == [START, TOKEN, DONE]


async def test_the_error_marker_comes_after_every_token(redis_url: str) -> None:
    conversation = f"writer-{uuid.uuid4().hex}"
    async with RedisStreamResponseHandler.from_url(redis_url) as handler:
        writer = RunStreamWriter(StreamFlusher(handler), conversation, "run-1")
        writer.start()
        writer.append_token("partial ")
        await writer.finish(error="RuntimeError: model down")
        writer.append_token("ignored after the end")
        entries = await all_entries(handler, conversation)

    assert [e["kind"] for e in entries] == [START, TOKEN, ERROR]
    assert entries[-1]["error"] == "RuntimeError: model down"


async def test_restart_replaces_the_partial_attempt_for_readers(redis_url: str) -> None:
    conversation = f"writer-{uuid.uuid4().hex}"
    async with RedisStreamResponseHandler.from_url(redis_url, idle_timeout_seconds=2) as handler:
        writer = RunStreamWriter(StreamFlusher(handler), conversation, "run-1")
        writer.start()
        writer.append_token("half an ")
        writer.restart_with("The whole recorded answer.", reason="retried without streaming")
        await writer.finish()
        chunks = [c async for c in read_run(handler, conversation, correlation_id="run-1")]

    after_restart = chunks[[c.kind for c in chunks].index(RESTART) :]
    assert "".join(c.text for c in after_restart) == "The whole recorded answer."
    assert writer.streamed == "The whole recorded answer."


async def test_concurrent_runs_share_one_flusher_and_its_round_trips(redis_url: str) -> None:
    async with RedisStreamResponseHandler.from_url(redis_url, ttl_seconds=90) as handler:
        flusher = StreamFlusher(handler)
        writers = [RunStreamWriter(flusher, f"writer-{uuid.uuid4().hex}", f"run-{n}") for n in range(20)]
        for writer in writers:
            writer.start()
        for step in range(50):  # 20 runs at model pace: a token each, then the loop turns
            for writer in writers:
                writer.append_token(f"{step} ")
            await asyncio.sleep(0.002)
        await asyncio.gather(*(writer.finish() for writer in writers))
        streams = [await all_entries(handler, writer.session_key) for writer in writers]
        ttls = [await handler.redis.ttl(stream_key(writer.session_key)) for writer in writers]
        round_trips = flusher.round_trips

    for entries in streams:
        tokens = [e for e in entries if e["kind"] == TOKEN]
        assert "".join(e["text"] for e in tokens) == "".join(f"{step} " for step in range(50))
        assert entries[-1]["kind"] == DONE
    assert all(0 < ttl <= 90 for ttl in ttls)  # the final batch refreshed every stream's TTL
    assert round_trips < 20 * 52 / 5  # far fewer round trips than entries: the runs share batches


async def test_a_batch_repeated_by_a_retry_is_read_once(redis_url: str) -> None:
    written, replayed = f"writer-{uuid.uuid4().hex}", f"writer-{uuid.uuid4().hex}"
    async with RedisStreamResponseHandler.from_url(redis_url, idle_timeout_seconds=2) as handler:
        writer = RunStreamWriter(StreamFlusher(handler), written, "run-1")
        writer.start()
        writer.append_token("hello ")
        await writer.finish()
        start, token, done = await all_entries(handler, written)
        # What a retried, partly applied batch leaves behind: start and token twice, then the rest.
        await write_entries(handler, replayed, [start, token, start, token, done])
        chunks = [c async for c in read_run(handler, replayed, correlation_id="run-1")]

    assert [c.kind for c in chunks] == [START, TOKEN, DONE]  # a repeated start is not a restart


async def test_a_cluster_with_no_reachable_node_loses_the_tokens_but_ends_the_run() -> None:
    """redis-py raises RedisClusterException (not a RedisError) here: the flusher must survive it."""
    unreachable = f"redis://127.0.0.1:{free_port()}?cluster=true"
    async with RedisStreamResponseHandler.from_url(unreachable, idle_timeout_seconds=2) as handler:
        writer = RunStreamWriter(StreamFlusher(handler), f"writer-{uuid.uuid4().hex}", "run-1")
        writer.start()
        writer.append_token("lost ")
        async with asyncio.timeout(30):  # the hang this guards against: a dead flusher never writes `done`
            await writer.finish()

    assert writer.tokens_lost == 1


async def test_a_live_stream_has_its_ttl_from_the_first_write(redis_url: str) -> None:
    # Not only once the answer ends: a worker that dies mid-answer must not leave a stream that never expires.
    conversation = f"writer-{uuid.uuid4().hex}"
    async with RedisStreamResponseHandler.from_url(redis_url, ttl_seconds=600) as handler:
        writer = RunStreamWriter(StreamFlusher(handler), conversation, "run-1")
        writer.start()
        writer.append_token("first ")
        await until_written(handler, conversation, 2)  # the start marker and the token: the run is live
        ttl_while_live = await handler.redis.ttl(stream_key(conversation))
        fence_ttl_while_live = await handler.redis.ttl(attempts_key(conversation))
        await writer.finish()

    assert 0 < ttl_while_live <= 600 and 0 < fence_ttl_while_live <= 600


async def test_a_resumed_read_starts_after_the_cursor_entry_never_at_it(redis_url: str) -> None:
    # XREAD is exclusive of its id: resuming at the last entry printed must not print it again.
    conversation = f"writer-{uuid.uuid4().hex}"
    async with RedisStreamResponseHandler.from_url(redis_url, idle_timeout_seconds=2) as handler:
        writer = RunStreamWriter(StreamFlusher(handler), conversation, "run-1")
        writer.start()
        for word in ("one ", "two ", "three "):
            writer.append_token(word)
        await writer.finish()
        first = [c async for c in read_run(handler, conversation, correlation_id="run-1")]
        cursor = next(c.entry_id for c in first if c.text == "two ")
        resumed = [c async for c in read_run(handler, conversation, cursor, "run-1")]

    assert [c.text for c in resumed] == ["three ", ""] and resumed[-1].kind == DONE and resumed[-1].missing == 0


async def test_a_run_ending_as_the_worker_stops_is_never_left_waiting_for_its_marker() -> None:
    """The run had queued its done marker and the flusher was writing it when the worker stopped.

    Before, `aclose()` cancelled that write and nothing ever told the run: it waited for its marker
    for ever, on a work-item thread the process joins at exit (sample.py, its stdout closed by
    `| head`, sat in a futex wait until killed).
    """
    conversation = f"writer-{uuid.uuid4().hex}"
    with PrivateRedisServer(free_port()) as server:  # its own: a paused Redis would hold up other tests
        admin = redis.Redis.from_url(server.url)
        try:
            async with RedisStreamResponseHandler.from_url(server.url) as handler:
                flusher = StreamFlusher(handler)
                writer = RunStreamWriter(flusher, conversation, "run-1")
                writer.start()
                await until_written(handler, conversation, 1)
                admin.execute_command("CLIENT", "PAUSE", "5000", "WRITE")  # longer than the stop waits for writes
                finishing = asyncio.create_task(writer.finish())  # the run's last step
                await asyncio.sleep(0)  # ... has queued its done marker, and waits until it is written
                await flusher.aclose()
                async with asyncio.timeout(30):  # the hang this guards against
                    await finishing
        finally:
            admin.close()

    assert writer.written.done()
