"""An embedded scheduler plus one in-process worker hosting the TravelPlanner (offline demo model).

Not a measurement by itself: `time_to_first_token` and `scaling` run agent turns through it,
the way tests/tutorial/test_end_to_end.py does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace

from agent_framework import AgentResponse
from agent_framework_durabletask import DurableAIAgent, DurableAIAgentClient

from agents import AGENT_NAME
from support.config import DEFAULT_WORKER_MAX_CONCURRENT_RUNS, load_settings
from support.ports import free_port
from support.scheduler import connect_client
from support.services import Services, embedded_scheduler
from worker import start_worker


@dataclass(frozen=True)
class AgentStack:
    agent: DurableAIAgent[AgentResponse]
    services: Services
    max_concurrent_runs: int


@contextmanager
def agent_stack(
    redis_url: str, *, token_delay_ms: int, max_concurrent_runs: int = DEFAULT_WORKER_MAX_CONCURRENT_RUNS
) -> Iterator[AgentStack]:
    """A fresh embedded scheduler and a started worker whose demo model waits `token_delay_ms` between words."""
    for name in ("durabletask", "durabletask.worker", "durabletask.client", "agent_framework"):
        logging.getLogger(name).setLevel(logging.WARNING)
    port = free_port()
    settings = load_settings({})
    services = Services(scheduler_endpoint=f"http://localhost:{port}", redis_url=redis_url)
    with ExitStack() as stack:
        scheduler = stack.enter_context(embedded_scheduler(port))
        slots = replace(settings, worker_max_concurrent_runs=max_concurrent_runs)
        start_worker(slots, services, stack, environ={"DEMO_MODEL_TOKEN_DELAY_MS": str(token_delay_ms)})
        stack.callback(scheduler.wait_until_idle, 5.0)  # first: the last runs report complete before the stop
        agent = DurableAIAgentClient(connect_client(services.scheduler_endpoint, settings.taskhub)).get_agent(
            AGENT_NAME
        )
        yield AgentStack(agent, services, max_concurrent_runs)
