"""Workaround (agent-framework-durabletask 1.0.0b260922): a failed run never reaches the response callback.

When the agent raises, the durable entity catches the exception and stores an error response;
`on_agent_response` is not called, and when the model fails before its first token no callback
is called at all. A reader would wait for a done marker that never comes. `ReportingAgent`
wraps the agent so that every run's stream ends:

- streaming, it yields one empty `RUN_STARTED` update first, so the callback learns the run's
  identity (its `AgentCallbackContext`) before the model says anything;
- when the run fails for good (the entity retries a failed stream once WITHOUT streaming, and
  that fails too), it calls the callback's `on_run_failed`, which writes the error marker.

It is also where a stop request ends a run (reliability/stop_watch.py): the streamed updates go
through `until_cancelled`, and a stopped run's final response is what it said before the stop.
The request is read once before the wrapped agent's stream is even created: a run stopped while
it waited for a run slot ends there, having asked no model and run no tool. (Creating the stream
and not reading it would not do: Agent Framework 1.23.0's telemetry finalizes a closed, unread
stream by reading it to the end, which runs the model and the tools.)

Everything else is delegated to the wrapped agent unchanged.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, overload

from agent_framework import AgentResponse, AgentResponseUpdate, AgentSession, ResponseStream, SupportsAgentRun
from agent_framework_durabletask import AgentCallbackContext

from reliability.stop_watch import CancelSignal, cancelled_response, until_cancelled

RUN_STARTED = "run_started"  # marks the first, empty update of every streamed run


class RunFailureListener(Protocol):
    async def on_run_failed(self, context: AgentCallbackContext, error: BaseException) -> None: ...


@dataclass
class _RunScope:
    """The run's callback context, once known. The entity runs the agent's stream, the callback
    and any retry in ONE asyncio task, so a context variable set when the run starts is visible
    to all of them, and to no other run."""

    context: AgentCallbackContext | None = None
    cancel: CancelSignal | None = None  # how a stop request reaches this run, once it is watched
    inner: ResponseStream[AgentResponseUpdate, AgentResponse] | None = None  # the agent's stream, once started


_current_run: contextvars.ContextVar[_RunScope | None] = contextvars.ContextVar("current_run", default=None)


def remember_run(context: AgentCallbackContext, cancel: CancelSignal | None = None) -> None:
    """Called by the callback when a run's first update (`RUN_STARTED`) opens its writer.

    A later failure of this run is reported with `context`, and a stop requested through `cancel`
    ends its stream. Without a ReportingAgent around the agent, nothing could stop the run.
    """
    scope = _current_run.get()
    if scope is not None:
        scope.context, scope.cancel = context, cancel
    elif cancel is not None:
        cancel.close()  # not a run of a ReportingAgent: nothing could stop it


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
        if stream:
            scope = _RunScope()
            _current_run.set(scope)

            def start() -> ResponseStream[AgentResponseUpdate, AgentResponse]:
                return self._agent.run(messages, stream=True, session=session, **kwargs)

            return ResponseStream(self._stream(start, scope), finalizer=lambda updates: _final(updates, scope))
        return self._run_to_completion(messages, session=session, **kwargs)

    async def _stream(
        self, start: Callable[[], ResponseStream[AgentResponseUpdate, AgentResponse]], scope: _RunScope
    ) -> AsyncIterator[AgentResponseUpdate]:
        yield AgentResponseUpdate(role="assistant", additional_properties={RUN_STARTED: True})
        # The callback has now seen RUN_STARTED, so `scope.cancel` is set (when the worker watches for stops).
        try:
            if scope.cancel is not None:
                await scope.cancel.check_now()  # stopped while it waited for a run slot?
                if scope.cancel.requested:
                    return  # then the agent never starts: no model call, no tool
            scope.inner = inner = start()
            updates = until_cancelled(inner, scope.cancel) if scope.cancel is not None else inner
            async for update in updates:
                yield update
        finally:
            if scope.cancel is not None:
                scope.cancel.close()  # however the stream ends, the worker stops watching for its stop

    async def _run_to_completion(self, messages: Any, **kwargs: Any) -> AgentResponse:
        try:
            return await self._agent.run(messages, **kwargs)
        except Exception as error:
            scope = _current_run.get()
            if scope is not None and scope.context is not None:
                await self._listener.on_run_failed(scope.context, error)
            raise

    def create_session(self, **kwargs: Any) -> AgentSession:
        return self._agent.create_session(**kwargs)

    def get_session(self, service_session_id: Any, **kwargs: Any) -> AgentSession:
        return self._agent.get_session(service_session_id, **kwargs)


def _final(updates: Sequence[AgentResponseUpdate], scope: _RunScope) -> Awaitable[AgentResponse] | AgentResponse:
    """The run's final response: the agent's own, or, for a stopped run, what it streamed before the stop."""
    if scope.cancel is not None and scope.cancel.reason is not None:
        return cancelled_response(updates, scope.cancel.reason)
    if scope.inner is None:
        raise RuntimeError("the run's stream was never read, so it has no final response")
    return scope.inner.get_final_response()
