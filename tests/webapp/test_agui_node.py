"""The official AG-UI client (`@ag-ui/client` 1.0.0, Node) against web.py: a run, a Stop, a join mid-answer,
a join after the run ended, and a restarted run (tests/webapp/agui_node/agui.test.mjs, run with `node --test`).

The web app runs as in test_web.py (a real uvicorn server on a free port, default settings) with the demo model
slowed to 20 ms a token, so a Stop and a join land mid-answer. `.ci/run` installs the client (`npm ci` in
tests/webapp/agui_node); without node_modules this test runs `npm ci` itself, once.

    uv run pytest tests/webapp/test_agui_node.py -n 0
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from redis_stream_response_handler import DONE, START, TOOL_CALL, TOOL_RESULT, RedisStreamResponseHandler, entry_fields
from tests.conftest import ROOT
from tests.streams import write_entries
from tests.webapp.test_web import Server, demo_worker, serve
from webapp.ag_ui import record_key

NODE_TEST = ROOT / "tests" / "webapp" / "agui_node"


@pytest.fixture(scope="module")
def node_client() -> str:
    """`node`, with the pinned client installed (package-lock.json) in tests/webapp/agui_node."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node is not None and npm is not None, "Node 20+ and npm run the official AG-UI client's test"
    if not (NODE_TEST / "node_modules" / "@ag-ui" / "client").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_TEST, check=True, timeout=300)
    return node


@pytest.fixture(scope="module")
def slow_web(redis_url: str) -> Iterator[Server]:
    with serve(redis_url, demo_worker(DEMO_MODEL_TOKEN_DELAY_MS="20")) as server:
        yield server


async def restarted_run(redis_url: str) -> str:
    """A run whose worker died mid-answer and whose second attempt finished (written by hand): its resume path."""
    thread_id, run_id, call = f"thread-{uuid.uuid4().hex}", "run-restarted", {"name": "get_weather_forecast"}
    entries = []
    for attempt, text in (("a1", "Day 1: rain"), ("a2", "Day 1: sun")):
        entries += [entry_fields(START, "run-1", 0, attempt=attempt)]
        entries += [entry_fields(TOOL_CALL, "run-1", 0, arguments='{"destination": "Oslo"}', call_id="c1", **call)]
        entries += [entry_fields(TOOL_RESULT, "run-1", 1, result="Day 1: Sunny", call_id="c1", **call)]
        entries += [entry_fields("token", "run-1", 2, text)]
    async with RedisStreamResponseHandler.from_url(redis_url) as redis:
        await write_entries(redis, thread_id, [*entries, entry_fields(DONE, "run-1", 3, chunks=3)])
        record = {"cursor": "0-0", "correlation_id": "run-1", "message": "Plan a day in Oslo"}
        await redis.redis.set(record_key(thread_id, run_id), json.dumps(record))
    return f"/ag-ui/TravelPlanner/{thread_id}/runs/{run_id}"


@pytest.mark.timeout(300)
async def test_the_official_client_runs_stops_and_joins(node_client: str, slow_web: Server, redis_url: str) -> None:
    restarted = await restarted_run(redis_url)
    done = subprocess.run(  # noqa: ASYNC221 (the server runs on a thread of its own; nothing else awaits here)
        [node_client, "--test", "--test-reporter=spec"],
        cwd=NODE_TEST,
        env={**os.environ, "AGUI_BASE_URL": slow_web.url, "AGUI_RESTARTED_RUN": restarted},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    assert "ℹ tests 5" in done.stdout and "ℹ pass 5" in done.stdout, done.stdout
