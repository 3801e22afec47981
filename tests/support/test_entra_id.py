"""Passwordless Redis with Microsoft Entra ID, for real: token fetched, sent as AUTH, renewed, never printed.

A private Redis is locked down the way Azure Managed Redis is (no default user;
the identity's object id is the user, its current token the password), and
`FakeManagedIdentity` plays Azure's managed identity endpoint on loopback.
DefaultAzureCredential, redis-entraid and redis-py run unchanged.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from redis_stream_response_handler import DONE, TOKEN, RedisStreamResponseHandler
from reliability.run_tracker import read_run
from reliability.write_behind import RunStreamWriter, StreamFlusher
from support.ports import free_port
from support.private_redis import PrivateRedisServer
from tests.conftest import cli_environment, run_cli
from tests.support.fake_azure_identity import OBJECT_ID, FakeManagedIdentity, redis_for_entra_id

TOKEN_LIFETIME_SECONDS = 3  # renewed at 70%: about every 2 s


@pytest.fixture
def identity(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeManagedIdentity, int]]:
    with (
        PrivateRedisServer(free_port()) as server,
        redis_for_entra_id(server.port) as admin,
        FakeManagedIdentity(admin, lifetime_seconds=TOKEN_LIFETIME_SECONDS) as fake,
    ):
        for name, value in fake.environment.items():
            monkeypatch.setenv(name, value)
        yield fake, server.port


async def test_a_stream_is_written_and_read_with_renewed_entra_id_tokens(
    identity: tuple[FakeManagedIdentity, int], caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, port = identity
    url = f"redis://127.0.0.1:{port}?auth=entra-id"
    session = f"entra-{uuid.uuid4().hex[:12]}"
    async with (
        RedisStreamResponseHandler.from_url(url) as writer_side,
        RedisStreamResponseHandler.from_url(url, idle_timeout_seconds=10) as reader_side,
    ):
        reader = asyncio.ensure_future(_read(reader_side, session))
        writer = RunStreamWriter(StreamFlusher(writer_side), session, "run-1")
        writer.start()
        for n in range(25):  # 5 s: past two renewals
            writer.append_token(f"{n} ")
            await asyncio.sleep(0.2)
        await writer.finish()
        chunks = await reader
        whoami = await writer_side.redis.acl_whoami()
        renewals = [at for at in fake.issued_at if at - fake.issued_at[0] > 1.0]  # not the first connects'
        # A connection opened now cannot use the first token: it has expired, and Redis no longer accepts it.
        async with RedisStreamResponseHandler.from_url(url) as late:
            assert await late.last_entry_id(session) == chunks[-1].entry_id

    assert [c.sequence for c in chunks if c.kind == TOKEN] == list(range(25)) and chunks[-1].kind == DONE
    assert whoami == OBJECT_ID
    assert len(renewals) >= 2, "the clients must have renewed their tokens while the stream was written"
    assert set(fake.resources) == {"https://redis.azure.com"}
    printed = caplog.text + "".join(capsys.readouterr())
    assert not any(token in printed for token in fake.issued)


async def _read(handler: RedisStreamResponseHandler, session: str) -> list:  # type: ignore[type-arg]
    return [chunk async for chunk in read_run(handler, session, correlation_id="run-1")]


def test_the_sample_runs_end_to_end_with_entra_id(identity: tuple[FakeManagedIdentity, int]) -> None:
    fake, port = identity
    url = f"redis://127.0.0.1:{port}"
    env = cli_environment(REDIS_CONNECTION_STRING=url, REDIS_AUTH="entra-id", **fake.environment)
    result = run_cli("sample.py", "-m", "Plan a 2-day trip to Oslo", env=env)

    assert result.returncode == 0, result.stderr
    assert "Oslo" in result.stdout and "auth=entra-id" in result.stderr
    assert fake.issued and not any(token in result.stdout + result.stderr for token in fake.issued)
