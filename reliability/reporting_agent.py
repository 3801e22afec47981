"""Workaround (agent-framework-durabletask 1.0.0b260922): a failed run never reaches the response callback.

When the agent raises, the durable entity catches the exception and stores an error response;
`on_agent_response` is not called, and when the model fails before its first token no callback
is called at all. A reader would wait for a done marker that never comes. `ReportingAgent`
wraps the agent so that every run's stream ends:

- streaming, it yields one empty `RUN_STARTED` update first, so the callback learns the run's
  identity (its `AgentCallbackContext`) before the model says anything;
- when the run fails for good (the entity retries a failed stream once WITHOUT streaming, and
  that fails too), it calls the callback's `on_run_failed`, which writes the error marker.

Each streamed run gets a run scope (reliability/run_scope.py), which the callback fills in with the
run's context, and through which a stop request ends the run. The request is read once before the
wrapped agent's stream is even created: a run stopped while it waited for a run slot ends there,
having asked no model and run no tool. (Creating the stream and not reading it would not do: Agent
Framework 1.23.0's telemetry finalizes a closed, unread stream by reading it to the end, which runs
the model and the tools.) Everything else is delegated to the wrapped agent unchanged, except the
run's trace context (`traceparent` in its options, put there by the client with telemetry on): it is
taken out of the options before the agent sees them, and the run's spans continue it (support/telemetry.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, Protocol, overload

from agent_framework import AgentResponse, AgentResponseUpdate, AgentSession, ResponseStream, SupportsAgentRun
from agent_framework_durabletask import AgentCallbackContext

from reliability.run_scope import RunScope, current_run, open_run_scope
from support.telemetry import continue_run_trace

RUN_STARTED = "run_started"  # marks the first, empty update of every streamed run


class RunFailureListener(Protocol):
    async def on_run_failed(self, context: AgentCallbackContext, error: BaseException) -> None: ...


class ReportingAgent:
    """Wraps an agent so that every run's stream ends, even when the run fails (see the module docstring)."""

    def __init__(self, agent: SupportsAgentRun, listener: RunFailureListener) -> None:
        self._agent = agent
        self._listener = listener
        self.id = agent.id
        self.name = agent.name
        self.description = agent.description

    @overload
    def run(
        self,
        messages: Any = None,
        *,
        stream: Literal[False] = False,
        session: AgentSession | None = None,
        **kwargs: Any,
    ) -> Awaitable[AgentResponse]: ...

    @overload
    def run(
        self, messages: Any = None, *, stream: Literal[True], session: AgentSession | None = None, **kwargs: Any
    ) -> ResponseStream[AgentResponseUpdate, AgentResponse]: ...

    def run(
        self, messages: Any = None, *, stream: bool = False, session: AgentSession | None = None, **kwargs: Any
    ) -> Awaitable[AgentResponse] | ResponseStream[AgentResponseUpdate, AgentResponse]:
        kwargs = continue_run_trace(kwargs)  # the model never sees the trace context; the run's spans continue it
        if stream:
            scope = open_run_scope()

            def start() -> ResponseStream[AgentResponseUpdate, AgentResponse]:
                return self._agent.run(messages, stream=True, session=session, **kwargs)

            return ResponseStream(self._stream(start, scope), finalizer=scope.final_response)
        return self._run_to_completion(messages, session=session, **kwargs)

    async def _stream(
        self, start: Callable[[], ResponseStream[AgentResponseUpdate, AgentResponse]], scope: RunScope
    ) -> AsyncIterator[AgentResponseUpdate]:
        yield AgentResponseUpdate(role="assistant", additional_properties={RUN_STARTED: True})
        # The callback has now seen RUN_STARTED, so the scope holds the run's stop signal (if the worker watches).
        try:
            if await scope.stopped_before_start():
                return  # stopped while it waited for a run slot: the agent never starts (no model call, no tool)
            scope.inner = start()  # only now: an unread stream would still run (see the module docstring)
            async for update in scope.stoppable(scope.inner):
                yield update
        finally:
            scope.close()

    async def _run_to_completion(self, messages: Any, **kwargs: Any) -> AgentResponse:
        try:
            return await self._agent.run(messages, **kwargs)
        except Exception as error:
            scope = current_run()
            if scope is not None and scope.context is not None:
                await self._listener.on_run_failed(scope.context, error)
            raise

    def create_session(self, **kwargs: Any) -> AgentSession:
        return self._agent.create_session(**kwargs)

    def get_session(self, service_session_id: Any, **kwargs: Any) -> AgentSession:
        return self._agent.get_session(service_session_id, **kwargs)
