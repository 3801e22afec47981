"""Telemetry: one run is one trace, from the client's start to every reader's last token; real SDK, real services.

The in-process tests install OpenTelemetry SDK providers with in-memory exporters (once per process, as
OpenTelemetry allows) and switch the stream's telemetry on; the cross-process test runs worker.py and
client.py with ENABLE_CONSOLE_EXPORTERS=true and matches the trace ids they print.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from redis_stream_response_handler import RedisStreamResponseHandler
from reliability.run_tracker import read_run
from reliability.write_behind import RunStreamWriter, StreamFlusher
from support import telemetry
from support.errors import UsageError
from support.sessions import new_session_key
from tests.conftest import cli_environment, run_cli
from tests.tutorial.test_cli import start_worker as start_worker_process
from tests.tutorial.test_end_to_end import ask, connect, worker_stack


@dataclass
class Capture:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def finished(self, name: str, count: int = 1, timeout: float = 5) -> list[ReadableSpan]:
        """The finished spans called `name`, waiting until there are `count` (some end on another thread)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [span for span in self.spans.get_finished_spans() if span.name == name]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def points(self, name: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def total(self, name: str) -> float:
        return sum(point.value for point in self.points(name) if isinstance(point, NumberDataPoint))

    def histogram(self, name: str) -> HistogramDataPoint:
        (point,) = [point for point in self.points(name) if isinstance(point, HistogramDataPoint)]
        return point


def _ctx(span: ReadableSpan) -> trace.SpanContext:
    assert span.context is not None
    return span.context


@functools.cache
def _providers() -> tuple[TracerProvider, InMemoryMetricReader]:
    """The SDK providers of this test process: set once (OpenTelemetry refuses to replace them)."""
    tracer_provider, reader = TracerProvider(), InMemoryMetricReader()
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return tracer_provider, reader


@pytest.fixture
def capture() -> Iterator[Capture]:
    tracer_provider, reader = _providers()
    exporter = InMemorySpanExporter()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.activate()
    try:
        yield Capture(exporter, reader)
    finally:
        telemetry.activate(False)
        exporter.shutdown()  # stops recording: later tests in this process do not fill it


@pytest.fixture
async def handler(redis_url: str) -> AsyncIterator[RedisStreamResponseHandler]:
    async with RedisStreamResponseHandler.from_url(redis_url, idle_timeout_seconds=5) as connected:
        yield connected


def test_nothing_is_switched_on_unless_an_exporter_is_asked_for() -> None:
    assert not telemetry.telemetry_requested({})
    assert not telemetry.telemetry_requested({"ENABLE_INSTRUMENTATION": "true"})  # on, but nowhere to send it
    assert not telemetry.telemetry_requested({"ENABLE_CONSOLE_EXPORTERS": "true", "ENABLE_INSTRUMENTATION": "false"})
    assert telemetry.telemetry_requested({"ENABLE_CONSOLE_EXPORTERS": "true"})
    assert telemetry.telemetry_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4317"})
    assert telemetry.configure_telemetry("test", {}) is False
    assert not telemetry.active()


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


@pytest.mark.skipif(
    _installed("azure.monitor.opentelemetry.exporter"),
    reason="azure-monitor-opentelemetry-exporter is installed (uv sync --extra azure-monitor)",
)
def test_application_insights_without_its_package_is_one_line_and_exit_2() -> None:
    with pytest.raises(UsageError, match="uv sync --extra azure-monitor"):
        telemetry.configure_telemetry("test", {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"})
    env = cli_environment(APPLICATIONINSIGHTS_CONNECTION_STRING="InstrumentationKey=00000000-0000-0000-0000-0")
    result = run_cli("client.py", "-m", "hi", env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: APPLICATIONINSIGHTS_CONNECTION_STRING is set but azure-monitor-opentelemetry-exporter is not "
        "installed: run `uv sync --extra azure-monitor`, or unset the variable"
    ]


async def test_one_run_is_one_trace_across_client_worker_and_readers(redis_url: str, capture: Capture) -> None:
    with worker_stack(redis_url) as services:
        stack = await connect(services)
        try:
            session_key = new_session_key()
            correlation_id, chunks = await ask(stack, session_key, "Plan a 1-day trip to Rome")
            # A second reader, later, from the start of the stream (another process, in production).
            again = [chunk async for chunk in read_run(stack.handler, session_key, correlation_id=correlation_id)]
        finally:
            await stack.handler.aclose()
    assert chunks[-1].kind == "done" and again[-1].kind == "done"
    (start,) = capture.finished("agent_stream.start_run")
    (write,) = capture.finished("agent_stream.write")
    (invoke,) = [span for span in capture.finished("invoke_agent TravelPlanner")]
    reads = capture.finished("agent_stream.read", 2)
    assert len(reads) == 2
    trace_id = _ctx(start).trace_id
    assert {_ctx(span).trace_id for span in (write, invoke, *reads)} == {trace_id}
    assert write.parent is not None and write.parent.span_id == _ctx(start).span_id  # across the durable hop
    assert invoke.parent is not None and invoke.parent.span_id == _ctx(write).span_id
    assert all(read.parent is not None and read.parent.span_id == _ctx(write).span_id for read in reads)
    assert write.attributes is not None and write.attributes["agent_stream.correlation_id"] == correlation_id
    assert write.attributes["agent_stream.entries"] == len(chunks)  # start, tools, tokens, done: every entry
    assert all(read.attributes is not None and read.attributes["agent_stream.outcome"] == "done" for read in reads)
    assert start.end_time is not None and write.start_time is not None and start.end_time <= write.end_time  # type: ignore[operator]

    # The metrics, with sane values: seconds, a chunk at a time, every run back out of the worker's counts.
    tokens = sum(1 for chunk in chunks if chunk.kind == "token")
    first = capture.histogram("gen_ai.client.operation.time_to_first_chunk")
    per_chunk = capture.histogram("gen_ai.client.operation.time_per_output_chunk")
    lag = capture.histogram("agent_stream.delivery_lag")
    assert first.count == 1 and 0 < first.sum < 10
    assert per_chunk.count == tokens - 1 and per_chunk.min >= 0 and per_chunk.max < 5
    assert lag.count >= 2 * len(chunks) - 2 and lag.min > -0.05 and lag.max < 5  # both readers, one clock here
    assert capture.total("agent_stream.entries.written") >= len(chunks)
    assert capture.total("agent_stream.runs.running") == 0 and capture.total("agent_stream.runs.queued") == 0
    assert capture.total("agent_stream.write.retries") == 0


async def test_a_redelivered_attempt_is_linked_to_the_first(
    handler: RedisStreamResponseHandler, capture: Capture
) -> None:
    session_key, run = new_session_key(), f"run-{uuid.uuid4().hex[:8]}"
    carrier: dict[str, str] = {}
    with trace.get_tracer("test").start_as_current_span("client start") as client_span:
        TraceContextTextMapPropagator().inject(carrier)
    flusher = StreamFlusher(handler)
    redeliveries = capture.total("agent_stream.redeliveries")

    answered = asyncio.Event()

    async def attempt(tokens: list[str], started: asyncio.Future[RunStreamWriter]) -> None:
        # One attempt, in a task of its own, continuing the run's trace as the worker does (from the run's options).
        otel_context.attach(TraceContextTextMapPropagator().extract(carrier))
        writer = RunStreamWriter(flusher, session_key, run).start()
        for text in tokens:
            writer.append_token(text)
        started.set_result(writer)
        await answered.wait()  # the model is still answering
        await writer.finish()

    async def start(tokens: list[str]) -> tuple[RunStreamWriter, asyncio.Task[None]]:
        started: asyncio.Future[RunStreamWriter] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(attempt(tokens, started))
        writer = await started
        await asyncio.sleep(0.2)  # the flusher writes (and claims the run)
        return writer, task

    first, first_task = await start(["Day ", "1"])
    _, second_task = await start(["Day ", "1: ", "museums."])  # the scheduler delivered the run again
    first.append_token(" late")  # the first attempt wakes up: refused, superseded, its task cancelled
    with contextlib.suppress(asyncio.CancelledError):
        await first_task
    answered.set()
    await second_task
    chunks = [chunk async for chunk in read_run(handler, session_key, correlation_id=run)]
    await flusher.aclose(None)

    assert [chunk.kind for chunk in chunks][-1] == "done" and first.superseded
    writes = capture.finished("agent_stream.write", 2)
    (one,) = [span for span in writes if span.attributes and span.attributes["agent_stream.final"] == "superseded"]
    (two,) = [span for span in writes if span.attributes and span.attributes["agent_stream.final"] == "final"]
    assert {_ctx(one).trace_id, _ctx(two).trace_id} == {client_span.get_span_context().trace_id}
    assert [link.context.span_id for link in two.links] == [_ctx(one).span_id]
    assert two.attributes is not None and two.attributes["agent_stream.redelivered"] is True
    assert not one.links
    (read,) = capture.finished("agent_stream.read")
    assert read.parent is not None and read.parent.span_id == _ctx(two).span_id  # the attempt it followed
    assert [link.context.span_id for link in read.links] == [_ctx(one).span_id]  # and the one it gave up
    assert capture.total("agent_stream.redeliveries") == redeliveries + 1
    assert capture.total("agent_stream.restarts_seen") >= 1


async def test_without_telemetry_no_marker_carries_a_trace_context(handler: RedisStreamResponseHandler) -> None:
    session_key = new_session_key()
    flusher = StreamFlusher(handler)
    writer = RunStreamWriter(flusher, session_key, "run-1").start()
    writer.append_token("hello")
    await writer.finish()
    await flusher.aclose(None)
    entries = await handler.redis.xrange(f"agent-stream:{{{session_key}}}")
    assert entries and all("traceparent" not in (fields or {}) for _, fields in entries)
    assert writer.span is None and writer.chunks is None


def _console_spans(text: str) -> list[dict[str, Any]]:
    """The spans ConsoleSpanExporter printed (indented JSON objects) among the other stderr lines."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := text.find("{\n", at)) >= 0:
        try:
            value, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            at += 1
            continue
        if isinstance(value, dict) and "context" in value and "name" in value:
            found.append(value)
    return found


def test_worker_and_client_processes_print_one_trace_with_console_exporters(tmp_path: Path) -> None:
    worker = start_worker_process(tmp_path, ENABLE_INSTRUMENTATION="true", ENABLE_CONSOLE_EXPORTERS="true")
    try:
        env = {**worker.env, "OTEL_SERVICE_NAME": "client-under-test"}
        client = run_cli("client.py", "-m", "Plan a 1-day trip to Oslo", env=env)
    finally:
        assert worker.stop() == 0  # exporting what is left on the way out
    assert client.returncode == 0, client.stderr
    assert "agent_stream" not in client.stdout  # stdout carries the answer only
    client_spans, worker_spans = _console_spans(client.stderr), _console_spans(worker.log.read_text())
    (start,) = [span for span in client_spans if span["name"] == "agent_stream.start_run"]
    (read,) = [span for span in client_spans if span["name"] == "agent_stream.read"]
    (write,) = [span for span in worker_spans if span["name"] == "agent_stream.write"]
    (invoke,) = [span for span in worker_spans if span["name"] == "invoke_agent TravelPlanner"]
    trace_id = start["context"]["trace_id"]
    assert {write["context"]["trace_id"], invoke["context"]["trace_id"], read["context"]["trace_id"]} == {trace_id}
    assert write["parent_id"] == start["context"]["span_id"] and read["parent_id"] == write["context"]["span_id"]
    assert start["resource"]["attributes"]["service.name"] == "client-under-test"
    assert write["resource"]["attributes"]["service.name"] == "travel-planner-worker"
    assert "gen_ai.client.operation.time_to_first_chunk" in worker.log.read_text()
