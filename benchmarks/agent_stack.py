"""An embedded scheduler plus one in-process worker hosting the TravelPlanner (offline demo model).

Not a measurement by itself: `time_to_first_token` and `scaling` run agent turns through it,
the way tests/test_end_to_end.py does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace

from agent_framework import AgentResponse
from agent_framework_durabletask import DurableAIAgent, run_agent_coroutine

from client import get_client, get_travel_planner, session_for, start_run
from config import load_settings
from local_services import Services, embedded_scheduler, free_port
from worker import get_worker, setup_worker


@dataclass(frozen=True)
class AgentStack:
    agent: DurableAIAgent[AgentResponse]
    services: Services
    max_concurrent_runs: int

    async def start_run(self, session_key: str, message: str) -> str | None:
        """Fire-and-forget run (the client's `start_run`), off the event loop like client.py does."""
        return await asyncio.to_thread(start_run, self.agent, message, session_for(session_key))


@contextmanager
def agent_stack(redis_url: str, *, token_delay_ms: int, max_concurrent_runs: int = 32) -> Iterator[AgentStack]:
    """A fresh embedded scheduler and a started worker whose demo model waits `token_delay_ms` between words."""
    for name in ("durabletask", "durabletask.worker", "durabletask.client", "agent_framework"):
        logging.getLogger(name).setLevel(logging.WARNING)
    port = free_port()
    settings = load_settings({})
    services = Services(scheduler_endpoint=f"http://localhost:{port}", redis_url=redis_url)
    with ExitStack() as stack:
        stack.enter_context(embedded_scheduler(port))
        worker = get_worker(settings, services, max_concurrent_runs=max_concurrent_runs)
        callback = setup_worker(
            worker, replace(settings), services, environ={"DEMO_MODEL_TOKEN_DELAY_MS": str(token_delay_ms)}
        )
        worker.start()
        stack.callback(lambda: run_agent_coroutine(callback.aclose()))
        stack.callback(worker.stop)
        agent = get_travel_planner(get_client(settings, services))
        yield AgentStack(agent, services, max_concurrent_runs)
