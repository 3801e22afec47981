"""The worker: hosts the TravelPlanner as a durable entity and streams its answers to Redis.

Run it in one terminal, then `uv run client.py` in another:

    uv run worker.py

With nothing configured it hosts the embedded scheduler on localhost:8080 and
a private Redis on localhost:6379, so the client finds both. It runs until
Ctrl+C or SIGTERM and then shuts down cleanly (exit 0).

How a token travels:

    Durable Task entity `dafx-TravelPlanner` (key = the conversation's session key)
      └─ runs the agent with stream=True and awaits, per update,
         RedisStreamCallback.on_streaming_response_update(update, context)
           └─ RunStreamWriter.append_token(...)   returns at once (write-behind)
                └─ flusher: XADD agent-stream:{context.session_id} ...

`context.session_id` is the entity key. On the client that is
`session.durable_session_id.key` (not `session.session_id`): both sides must
use the same value or the client tails an empty stream.

Ending every stream: `on_agent_response` writes the done marker. A failing run
never reaches it (the entity catches the exception and stores an error
response instead), so `ReportingAgent` wraps the agent to see the failure where
it happens and ends the stream with an error marker.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Literal, overload

from agent_framework import AgentResponse, AgentResponseUpdate, AgentSession, ResponseStream, SupportsAgentRun
from agent_framework_durabletask import AgentCallbackContext, DurableAIAgentWorker, run_agent_coroutine
from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker
from durabletask.worker import ConcurrencyOptions

from agents import create_chat_client, create_travel_agent
from config import EXIT_OK, EXIT_USAGE, ConfigError, Settings, fail, load_settings, setup_logging
from local_services import Services, announce, provide_services, wait_for_shutdown_signal
from redis_stream_response_handler import RedisStreamResponseHandler
from run_stream_writer import RunStreamWriter
from scheduler import scheduler_connection

logger = logging.getLogger("worker")

# The first update of every streamed run: it carries no text, only the news
# that a run started, so the callback learns the run's identity (its context)
# before the model says anything, even if the model fails before its first token.
RUN_STARTED = "run_started"


@dataclass
class RunScope:
    """Per-run state shared by ReportingAgent and the callback.

    The entity runs the agent's stream, the callback and any retry in ONE
    asyncio task, so a context variable set when the run starts is visible to
    all of them, and to no other run.
    """

    context: AgentCallbackContext | None = None


_current_run: contextvars.ContextVar[RunScope | None] = contextvars.ContextVar("current_run", default=None)


class RedisStreamCallback:
    """Agent response callback that streams each run's answer to Redis.

    Implements `AgentResponseCallbackProtocol`, plus `on_run_failed`, which
    `ReportingAgent` calls when a run fails for good.
    """

    def __init__(self, settings: Settings, redis_url: str) -> None:
        self._settings = settings
        self._redis_url = redis_url
        self._handler: RedisStreamResponseHandler | None = None
        self._writers: dict[str, RunStreamWriter] = {}  # correlation id -> the run's writer

    @property
    def handler(self) -> RedisStreamResponseHandler:
        # Created lazily, on the agent's event loop: a redis.asyncio client is
        # bound to the loop it first runs on, and this one is reused for every run.
        if self._handler is None:
            self._handler = RedisStreamResponseHandler.from_url(
                self._redis_url,
                ttl_seconds=self._settings.stream_ttl_seconds,
                max_length=self._settings.stream_max_length,
            )
        return self._handler

    async def on_streaming_response_update(self, update: AgentResponseUpdate, context: AgentCallbackContext) -> None:
        if (update.additional_properties or {}).get(RUN_STARTED):
            self._begin_run(context)
            return
        self._writer_for(context).append_token(update.text)

    async def on_agent_response(self, response: AgentResponse, context: AgentCallbackContext) -> None:
        writer = self._writers.pop(context.correlation_id, None) or self._new_writer(context)
        if writer.streamed != response.text:
            if writer.streamed:
                # The streamed attempt failed part way and the host re-ran the agent
                # without streaming: the answer it recorded was never streamed.
                writer.restart_with(response.text, reason="the streamed attempt failed; this is the recorded answer")
            else:
                writer.append_token(response.text)
        await writer.finish()

    async def on_run_failed(self, context: AgentCallbackContext, error: BaseException) -> None:
        writer = self._writers.pop(context.correlation_id, None) or self._new_writer(context)
        await writer.finish(error=f"{type(error).__name__}: {error}")

    async def aclose(self) -> None:
        if self._handler is not None:
            await self._handler.aclose()

    def _begin_run(self, context: AgentCallbackContext) -> None:
        scope = _current_run.get()
        if scope is not None:
            scope.context = context
        self._writers[context.correlation_id] = self._new_writer(context)

    def _writer_for(self, context: AgentCallbackContext) -> RunStreamWriter:
        writer = self._writers.get(context.correlation_id)
        if writer is None:  # an agent not wrapped in ReportingAgent: no start signal
            writer = self._writers[context.correlation_id] = self._new_writer(context)
        return writer

    def _new_writer(self, context: AgentCallbackContext) -> RunStreamWriter:
        if not context.session_id:
            raise ValueError("the callback context has no session_id: cannot name the stream")
        writer = RunStreamWriter(
            self.handler, context.session_id, context.correlation_id, heartbeat_seconds=self._settings.heartbeat_seconds
        )
        writer.start()
        return writer


class ReportingAgent:
    """Wraps an agent so that every run's stream ends, even when the run fails.

    Streaming: yields one `RUN_STARTED` update first (see above), then the
    agent's updates. If the stream fails, the entity retries once without
    streaming; if that fails too, the error goes to the stream as an error
    marker. Everything else is delegated to the wrapped agent unchanged.
    """

    def __init__(self, agent: SupportsAgentRun, callback: RedisStreamCallback) -> None:
        self._agent = agent
        self._callback = callback
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
            _current_run.set(RunScope())
            inner = self._agent.run(messages, stream=True, session=session, **kwargs)
            return ResponseStream(self._stream(inner), finalizer=lambda _updates: inner.get_final_response())
        return self._run_to_completion(messages, session=session, **kwargs)

    async def _stream(
        self, inner: ResponseStream[AgentResponseUpdate, AgentResponse]
    ) -> AsyncIterator[AgentResponseUpdate]:
        yield AgentResponseUpdate(role="assistant", additional_properties={RUN_STARTED: True})
        async for update in inner:
            yield update

    async def _run_to_completion(self, messages: Any, **kwargs: Any) -> AgentResponse:
        try:
            return await self._agent.run(messages, **kwargs)
        except Exception as error:
            scope = _current_run.get()
            if scope is not None and scope.context is not None:
                await self._callback.on_run_failed(scope.context, error)
            raise

    def create_session(self, **kwargs: Any) -> AgentSession:
        return self._agent.create_session(**kwargs)

    def get_session(self, service_session_id: Any, **kwargs: Any) -> AgentSession:
        return self._agent.get_session(service_session_id, **kwargs)


def get_worker(settings: Settings, services: Services, *, max_concurrent_runs: int = 32) -> DurableTaskSchedulerWorker:
    """A Durable Task worker connected to the resolved scheduler."""
    connection = scheduler_connection(services.scheduler_endpoint, settings.taskhub)
    # Each agent run holds a worker thread until it ends (the entity blocks on
    # the agent's event loop), so the thread pool bounds concurrent runs.
    concurrency = ConcurrencyOptions(maximum_thread_pool_workers=max_concurrent_runs)
    return DurableTaskSchedulerWorker(
        host_address=connection.host_address,
        secure_channel=connection.secure_channel,
        taskhub=connection.taskhub,
        token_credential=connection.credential(),
        concurrency_options=concurrency,
        logger=logging.getLogger("durabletask.worker"),
    )


def setup_worker(
    worker: DurableTaskSchedulerWorker,
    settings: Settings,
    services: Services,
    environ: Mapping[str, str] | None = None,
) -> RedisStreamCallback:
    """Register the TravelPlanner, wrapped for reporting, with the Redis streaming callback."""
    callback = RedisStreamCallback(settings, services.redis_url)
    agent_worker = DurableAIAgentWorker(worker, callback=callback)
    chat_client = create_chat_client(environ if environ is not None else os.environ)
    agent_worker.add_agent(ReportingAgent(create_travel_agent(chat_client), callback))
    return callback


def main() -> int:
    setup_logging()
    with ExitStack() as stack:
        try:
            settings = load_settings()
            services = provide_services(settings, stack, role="worker")
            worker = get_worker(settings, services)
            callback = setup_worker(worker, settings, services)
        except (ConfigError, ValueError) as error:
            return fail(str(error), EXIT_USAGE)
        worker.start()
        announce("worker", "TravelPlanner is ready; press Ctrl+C to stop")
        wait_for_shutdown_signal()
        announce("worker", "stopping")
        worker.stop()
        run_agent_coroutine(callback.aclose())
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
