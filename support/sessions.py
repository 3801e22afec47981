"""Naming a conversation: the session key that names both the durable entity and the Redis stream.

On the worker, the callback's `context.session_id` is the ENTITY KEY. On the client that value is
`session.durable_session_id.key`, not `session.session_id` (agent-framework-durabletask
1.0.0b260922). Both sides name the stream `agent-stream:{entity key}`, so a client builds its
session from the key rather than from a random `AgentSession`.
"""

from __future__ import annotations

import re
import uuid

from agent_framework import AgentResponse
from agent_framework_durabletask import AgentSessionId, DurableAgentSession

from support.validation import validate_session_key

# Workaround (agent-framework-durabletask 1.0.0b260922): the fire-and-forget acknowledgement carries
# the run's correlation id only in its text; no structured field holds it.
_CORRELATION_ID_IN_ACK = re.compile(r"correlation_id: ([0-9A-Za-z-]+)")


def new_session_key() -> str:
    """A fresh conversation: the key its durable entity, and its stream, are named by."""
    return uuid.uuid4().hex  # what AgentSessionId.with_random_key uses


def session_for(agent_name: str, session_key: str) -> DurableAgentSession:
    """The session of agent `agent_name` whose durable entity key (and stream name) is `session_key`."""
    entity_id = AgentSessionId(name=agent_name, key=validate_session_key(session_key))
    return DurableAgentSession(durable_session_id=entity_id)


def correlation_id_of(acknowledgement: AgentResponse) -> str | None:
    """The run's correlation id, read from the acknowledgement's text (see the workaround above)."""
    match = _CORRELATION_ID_IN_ACK.search(acknowledgement.text)
    return match.group(1) if match else None
