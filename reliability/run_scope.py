"""A run's scope: how the callback and the agent wrapper share one run, and how a stop request ends it.

The durable entity runs the agent's stream, the response callback and any retry of one run in ONE
asyncio task, so a context variable set when the run starts is visible to all of them, and to no
other run. `ReportingAgent` (reliability/reporting_agent.py) opens the scope when a streamed run
starts; the callback (worker.py) fills it in with `remember_run` when the run's first update opens
its writer: the run's `AgentCallbackContext`, to report a failure with, and its `CancelSignal`
(reliability/stop_watch.py), through which a stop request arrives. The run's updates then end at a
stop request (`RunScope.stoppable`), and a stopped run's final response is what it said before the stop.

Read next: reliability/stop_watch.py, how the worker notices a stop request.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass

from agent_framework import AgentResponse, AgentResponseUpdate, ResponseStream
from agent_framework_durabletask import AgentCallbackContext

from reliability.stop_watch import CancelSignal, cancelled_response, until_cancelled


@dataclass
class RunScope:
    """One streamed run, as the callback knows it once the run's first update arrived."""

    context: AgentCallbackContext | None = None
    cancel: CancelSignal | None = None  # how a stop request reaches this run, once it is watched
    inner: ResponseStream[AgentResponseUpdate, AgentResponse] | None = None  # the agent's stream, once started

    async def stopped_before_start(self) -> bool:
        """Before the agent starts: True for a run stopped while it waited, or refused by its stream's fence."""
        if self.cancel is None:
            return False
        await self.cancel.check_now()
        return self.cancel.requested or self.cancel.superseded

    def stoppable(self, updates: AsyncIterator[AgentResponseUpdate]) -> AsyncIterator[AgentResponseUpdate]:
        """The run's updates, ending at a stop request. Call it once the callback has seen the first update."""
        return until_cancelled(updates, self.cancel) if self.cancel is not None else updates

    def close(self) -> None:
        """The run's stream ended, however: the worker stops watching for its stop."""
        if self.cancel is not None:
            self.cancel.close()

    def final_response(self, updates: Sequence[AgentResponseUpdate]) -> Awaitable[AgentResponse] | AgentResponse:
        """The run's final response: the agent's own, or, for a stopped run, what it streamed before the stop."""
        if self.cancel is not None and self.cancel.reason is not None:
            return cancelled_response(updates, self.cancel.reason)
        if self.inner is None:
            raise RuntimeError("the run's stream was never read, so it has no final response")
        return self.inner.get_final_response()


_current_run: contextvars.ContextVar[RunScope | None] = contextvars.ContextVar("current_run", default=None)


def open_run_scope() -> RunScope:
    """A new, empty scope for the streamed run starting in this task (and its retry)."""
    scope = RunScope()
    _current_run.set(scope)
    return scope


def current_run() -> RunScope | None:
    """The scope of the run this task serves; None outside a run opened with `open_run_scope`."""
    return _current_run.get()


def remember_run(context: AgentCallbackContext, cancel: CancelSignal | None = None) -> None:
    """Called by the callback when a run's first update opens its writer.

    A later failure of this run is reported with `context`, and a stop requested through `cancel`
    ends its stream. Without a scope (no ReportingAgent around the agent), nothing could stop the run.
    """
    scope = _current_run.get()
    if scope is not None:
        scope.context, scope.cancel = context, cancel
    elif cancel is not None:
        cancel.close()  # not a run of a ReportingAgent: nothing could stop it
