"""Telemetry: Agent Framework's own OpenTelemetry, switched on by its own variables; the stream's spans and metrics.

Nothing here does anything unless the environment asks for an exporter (`.env.example`, "Observability"):

    ENABLE_CONSOLE_EXPORTERS=true           spans, metrics and logs printed on stderr (stdout carries the answer)
    OTEL_EXPORTER_OTLP_ENDPOINT=...         OTLP (gRPC by default; OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)
    APPLICATIONINSIGHTS_CONNECTION_STRING   Azure Monitor (optional: `uv sync --extra azure-monitor`)
    ENABLE_INSTRUMENTATION=false            nothing at all, whatever else is set (Agent Framework's default: on)
    ENABLE_SENSITIVE_DATA=true              prompts, answers and tool arguments on Agent Framework's spans (dev only)

With one set, `configure_telemetry(role)` (one line in every entry point) calls Agent Framework's
`configure_otel_providers()`, which reads the OTEL_* variables itself; OTEL_SERVICE_NAME defaults to
`travel-planner-<role>`.

One trace per run, across processes and attempts. The W3C trace context travels WITH the run:

    client  agent_stream.start_run ── traceparent in the run's options (RunRequest.options, durable) ──┐
    worker  agent_stream.write (per attempt) ◀── ReportingAgent takes it out before the model sees it ─┘
              └─ invoke_agent TravelPlanner (Agent Framework) ─ chat ─ execute_tool ...
              │ its traceparent goes on the attempt's start marker ──▶ Redis stream
    reader  agent_stream.read ◀── parented to the start marker's traceparent, in any process

The options are part of the entity operation's input, so a re-delivered run carries the same context;
agent-framework-durabletask 1.0.0b260922 signals the entity without durabletask's own trace context.
Each attempt's first write (reliability/fencing.py) keeps the run's FIRST attempt's traceparent beside
the fence, and a re-delivered attempt's `agent_stream.write` span links to it.

Per-token work stays off the hot path: the callback only queues entries (as before); the flusher
records the per-chunk metrics from each batch's timestamps, and readers reuse one attribute set.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from agent_framework.observability import configure_otel_providers, get_meter, get_tracer
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from support.errors import UsageError

# What switches telemetry on or shapes it (tests pin them all; OTEL_* beyond these are read by OpenTelemetry itself).
TELEMETRY_VARIABLES = (
    "ENABLE_INSTRUMENTATION",
    "ENABLE_CONSOLE_EXPORTERS",
    "ENABLE_SENSITIVE_DATA",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "OTEL_SERVICE_NAME",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
)
TRACE_FIELDS = ("traceparent", "tracestate")  # the W3C trace context, as carried in options and on markers
_TRUE = ("1", "true", "yes", "on")
_OTLP_ENDPOINTS = tuple(f"OTEL_EXPORTER_OTLP_{signal}ENDPOINT" for signal in ("", "TRACES_", "METRICS_", "LOGS_"))
_propagator = TraceContextTextMapPropagator()
_tracer = get_tracer("agent_stream")
_meter, _gen_ai_meter = get_meter("agent_stream"), get_meter()  # the gen_ai.* metrics under Agent Framework's scope
_CONTINUED = "agent_stream.continued"  # context key: the run's trace is continued (value: the host's span context)
_active = False  # set once providers are configured: until then nothing below allocates or records anything

# Semantic conventions: the GenAI client metrics (seconds), with their advisory buckets.
_FIRST_CHUNK_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
_PER_CHUNK_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]
_LAG_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
time_to_first_chunk = _gen_ai_meter.create_histogram(
    "gen_ai.client.operation.time_to_first_chunk",
    unit="s",
    description="Time from the agent's invocation (the run attempt's start) to its first output chunk",
    explicit_bucket_boundaries_advisory=_FIRST_CHUNK_BUCKETS,
)
time_per_output_chunk = _gen_ai_meter.create_histogram(
    "gen_ai.client.operation.time_per_output_chunk",
    unit="s",
    description="Time from the end of the previous output chunk to the end of this one, after the first",
    explicit_bucket_boundaries_advisory=_PER_CHUNK_BUCKETS,
)
delivery_lag = _meter.create_histogram(
    "agent_stream.delivery_lag",
    unit="s",
    description="From an entry's timestamp (written by the worker) to a reader receiving it",
    explicit_bucket_boundaries_advisory=_LAG_BUCKETS,
)
entries_written = _meter.create_counter("agent_stream.entries.written", unit="{entry}", description="Entries XADDed")
write_retries = _meter.create_counter("agent_stream.write.retries", unit="{retry}", description="Writes retried")
entries_lost = _meter.create_counter("agent_stream.entries.lost", unit="{entry}", description="Entries given up on")
runs_queued = _meter.create_up_down_counter(
    "agent_stream.runs.queued", unit="{run}", description="Runs a worker received that wait for a free slot"
)
runs_running = _meter.create_up_down_counter(
    "agent_stream.runs.running", unit="{run}", description="Runs a worker is running"
)
redeliveries = _meter.create_counter(
    "agent_stream.redeliveries", unit="{run}", description="Run attempts that took over a run another attempt began"
)
restarts_seen = _meter.create_counter(
    "agent_stream.restarts_seen", unit="{restart}", description="Readers told an answer starts over"
)
cancels = _meter.create_counter("agent_stream.cancels", unit="{run}", description="Runs ended by a stop request")
readers_connected = _meter.create_up_down_counter(
    "agent_stream.readers.connected", unit="{reader}", description="SSE streams open in the web app"
)
streams_refused = _meter.create_counter(
    "agent_stream.streams.refused", unit="{stream}", description="SSE streams refused (WEB_MAX_STREAMS reached)"
)
_INVOKE_AGENT = {"gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": "microsoft.agent_framework"}


def telemetry_requested(environ: Mapping[str, str]) -> bool:
    """True when an exporter is asked for and Agent Framework's ENABLE_INSTRUMENTATION is not false."""
    if environ.get("ENABLE_INSTRUMENTATION", "").strip().lower() in ("0", "false", "no", "off"):
        return False
    wanted = ("APPLICATIONINSIGHTS_CONNECTION_STRING", "VS_CODE_EXTENSION_PORT", *_OTLP_ENDPOINTS)
    return _flag(environ, "ENABLE_CONSOLE_EXPORTERS") or any(environ.get(name, "").strip() for name in wanted)


