"""The streaming layer on a real Redis Cluster: three masters started on loopback for this module.

Streams of different sessions hash to different slots, so to different nodes:
the flusher's one pipeline is split per node, TTLs are refreshed on each, and
readers follow their own stream wherever it lives, including across a
restart of the node that holds it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from redis_stream_response_handler import DONE, ERROR, START, TOKEN, RedisStreamResponseHandler, StreamChunk, stream_key
from reliability.run_tracker import EntrySource, read_run
from reliability.write_behind import RunStreamWriter, StreamFlusher
from support.redis_connection import async_client, sync_client
from tests.conftest import cli_environment, run_cli
from tests.support.redis_cluster import LocalRedisCluster, cluster_binaries, local_redis_cluster
from webapp.stream_hub import HubReader, StreamHub, hub_client_options

pytestmark = pytest.mark.skipif(cluster_binaries() is None, reason="needs redis-server and redis-cli (redis-tools)")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRedisCluster]:
    with local_redis_cluster() as running:
        yield running


def sessions_on_different_nodes(cluster: LocalRedisCluster, count: int) -> list[str]:
    """`count` new session keys whose streams live on `count` different masters."""
    found: dict[int, str] = {}
    while len(found) < count:
        key = f"cluster-{uuid.uuid4().hex[:12]}"
        found.setdefault(cluster.node_for(stream_key(key)), key)
    return list(found.values())


async def read_all(handler: EntrySource, session: str) -> list[StreamChunk]:
    return [chunk async for chunk in read_run(handler, session, correlation_id="run-1")]


async def test_one_flush_writes_streams_on_every_node_and_readers_follow_them(cluster: LocalRedisCluster) -> None:
    sessions = sessions_on_different_nodes(cluster, 3)
    async with (
        RedisStreamResponseHandler.from_url(cluster.url, ttl_seconds=300) as writer_side,
        RedisStreamResponseHandler.from_url(cluster.url, idle_timeout_seconds=10) as reader_side,
    ):
        readers = [asyncio.ensure_future(read_all(reader_side, session)) for session in sessions]
        flusher = StreamFlusher(writer_side)  # one flusher for every run, as in the worker
        writers = [RunStreamWriter(flusher, session, "run-1") for session in sessions]
        for writer in writers:
            writer.start()
        for n in range(50):  # no await between appends: each flush carries all three streams
            for writer in writers:
                writer.append_token(f"{n} ")
            await asyncio.sleep(0.002)
        await asyncio.gather(*(writer.finish() for writer in writers))
        reads = await asyncio.gather(*readers)
        round_trips = flusher.round_trips

    for chunks in reads:
        assert chunks[0].kind == START and chunks[-1].kind == DONE and chunks[-1].missing == 0
        assert [c.sequence for c in chunks if c.kind == TOKEN] == list(range(50))
    assert round_trips < 3 * 52, "streams on different nodes must share flushes, not one round trip each"
    with sync_client(cluster.url) as admin:
        assert all(0 < int(admin.ttl(stream_key(session))) <= 300 for session in sessions)  # type: ignore[arg-type]


async def test_a_reader_continues_after_the_node_holding_its_stream_restarts(cluster: LocalRedisCluster) -> None:
    session = sessions_on_different_nodes(cluster, 1)[0]
    async with (
        RedisStreamResponseHandler.from_url(cluster.url) as writer_side,
        RedisStreamResponseHandler.from_url(cluster.url, idle_timeout_seconds=15) as reader_side,
    ):
        reader = asyncio.ensure_future(read_all(reader_side, session))
        writer = RunStreamWriter(StreamFlusher(writer_side), session, "run-1")
        writer.start()
        writer.append_token("before ")
        await asyncio.sleep(0.3)
        # On this thread, not in to_thread: a node dies with the thread that started it (PDEATHSIG).
        cluster.restart(cluster.node_for(stream_key(session)))  # its data is gone with it
        writer.restart_with("after the restart", reason="the node restarted")  # a new attempt, as a re-run would
        await writer.finish()
        chunks = await reader

    assert chunks[-1].kind == DONE
    assert "".join(c.text for c in chunks if c.kind == TOKEN).endswith("after the restart")


def test_the_sample_runs_end_to_end_on_a_redis_cluster(cluster: LocalRedisCluster) -> None:
    env = cli_environment(REDIS_CONNECTION_STRING=cluster.url)
    result = run_cli("sample.py", "-m", "Plan a 2-day trip to Rome", env=env)

    assert result.returncode == 0, result.stderr
    assert "Rome" in result.stdout
    assert "cluster=true" in result.stderr  # the announce line shows how it connected


async def test_a_hundred_readers_blocked_at_once_each_end_with_the_idle_message(cluster: LocalRedisCluster) -> None:
    """A fresh client, 100 readers at once, with the reader's own client settings (socket timeout included).

    redis-py 8.1 sent the first commands before it knew which node owns which slot; every fifth MOVED
    reply then closed ALL the client's connections, other readers' blocked XREADs with them.
    """
    sessions = [f"cluster-idle-{uuid.uuid4().hex[:12]}" for _ in range(100)]
    async with RedisStreamResponseHandler.from_url(cluster.url, idle_timeout_seconds=2) as readers:
        ends = await asyncio.gather(*(_last_chunk(readers, session) for session in sessions))

    assert {chunk.kind for chunk in ends} == {ERROR}
    assert all(chunk.error and chunk.error.startswith("no answer started within 2s") for chunk in ends)


async def _last_chunk(handler: RedisStreamResponseHandler, session: str) -> StreamChunk:
    chunks = [chunk async for chunk in read_run(handler, session, correlation_id="run-1")]
    return chunks[-1]


async def test_the_web_apps_stream_hub_serves_readers_on_every_node_across_a_node_restart(
    cluster: LocalRedisCluster,
) -> None:
    """The hub (webapp/stream_hub.py) reads every stream of the cluster in one pipeline, grouped by node by redis-py."""
    sessions = sessions_on_different_nodes(cluster, 3)
    restarted = sessions[0]
    hub_client = async_client(cluster.url, **hub_client_options())
    async with (
        RedisStreamResponseHandler.from_url(cluster.url, ttl_seconds=300) as writer_side,
        StreamHub(hub_client, idle_timeout_seconds=15) as hub,
    ):
        readers = [asyncio.ensure_future(read_all(HubReader(hub), s)) for s in sessions for _ in range(10)]
        flusher = StreamFlusher(writer_side)
        writers = {session: RunStreamWriter(flusher, session, "run-1") for session in sessions}
        for writer in writers.values():
            writer.start()
            writer.append_token("before ")
        await asyncio.sleep(0.3)
        cluster.restart(cluster.node_for(stream_key(restarted)))  # its data is gone with it
        writers[restarted].restart_with("after the restart", reason="the node restarted")
        for session, writer in writers.items():
            if session != restarted:
                writer.append_token("and on")
            await writer.finish()
        chunks = await asyncio.gather(*readers)

    texts = ["".join(c.text for c in run if c.kind == TOKEN) for run in chunks]
    assert all(run[-1].kind == DONE for run in chunks)
    assert all(text.endswith("after the restart") for text in texts[:10])
    assert texts[10:] == ["before and on"] * 20
