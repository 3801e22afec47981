"""The worker: hosts the TravelPlanner as a durable entity and streams its answers to Redis.

    uv run worker.py            # then, in another terminal: uv run client.py

With nothing configured it hosts the embedded scheduler on localhost:8080 and a private Redis on
localhost:6379, so the client finds both. It runs until Ctrl+C or SIGTERM.

How a token travels:

    Durable Task entity `dafx-TravelPlanner` (key = the conversation's session key)
      └─ runs the agent with stream=True and awaits, per update,
         RedisStreamCallback.on_streaming_response_update(update, context)
           └─ RunStreamWriter.append_update(...)      tokens + tool calls/results; returns at once (write-behind)
                └─ StreamFlusher, on its own thread: XADD agent-stream:{context.session_id} ...

`context.session_id` is the entity key: on the client, `session.durable_session_id.key` (support/sessions.py).

Read next: client.py, the reading side.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from contextlib import ExitStack

from agent_framework import AgentResponse, AgentResponseUpdate
from agent_framework_durabletask import AgentCallbackContext, DurableAIAgentWorker
from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker

from agents import create_chat_client, create_travel_agent
from reliability.flusher_thread import start_flusher_thread
from reliability.hardening import harden_worker
from reliability.reporting_agent import ReportingAgent
from reliability.run_scope import remember_run
from reliability.shutdown import quiet_worker_logger, stop_worker
from reliability.stop_watch import CancelWatcher, cancel_reason
from reliability.worker_capacity import run_slots
from reliability.write_behind import ABANDONED, RunKey, RunStreamWriter, StreamFlusher, run_key
from support.config import Settings, check_environment
from support.console import EXIT_OK, announce, configure_telemetry, run_entry_point, setup_logging
from support.scheduler import scheduler_connection
from support.services import Services, listen_for_shutdown_signals, provide_services, wait_for_shutdown_signal

Environ = Mapping[str, str] | None  # the model's variables: os.environ when None


class RedisStreamCallback:
    """Streams each run's answer to Redis: its tokens as they come, then a done (or error) marker.

    Implements Agent Framework's `AgentResponseCallbackProtocol`; a run's first update, whatever it
    holds, opens the run's writer. `on_run_failed` is for `ReportingAgent` (an add-on, see
    `setup_worker`): the framework itself never reports a failed run.
    """

    def __init__(self, settings: Settings, redis_url: str) -> None:
        self._settings, self._redis_url = settings, redis_url
        self._flusher: StreamFlusher | None = None
        self._writers: dict[RunKey, RunStreamWriter] = {}  # (correlation id, attempt's task) -> its writer
        self._stops = CancelWatcher()  # polls Redis for stop requests while runs stream

    async def on_streaming_response_update(self, update: AgentResponseUpdate, context: AgentCallbackContext) -> None:
        writer = self._writers.get(run_key(context))
        if writer is None:  # the run's first update, whatever it holds
            writer = self._writers[run_key(context)] = self._new_writer(context)
            remember_run(context, self._stops.watch(writer))  # with ReportingAgent, a stop request ends the run
        writer.append_update(update)  # text and tool activity, queued: never waits

    async def on_agent_response(self, response: AgentResponse, context: AgentCallbackContext) -> None:
        writer = self._writers.pop(run_key(context), None) or self._new_writer(context)
        if writer.streamed and writer.streamed != response.text:
            # Workaround (agent-framework-durabletask 1.0.0b260922): a stream that fails part way is
            # re-run WITHOUT streaming, so the recorded answer was never streamed: readers start over.
            writer.restart_with(response.text, reason="the streamed attempt failed; this is the recorded answer")
        elif not writer.streamed:
            writer.append_token(response.text)
        await writer.finish(usage=response.usage_details, cancelled=cancel_reason(response))  # done or cancelled

    async def on_run_failed(self, context: AgentCallbackContext, error: BaseException) -> None:
        writer = self._writers.pop(run_key(context), None) or self._new_writer(context)
        await writer.finish(error=f"{type(error).__name__}: {error}")

    async def aclose(self, abandon_reason: str | None = ABANDONED) -> None:
        self._stops.close()  # its polls read through the flusher's Redis client
        if self._flusher is not None:
            await self._flusher.aclose(abandon_reason)  # a stopping worker's unfinished runs stop too

    def _new_writer(self, context: AgentCallbackContext) -> RunStreamWriter:
        if not context.session_id:
            raise RuntimeError("the callback context has no session_id: cannot name the stream")
        if self._flusher is None:  # one for every run, on a thread of its own: reliability/flusher_thread.py
            self._flusher = start_flusher_thread(self._redis_url, self._settings)
        heartbeat = self._settings.heartbeat_seconds
        writer = RunStreamWriter(self._flusher, context.session_id, context.correlation_id, heartbeat)
        return writer.start()  # the run's start marker, naming this worker (with telemetry: its trace context)


def get_worker(settings: Settings, services: Services) -> DurableTaskSchedulerWorker:
    """A Durable Task worker connected to the scheduler: embedded, the emulator, or Azure."""
    connection = scheduler_connection(services.scheduler_endpoint, settings.taskhub)
    slots, logger = run_slots(settings), quiet_worker_logger()  # a thread per run: reliability/worker_capacity.py
    return DurableTaskSchedulerWorker(**connection.arguments(), concurrency_options=slots, logger=logger)


def setup_worker(
    worker: DurableTaskSchedulerWorker, settings: Settings, services: Services, environ: Environ = None
) -> RedisStreamCallback:
    """Register the TravelPlanner as a durable entity whose streamed answers go to Redis."""
    callback = RedisStreamCallback(settings, services.redis_url)
    agent_worker = DurableAIAgentWorker(worker, callback=callback)
    agent = create_travel_agent(create_chat_client(environ if environ is not None else os.environ))
    agent_worker.add_agent(ReportingAgent(agent, callback))  # add-on: a failed run's stream ends too; Stop works
    return callback


def start_worker(
    settings: Settings, services: Services, stack: ExitStack, environ: Environ = None, *, long_lived: bool = False
) -> DurableTaskSchedulerWorker:
    """Start a worker in this process (worker.py, sample.py, web.py); `stack` stops it, before the services."""
    worker = get_worker(settings, services)
    callback = setup_worker(worker, settings, services, environ)
    harden_worker(worker, settings, services, long_lived=long_lived)  # queued notices...: reliability/hardening.py
    worker.start()
    stack.callback(stop_worker, worker, callback, services)  # drains running answers: reliability/shutdown.py
    return worker


def main() -> int:
    argparse.ArgumentParser(prog="worker.py", description="Host the TravelPlanner; stream to Redis.").parse_args()
    setup_logging()
    with ExitStack() as stack:
        settings = check_environment()
        configure_telemetry("worker")  # when the environment asks for it: support/telemetry.py
        services = provide_services(settings, stack, role="worker")  # found, or started and announced
        start_worker(settings, services, stack, long_lived=True)
        listen_for_shutdown_signals()  # from now on a signal is counted, not raised: one that follows "ready" too
        announce("worker", "TravelPlanner is ready; press Ctrl+C to stop")
        wait_for_shutdown_signal()
        announce("worker", "stopping")  # the stack stops the worker, then the services it started
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(run_entry_point(main))