def check_telemetry_settings(environ: Mapping[str, str]) -> None:
    """The telemetry variables of `.env.example`, checked with the others (`check_environment`): one line each."""
    for name in ("ENABLE_INSTRUMENTATION", "ENABLE_CONSOLE_EXPORTERS", "ENABLE_SENSITIVE_DATA"):
        value = environ.get(name, "").strip().lower()
        if value and value not in (*_TRUE, "0", "false", "no", "off"):
            raise UsageError(f"{name} must be true or false (got {environ[name]!r})")
    for name in _OTLP_ENDPOINTS:
        value = environ.get(name, "").strip()
        if value and not value.lower().startswith(("http://", "https://")):
            raise UsageError(f"{name} must be a URL such as http://localhost:4317 (got {value!r})")
    if any(ord(character) < 32 for character in environ.get("OTEL_SERVICE_NAME", "")):
        raise UsageError(f"OTEL_SERVICE_NAME must be one line of text (got {environ['OTEL_SERVICE_NAME']!r})")
    connection = environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip()
    if connection and "instrumentationkey=" not in connection.lower():
        raise UsageError(
            "APPLICATIONINSIGHTS_CONNECTION_STRING must be an Application Insights connection string "
            "(InstrumentationKey=...;IngestionEndpoint=...), as the Azure portal shows it"
        )
    if connection and environ.get("ENABLE_INSTRUMENTATION", "").strip().lower() not in ("0", "false", "no", "off"):
        _azure_monitor_exporters(create=False)  # asked for, but not installed: one line, exit 2


def configure_telemetry(role: str, environ: Mapping[str, str] | None = None) -> bool:
    """Switch telemetry on for this process when the environment asks for it (see the module docstring).

    Call it once, after `.env` is loaded (`check_environment`). Returns whether it is on. Raises
    `UsageError` (one line, exit 2) for an exporter that is asked for but not installed.
    """
    environ = os.environ if environ is None else environ
    if not telemetry_requested(environ):
        return False
    exporters: list[Any] = []
    if _flag(environ, "ENABLE_CONSOLE_EXPORTERS"):  # Agent Framework's own would print on stdout, the answer's
        from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporters += [ConsoleSpanExporter(out=sys.stderr), ConsoleMetricExporter(out=sys.stderr)]
        exporters.append(ConsoleLogRecordExporter(out=sys.stderr))
    if environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip():
        exporters += _azure_monitor_exporters()
    try:
        configure_otel_providers(
            service_name=environ.get("OTEL_SERVICE_NAME") or f"travel-planner-{role}",
            enable_console_exporters=False,  # replaced by the stderr ones above
            exporters=exporters,
        )
    except ImportError as error:  # e.g. an OTLP protocol whose exporter package is missing
        raise UsageError(f"telemetry: {str(error).splitlines()[0]}") from error
    return activate()


