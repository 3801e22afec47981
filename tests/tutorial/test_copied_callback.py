"""worker.py's callback works when copied on its own, as the published sample invites.

The scratch module holds agents.py as it is, worker.py's imports and its `RedisStreamCallback`
class, and nothing else: no `ReportingAgent`, no hardening, no `start_worker`. A bare
`DurableAIAgentWorker` hosts the agent with it, and a client reads the answer from Redis.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

from agent_framework_durabletask import DurableAIAgentClient, DurableAIAgentWorker, run_agent_coroutine
from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker

import worker
from client import start_run
from redis_stream_response_handler import DONE, TOKEN, RedisStreamResponseHandler
from reliability.durable_record import wait_for_recorded_answer
from reliability.run_tracker import read_run
from support.config import load_settings
from support.ports import free_port
from support.scheduler import connect_client, scheduler_connection
from support.services import embedded_scheduler
from support.sessions import new_session_key

ROOT = Path(__file__).resolve().parents[2]


def scratch_module(tmp_path: Path) -> ModuleType:
    """agents.py + worker.py's imports + RedisStreamCallback, pasted into one new file and imported."""
    tree = ast.parse((ROOT / "worker.py").read_text())
    imports = [
        ast.unparse(node)
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        and getattr(node, "module", None) not in ("agents", "__future__")
    ]
    source = "\n".join([(ROOT / "agents.py").read_text(), *imports, inspect.getsource(worker.RedisStreamCallback)])
    path = tmp_path / "copied_worker.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("copied_worker", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["copied_worker"] = module  # pydantic resolves the tools' annotations through it
    spec.loader.exec_module(module)
    return module


async def test_the_copied_callback_streams_an_answer_on_a_bare_agent_worker(redis_url: str, tmp_path: Path) -> None:
    copied, settings, port = scratch_module(tmp_path), load_settings({}), free_port()
    callback = copied.RedisStreamCallback(settings, redis_url)
    with embedded_scheduler(port):
        endpoint = f"http://localhost:{port}"
        bare = DurableTaskSchedulerWorker(**scheduler_connection(endpoint, settings.taskhub).arguments())
        agent = copied.create_travel_agent(copied.create_chat_client({"DEMO_MODEL_TOKEN_DELAY_MS": "1"}))
        DurableAIAgentWorker(bare, callback=callback).add_agent(agent)  # the published sample's two lines
        bare.start()
        try:
            scheduler = connect_client(endpoint, settings.taskhub)
            agent_client = DurableAIAgentClient(scheduler).get_agent(copied.AGENT_NAME)
            async with RedisStreamResponseHandler.from_url(redis_url) as handler:
                key = new_session_key()
                run = await start_run(agent_client, handler, key, "Plan a 2-day trip to Lisbon")
                chunks = [chunk async for chunk in read_run(handler, key, run.cursor, run.correlation_id)]
            assert run.correlation_id is not None
            recorded = await asyncio.to_thread(wait_for_recorded_answer, scheduler, key, run.correlation_id)
        finally:
            run_agent_coroutine(callback.aclose())
            bare.stop()
    streamed = "".join(chunk.text for chunk in chunks if chunk.kind == TOKEN)
    assert chunks[-1].kind == DONE and chunks[-1].missing == 0
    assert recorded is not None and streamed == recorded.text and "Lisbon" in streamed
