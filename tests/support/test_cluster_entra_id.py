"""Azure Managed Redis as the README configures it: a cluster AND Microsoft Entra ID, together.

Three masters on loopback (tests/support/redis_cluster.py), each locked down like
Azure's shards: no default user, the identity's current token is the password of
the ACL user named after its object id, set on every node at once, as an access
policy assignment is. `FakeManagedIdentity` plays the managed identity endpoint.
redis-py's RedisCluster, redis-entraid and azure-identity run unchanged.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import redis

from redis_stream_response_handler import DONE, START, TOKEN, RedisStreamResponseHandler, stream_key
from reliability.run_tracker import read_run
from reliability.write_behind import RunStreamWriter, StreamFlusher
from tests.conftest import cli_environment, run_cli
from tests.support.fake_azure_identity import FakeManagedIdentity, redis_for_entra_id
from tests.support.redis_cluster import LocalRedisCluster, cluster_binaries, local_redis_cluster

pytestmark = pytest.mark.skipif(cluster_binaries() is None, reason="needs redis-server and redis-cli (redis-tools)")

TOKEN_LIFETIME_SECONDS = 3  # renewed at 70%: about every 2 s
LockedCluster = tuple[LocalRedisCluster, FakeManagedIdentity, list[str]]  # and a session key on each node


class EveryNode:
    """The control plane of a cluster: an ACL change goes to every master."""

    def __init__(self, admins: list[redis.Redis]) -> None:
        self.admins = admins

    def execute_command(self, *args: Any) -> None:
        for admin in self.admins:
            admin.execute_command(*args)


@pytest.fixture
def locked_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[LockedCluster]:
    with local_redis_cluster() as cluster, ExitStack() as stack:
        sessions = _sessions_on_every_node(cluster)  # before the lock-down: finding them needs a client
        admins = [stack.enter_context(redis_for_entra_id(node.port)) for node in cluster.nodes]
        fake = stack.enter_context(FakeManagedIdentity(EveryNode(admins), lifetime_seconds=TOKEN_LIFETIME_SECONDS))
        for name, value in fake.environment.items():
            monkeypatch.setenv(name, value)
        yield cluster, fake, sessions


def _sessions_on_every_node(cluster: LocalRedisCluster) -> list[str]:
    found: dict[int, str] = {}
    while len(found) < len(cluster.nodes):
        key = f"azure-{uuid.uuid4().hex[:12]}"
        found.setdefault(cluster.node_for(stream_key(key)), key)
    return list(found.values())


async def test_streams_on_every_node_are_written_and_read_across_token_renewals(
    locked_cluster: LockedCluster,
) -> None:
    cluster, fake, sessions = locked_cluster
    url = f"{cluster.url}&auth=entra-id"
    async with (
        RedisStreamResponseHandler.from_url(url) as writer_side,
        RedisStreamResponseHandler.from_url(url, idle_timeout_seconds=10) as reader_side,
    ):
        readers = [asyncio.ensure_future(_read(reader_side, session)) for session in sessions]
        flusher = StreamFlusher(writer_side)
        writers = [RunStreamWriter(flusher, session, "run-1") for session in sessions]
        for writer in writers:
            writer.start()
        for n in range(25):  # 5 s: past two renewals
            for writer in writers:
                writer.append_token(f"{n} ")
            await asyncio.sleep(0.2)
        await asyncio.gather(*(writer.finish() for writer in writers))
        reads = await asyncio.gather(*readers)
        renewals = [at for at in fake.issued_at if at - fake.issued_at[0] > 1.0]
        # Opened now, a client cannot use the first token: it has expired on every node.
        async with RedisStreamResponseHandler.from_url(url) as late:
            last_ids = [await late.last_entry_id(session) for session in sessions]

    for chunks, last_id in zip(reads, last_ids, strict=True):
        assert chunks[0].kind == START and chunks[-1].kind == DONE and chunks[-1].missing == 0
        assert [c.sequence for c in chunks if c.kind == TOKEN] == list(range(25))
        assert last_id == chunks[-1].entry_id
    assert len(renewals) >= 2, "the cluster clients must have renewed their tokens while the streams were written"


async def _read(handler: RedisStreamResponseHandler, session: str) -> list:  # type: ignore[type-arg]
    return [chunk async for chunk in read_run(handler, session, correlation_id="run-1")]


def test_the_sample_runs_end_to_end_on_a_cluster_with_entra_id(
    locked_cluster: LockedCluster,
) -> None:
    cluster, fake, _ = locked_cluster
    seed = f"redis://127.0.0.1:{cluster.nodes[0].port}"
    env = cli_environment(REDIS_CONNECTION_STRING=seed, REDIS_CLUSTER="true", REDIS_AUTH="entra-id", **fake.environment)
    result = run_cli("sample.py", "-m", "Plan a 2-day trip to Oslo", env=env)

    assert result.returncode == 0, result.stderr
    assert "Oslo" in result.stdout
    assert fake.issued and not any(token in result.stdout + result.stderr for token in fake.issued)