def activate(on: bool = True) -> bool:
    """Record the stream's spans and metrics from now on (the providers are set; tests set their own)."""
    global _active
    _active = on
    return on


def active() -> bool:
    return _active


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in _TRUE


def _azure_monitor_exporters(*, create: bool = True) -> list[Any]:
    try:
        from azure.monitor.opentelemetry.exporter import (  # pyright: ignore[reportMissingImports]
            AzureMonitorLogExporter,  # pyright: ignore[reportUnknownVariableType]
            AzureMonitorMetricExporter,  # pyright: ignore[reportUnknownVariableType]
            AzureMonitorTraceExporter,  # pyright: ignore[reportUnknownVariableType]
        )
    except ImportError as error:
        raise UsageError(
            "APPLICATIONINSIGHTS_CONNECTION_STRING is set but azure-monitor-opentelemetry-exporter is not "
            "installed: run `uv sync --extra azure-monitor`, or unset the variable"
        ) from error
    if not create:
        return []
    return [AzureMonitorTraceExporter(), AzureMonitorMetricExporter(), AzureMonitorLogExporter()]


# --- Carrying the trace context with the run ---------------------------------------------------------------------


@contextmanager
def run_start_span(options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The client starts a run: an `agent_stream.start_run` span, where the run's trace begins.

    Yields the run's `options` plus the span's trace context (`traceparent`), which the worker continues.
    """
    if not _active:
        yield options
        return
    with _tracer.start_as_current_span("agent_stream.start_run", kind=SpanKind.PRODUCER):
        _propagator.inject(options)
        yield options


def continue_run_trace(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Worker side: take the trace context out of the run's options; the run's spans continue it.

    Always removes it (the model never sees it). The context is attached to the run's task for the rest of
    the run, like its run scope (reliability/run_scope.py); the host's retry of the run in that task keeps it.
    durabletask's own entity span (current here, in a trace of its own: agent-framework-durabletask signals the
    entity without a trace context) is remembered, and the attempt's `agent_stream.write` span links to it.
    """
    options = kwargs.get("options")
    if not isinstance(options, dict) or not any(name in options for name in TRACE_FIELDS):
        return kwargs
    carrier = {name: str(options[name]) for name in TRACE_FIELDS if name in options}
    trimmed = {name: value for name, value in options.items() if name not in TRACE_FIELDS}
    if _active and otel_context.get_value(_CONTINUED) is None:
        host = trace.get_current_span().get_span_context()
        otel_context.attach(otel_context.set_value(_CONTINUED, host, _propagator.extract(carrier)))
    return {**kwargs, "options": trimmed}


def carrier_of(span: Span | None) -> dict[str, str]:
    """`traceparent` (and `tracestate`) of `span`, to write on a stream marker; {} without telemetry."""
    if span is None or not span.get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def span_context_of(traceparent: str | None) -> trace.SpanContext | None:
    if not traceparent:
        return None
    context = trace.get_current_span(_propagator.extract({"traceparent": traceparent})).get_span_context()
    return context if context.is_valid else None


# --- The writer: one span per run attempt, per-chunk metrics from the flusher's batches ---------------------------


def start_stream_write(correlation_id: str, worker: str) -> Span | None:
    """The attempt's `agent_stream.write` span, made current for the rest of the attempt (its `invoke_agent`).

    Called when the attempt's writer starts (its start marker); ended at its final marker (`end_stream_write`).
    """
    if not _active:
        return None
    attributes = {"agent_stream.correlation_id": correlation_id, "agent_stream.worker": worker}
    host = otel_context.get_value(_CONTINUED)  # durabletask's entity span, when the run's trace was continued
    links = [Link(host, {"agent_stream.link": "entity_operation"})] if isinstance(host, trace.SpanContext) else []
    links = [link for link in links if link.context.is_valid]
    span = _tracer.start_span("agent_stream.write", kind=SpanKind.PRODUCER, attributes=attributes, links=links)
    otel_context.attach(trace.set_span_in_context(span))  # the run's task: the agent's spans nest in it
    return span


def link_to_first_attempt(span: Span | None, first_traceparent: str | None) -> None:
    """A re-delivered attempt: link its span to the run's first attempt, and count the re-delivery."""
    first = span_context_of(first_traceparent)
    if span is None or first is None or first.span_id == span.get_span_context().span_id:
        return
    span.add_link(first, {"agent_stream.link": "first_attempt"})
    span.set_attribute("agent_stream.redelivered", True)
    redeliveries.add(1)


def end_stream_write(span: Span | None, final_kind: str, written: int, lost: int, error: str | None = None) -> None:
    if span is None:
        return
    span.set_attributes({"agent_stream.final": final_kind, "agent_stream.entries": written, "agent_stream.lost": lost})
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end()


class ChunkClock:
    """The GenAI chunk metrics of one attempt, taken from its entries' timestamps, a batch at a time (flusher)."""

    def __init__(self, started_at: float) -> None:
        self.previous: float | None = None
        self.started_at = started_at  # the start marker's time: the agent's invocation
        self.streaming = True

    def observe(self, entries: Iterable[tuple[str, float]], token: str, restart: str) -> None:
        """`entries`: each entry's kind and when it was produced (epoch seconds), in stream order."""
        if not self.streaming:
            return
        for kind, at in entries:
            if kind == token:
                if self.previous is None:
                    time_to_first_chunk.record(at - self.started_at, _INVOKE_AGENT)
                else:
                    time_per_output_chunk.record(at - self.previous, _INVOKE_AGENT)
                self.previous = at
            elif kind == restart:  # the host's retry without streaming: not a streamed chunk
                self.streaming = False
                return


def chunk_clock() -> ChunkClock | None:
    return ChunkClock(time.time()) if _active else None


# --- Readers: one `agent_stream.read` span per read, created when the read ends -------------------------------------


class StreamRead:
    """One reader's read of one run: delivery lag per entry, and a span that joins the run's trace.

    The span's parent is the trace context on the run's start marker (written by the worker), so a reader in any
    process joins the run's trace; it is created when the read ends, back-dated to when it began, because the
    parent is known only once the marker arrives. A reader that resumed past the start marker has no marker to
    join: its span continues the reader's own current context instead.
    """

    __slots__ = ("attempts", "entries", "started_ns")

    def __init__(self) -> None:
        self.started_ns = time.time_ns()
        self.attempts: list[str] = []  # traceparents of the start (restart) markers seen, oldest first
        self.entries = 0

    def entry(self, chunk: Any) -> None:
        """One entry the reader passes on (a `StreamChunk`): its delivery lag, and a marker's trace context."""
        self.entries += 1
        if chunk.timestamp:
            delivery_lag.record(time.time() - chunk.timestamp)
        if chunk.traceparent and chunk.traceparent not in self.attempts:
            self.attempts.append(chunk.traceparent)
        if chunk.kind == "restart":
            restarts_seen.add(1)

    def end(self, correlation_id: str, outcome: str, error: str | None = None) -> None:
        parent = span_context_of(self.attempts[-1]) if self.attempts else None
        context = trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent is not None else None
        links = [Link(earlier) for tp in self.attempts[:-1] if (earlier := span_context_of(tp)) is not None]
        attributes = {"agent_stream.correlation_id": correlation_id, "agent_stream.entries": self.entries}
        span = _tracer.start_span(
            "agent_stream.read",
            context=context,
            kind=SpanKind.CONSUMER,
            attributes={**attributes, "agent_stream.outcome": outcome},
            links=links,
            start_time=self.started_ns,
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()


def stream_read() -> StreamRead | None:
    return StreamRead() if _active else None


@contextmanager
def counted(counter: Any, attributes: Mapping[str, str] | None = None, amount: int = 1) -> Iterator[None]:
    """`counter` (an up-down counter) raised by `amount` for the duration of the block."""
    counter.add(amount, attributes)
    try:
        yield
    finally:
        counter.add(-amount, attributes)
