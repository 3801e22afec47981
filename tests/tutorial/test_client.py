"""client.py's reading side at unit level: the cursor it keeps is the last entry it printed.

A real Redis holds a written stream; `reattach` picks it up as `--cursor` does, so no
worker is needed. tests/tutorial/test_cli.py runs the same through a real Ctrl+C, end to end.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from agent_framework_durabletask import DurableAIAgentClient

from agents import AGENT_NAME
from cli.arguments import resume_hint
from cli.printer import ChunkPrinter
from client import Connections, Conversation, reattach
from redis_stream_response_handler import DONE, START, TOKEN, RedisStreamResponseHandler, entry_fields
from support.console import EXIT_OK
from support.scheduler import connect_client
from support.sessions import new_session_key
from tests.streams import write_entries

WORDS = [f"word{n} " for n in range(8)]


@pytest.fixture
async def handler(redis_url: str) -> AsyncIterator[RedisStreamResponseHandler]:
    async with RedisStreamResponseHandler.from_url(redis_url, idle_timeout_seconds=10) as connected:
        yield connected


def connected(handler: RedisStreamResponseHandler, endpoint: str) -> Connections:
    """What `client.py --session S --cursor C` connects to (the agent is there, but a reattach starts no run)."""
    scheduler = connect_client(endpoint, "default")
    return Connections(scheduler, DurableAIAgentClient(scheduler).get_agent(AGENT_NAME), handler)


async def printed_lines(capsys: pytest.CaptureFixture[str], count: int) -> list[dict[str, object]]:
    """The first `count` JSON lines the printer writes to stdout (waits for them, up to 10 s)."""
    out = ""
    async with asyncio.timeout(10):
        while out.count("\n") < count:
            await asyncio.sleep(0.01)
            out += capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines()]


async def test_ctrl_c_between_tokens_resumes_after_the_last_entry_printed(
    handler: RedisStreamResponseHandler, scheduler_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    session = new_session_key()
    head = [entry_fields(START, "run-1", 0), *[entry_fields(TOKEN, "run-1", n, WORDS[n]) for n in range(5)]]
    await write_entries(handler, session, head)
    connections, conversation = connected(handler, scheduler_endpoint), Conversation(session, "0-0")
    reading = asyncio.create_task(reattach(connections, conversation, ChunkPrinter(session, as_json=True)))
    printed = await printed_lines(capsys, len(head))  # every entry so far printed; the reader waits in XREAD BLOCK
    reading.cancel()  # Ctrl+C: asyncio.run cancels the task, then the entry point prints the hint
    await asyncio.gather(reading, return_exceptions=True)
    hint = resume_hint(conversation)

    assert hint.endswith(f"--session {session} --cursor {printed[-1]['entry_id']}"), hint

    tail = [entry_fields(TOKEN, "run-1", n, WORDS[n]) for n in range(5, 8)]
    await write_entries(handler, session, [*tail, entry_fields(DONE, "run-1", 8, chunks=8)])
    resumed = Conversation(session, hint.rsplit("--cursor ", 1)[1])
    exit_code = await reattach(connections, resumed, ChunkPrinter(session, as_json=True))
    rest = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    assert exit_code == EXIT_OK and rest[-1].get("done")
    assert "".join(str(r["text"]) for r in printed + rest) == "".join(WORDS)  # no word lost, none twice


def test_a_hint_before_the_run_started_never_asks_again() -> None:
    # Without a cursor the run may not exist: `--session K` alone would start a new turn, so the hint shows the record.
    hint = resume_hint(Conversation("k1"))
    assert hint.endswith("uv run client.py --session k1 --history"), hint
