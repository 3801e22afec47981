"""The durable record: the answer the agent entity stored, the source of truth the stream mirrors.

The Redis stream is a fast, disposable copy of the answer: it can expire, a
Redis without persistence can restart empty, a write can be lost. The durable
entity (`dafx-TravelPlanner`, keyed by the session key) keeps the whole
conversation in its state, with each answer under its run's correlation id. The
client reads it through the scheduler to verify a streamed answer (`--verify`)
or to recover one the stream lost.

Try it (with `uv run worker.py` running and a session key from a client run):

    uv run python -m reliability.durable_record <session key>
"""

from __future__ import annotations

import sys
import time

from agent_framework import AgentResponse
from agent_framework_durabletask import AgentSessionId, DurableAgentState, DurableAgentStateResponse
from durabletask.client import TaskHubGrpcClient
from durabletask.entities import EntityInstanceId

from agents import AGENT_NAME


def recorded_state(client: TaskHubGrpcClient, session_key: str) -> DurableAgentState | None:
    """The conversation state the agent entity of `session_key` persisted, if it exists."""
    entity = client.get_entity(EntityInstanceId(AgentSessionId.to_entity_name(AGENT_NAME), session_key))
    state_json = entity.get_state() if entity is not None else None
    return DurableAgentState.from_json(state_json) if state_json else None


def recorded_answer(client: TaskHubGrpcClient, session_key: str, correlation_id: str) -> AgentResponse | None:
    """The answer recorded for one run (one `run(...)` call), if it is there yet."""
    state = recorded_state(client, session_key)
    return state.try_get_agent_response(correlation_id) if state is not None else None


def latest_recorded_answer(client: TaskHubGrpcClient, session_key: str) -> AgentResponse | None:
    """The newest successful answer in the conversation, if any."""
    state = recorded_state(client, session_key)
    history = state.data.conversation_history if state is not None else []
    responses = [entry for entry in history if isinstance(entry, DurableAgentStateResponse) and not entry.is_error]
    return DurableAgentStateResponse.to_run_response(responses[-1]) if responses else None


def wait_for_recorded_answer(
    client: TaskHubGrpcClient, session_key: str, correlation_id: str, timeout: float = 10.0
) -> AgentResponse | None:
    """The recorded answer, waiting for it briefly.

    The done marker is written from `on_agent_response`, a moment BEFORE the
    entity's operation returns and the scheduler commits its state, so a fast
    reader can reach the record before the record exists.
    """
    deadline = time.monotonic() + timeout
    while (answer := recorded_answer(client, session_key, correlation_id)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return answer


if __name__ == "__main__":
    from support.config import load_settings
    from support.scheduler import connect_client

    settings = load_settings()
    client = connect_client(settings.endpoint or f"http://localhost:{settings.local_scheduler_port}", settings.taskhub)
    latest = latest_recorded_answer(client, sys.argv[1])
    print(latest.text if latest is not None else f"no recorded answer for session {sys.argv[1]}")
