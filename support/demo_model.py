"""The offline demo model: a real Agent Framework chat client that needs no API key.

`DemoChatClient` plays the part of a language model so the whole sample (durable
agent, Redis stream, resumable client) runs on a laptop with no provider
configured. It is deterministic and behaves like a tool-calling model:

1. Asked to plan a trip, it replies with two function calls, `get_weather_forecast`
   and `get_local_events`, for the destination and length it reads from the
   request ("Plan a 3-day trip to Tokyo" -> Tokyo, 3 days).
2. Agent Framework's function-invocation layer runs those tools and calls the
   model again with their results; the model then streams a markdown itinerary
   built from those results, one word per update, pausing between words so the
   stream looks (and can be interrupted) like a real one.
3. Like a real model it reports usage with each reply: input tokens (the words it
   was sent) and output tokens (the words, or tool calls, it produced).

Two knobs exist for demos and tests; in the sample they come from the
environment through `demo_model_from_env`:

    DEMO_MODEL_TOKEN_DELAY_MS     pause between streamed words    (default: 20)
    DEMO_MODEL_FAIL_AFTER_TOKENS  fail the itinerary after N words (default: never)
    DEMO_MODEL_SIGNATURE          a tag put before every word of the itinerary (default: none):
                                  workers with different tags tell apart which attempt wrote a token

Try it:

    uv run python -c "import asyncio, agents; \\
        print(asyncio.run(agents.create_travel_agent().run('Plan a 2-day trip to Oslo')))"
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from agent_framework import (
    BaseChatClient,
    ChatMiddlewareLayer,
    ChatOptions,
    ChatResponse,
    ChatResponseUpdate,
    Content,
    FunctionInvocationLayer,
    Message,
    ResponseStream,
    UsageDetails,
)
from agent_framework.observability import ChatTelemetryLayer

from support.console import announce_once
from support.errors import UsageError
from support.itinerary_changes import Change, relaxed_day, requested_change
from support.travel_data import MAX_DAYS

MODEL_NAME = "offline-demo"
WEATHER_TOOL_NAME = "get_weather_forecast"
EVENTS_TOOL_NAME = "get_local_events"
DEFAULT_DESTINATION = "Paris"
DEFAULT_DAYS = 3

DEFAULT_TOKEN_DELAY_SECONDS = 0.02

TOKEN_DELAY_ENV = "DEMO_MODEL_TOKEN_DELAY_MS"
FAIL_AFTER_TOKENS_ENV = "DEMO_MODEL_FAIL_AFTER_TOKENS"
FIRST_TOKEN_DELAY_ENV = "DEMO_MODEL_FIRST_TOKEN_DELAY_MS"
THINK_ENV = "DEMO_MODEL_THINK_MS"
STREAM_ONLY_FAILURE_ENV = "DEMO_MODEL_FAIL_STREAM_ONLY"
SIGNATURE_ENV = "DEMO_MODEL_SIGNATURE"

# Words that introduce a destination, strongest first: "trip to Tokyo" beats
# "in May" when a request has both.
_DESTINATION_CUES = (("to", "visit", "visiting", "explore"), ("in", "around"))
_NAME_JOINERS = frozenset({"de", "da", "do", "del", "di", "la", "le", "of", "upon"})
_WORD = re.compile(r"[^\W_][\w'’-]*")
_TRIP_LENGTH = re.compile(r"\b(\d{1,3})\s*-?\s*days?\b", re.IGNORECASE)
_WEEK = re.compile(r"\bweeks?\b", re.IGNORECASE)
# A token is one word plus the whitespace after it, so the tokens join back into
# exactly the original text (leading whitespace, if any, is a token of its own).
_TOKEN = re.compile(r"\S+\s*|\s+")


@dataclass(frozen=True)
class TripRequest:
    """What the demo model understood from the user's message."""

    destination: str
    days: int


def parse_trip_request(text: str) -> TripRequest:
    """Read the destination and trip length from a request, with safe defaults.

    "Plan a 3-day trip to Tokyo with emphasis on culture" -> Tokyo, 3 days. The
    destination is the capitalised name after "to", "visit" or (weaker) "in"; the
    length is "N days"/"N-day" or "a week". Anything not found falls back to Paris
    and 3 days; lengths are capped at 7.
    """
    return trip_from_conversation([text])


def trip_from_conversation(requests: Sequence[str]) -> TripRequest:
    """The trip a conversation is about: each detail from the latest request that states it.

    "Plan a 2-day trip to Oslo", then "Make day 2 more relaxed" -> still Oslo, 2 days.
    """
    destinations = [place for text in reversed(requests) if (place := _find_destination(text))]
    lengths = [days for text in reversed(requests) if (days := _find_days(text))]
    return TripRequest(
        destination=destinations[0] if destinations else DEFAULT_DESTINATION,
        days=lengths[0] if lengths else DEFAULT_DAYS,
    )


def _find_destination(text: str) -> str | None:
    words = _WORD.findall(text)
    for cues in _DESTINATION_CUES:
        for position, word in enumerate(words[:-1]):
            if word.lower() in cues and words[position + 1][0].isupper():
                return _place_name(words[position + 1 :])
    return None


def _place_name(words: Sequence[str]) -> str:
    # A name is a run of capitalised words, allowing "de"/"of"-style joiners inside
    # it: "New York City in May" -> "New York City", "Rio de Janeiro" stays whole.
    name = [words[0]]
    for word, following in itertools.pairwise([*words[1:], ""]):
        joiner = word in _NAME_JOINERS and following[:1].isupper()
        if not (word[0].isupper() or joiner):
            break
        name.append(word)
    return " ".join(name)


def _find_days(text: str) -> int | None:
    if match := _TRIP_LENGTH.search(text):
        return max(1, min(int(match.group(1)), MAX_DAYS))
    return MAX_DAYS if _WEEK.search(text) else None


_EVENINGS = (
    "dinner at a local favourite near your hotel",
    "a sunset viewpoint, then street food",
    "a relaxed evening in a neighbourhood bar",
)


def write_itinerary(trip: TripRequest, weather_report: str, events_report: str, change: Change | None = None) -> str:
    """Turn the two tool results into a markdown day-by-day plan, with a follow-up's `change` applied.

    Every forecast line ("Day 1: Sunny, 22°C") becomes a day heading and every
    event line ("- Tokyo Night Market (food)") is placed on a day, so the answer
    visibly rests on what the tools returned.
    """
    forecasts = [line for line in _lines(weather_report) if line.startswith("Day ")]
    forecasts = forecasts or [f"Day {day}" for day in range(1, trip.days + 1)]
    events = [line[2:] for line in _lines(events_report) if line.startswith("- ")]
    place = trip.destination
    intro = f"A day-by-day plan for {place}, built around the forecast and what's on."
    intro += f" {change.summary()}" if change else ""
    parts = [f"# Your {len(forecasts)}-day trip to {place}\n\n{intro}\n"]
    extra_events = events[len(forecasts) :]
    for index, forecast in enumerate(forecasts):
        wet = any(word in forecast.lower() for word in ("rain", "shower", "storm"))
        morning = f"a museum or covered market in {place}" if wet else f"a walk through {place}'s old town"
        highlight = events[index] if index < len(events) else f"free time to explore {place}"
        evening = _EVENINGS[index % len(_EVENINGS)]
        if change and change.applies_to(index + 1):
            extra_events += events[index : index + 1]  # the day's event moves to "If you have time"
            forecast, (morning, highlight, evening) = f"{forecast} (an easy day)", relaxed_day(place)
        parts.append(
            f"\n## {forecast}\n\n- **Morning:** {morning}\n- **Highlight:** {highlight}\n- **Evening:** {evening}\n"
        )
    if extra_events:
        parts.append("\n## If you have time\n\n" + "".join(f"- {event}\n" for event in extra_events))
    parts.append("\nEnjoy your trip!")
    return "".join(parts)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


@dataclass(frozen=True)
class _Reply:
    """What the model says next: either tool calls or the itinerary text."""

    function_calls: list[Content]
    text: str = ""
    input_tokens: int = 0  # the words of the conversation it was sent: a stand-in for a tokenizer

    def usage(self, output_tokens: int) -> Content:
        return Content.from_usage(
            UsageDetails(
                input_token_count=self.input_tokens,
                output_token_count=output_tokens,
                total_token_count=self.input_tokens + output_tokens,
            )
        )


def _plan_reply(messages: Sequence[Message]) -> _Reply:
    request, since_request = _latest_request(messages)
    # The durable host replays the whole conversation: a follow-up ("Make day 2 more relaxed")
    # is about the trip an earlier turn asked for.
    requests = [message.text for message in messages if message.role == "user"]
    trip = trip_from_conversation(requests)
    results = _tool_results_by_name(since_request)
    words = sum(len(_TOKEN.findall(message.text)) for message in messages)
    if not results:
        # First call of a turn: ask the framework to run both tools for us.
        return _Reply(function_calls=_tool_calls_for(trip), input_tokens=words)
    weather = results.get(WEATHER_TOOL_NAME, "")
    events = results.get(EVENTS_TOOL_NAME, "")
    follow_up = len(requests) > 1 and _find_destination(request) is None
    change = requested_change(request) if follow_up else None
    return _Reply(function_calls=[], text=write_itinerary(trip, weather, events, change), input_tokens=words)


def _latest_request(messages: Sequence[Message]) -> tuple[str, Sequence[Message]]:
    """Return the last user message's text and the messages that follow it.

    Only what follows the latest request counts: a replayed history (the durable
    host sends the whole conversation) holds tool results from earlier turns.
    """
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            return messages[index].text, messages[index + 1 :]
    return "", messages


def _tool_results_by_name(messages: Sequence[Message]) -> dict[str, str]:
    contents = [content for message in messages for content in message.contents]
    tool_names = {c.call_id: c.name for c in contents if c.type == "function_call"}
    return {tool_names.get(c.call_id) or "": str(c.result or "") for c in contents if c.type == "function_result"}


def _tool_calls_for(trip: TripRequest) -> list[Content]:
    return [
        Content.from_function_call(
            call_id=_new_id("call"),
            name=WEATHER_TOOL_NAME,
            arguments={"destination": trip.destination, "days": trip.days},
        ),
        Content.from_function_call(
            call_id=_new_id("call"),
            name=EVENTS_TOOL_NAME,
            arguments={"destination": trip.destination},
        ),
    ]


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


class DemoChatClient(
    # The same layer stack the built-in clients use: function invocation runs the
    # tools this model asks for, chat middleware and telemetry work as usual.
    FunctionInvocationLayer[ChatOptions[None]],
    ChatMiddlewareLayer[ChatOptions[None]],
    ChatTelemetryLayer[ChatOptions[None]],
    BaseChatClient[ChatOptions[None]],
):
    """A scripted, offline chat model for the TravelPlanner agent (see module docstring).

    Args:
        token_delay_seconds: pause between streamed words; 0 streams without sleeping.
        fail_after_tokens: when set, the itinerary fails with `RuntimeError` after this
            many streamed words (0 = before the first), or at its end if it is shorter;
            the non-streaming itinerary then fails too. Tool calls are never failed.
        fail_stream_only: with `fail_after_tokens`, only the streamed itinerary fails and the
            non-streaming retry succeeds (the durable host's fallback then records an answer
            that was never streamed).
        first_token_delay_seconds: silence before the itinerary's first word, like a slow
            tool call or a slow model: the worker's heartbeats must keep readers waiting.
        think_seconds: silence before a turn's first reply (its tool calls), while nothing of the
            run exists on its stream yet: a worker frozen then has not written anything.
        signature: put before every word of the itinerary, streamed or not, so that two
            attempts at one answer (two workers) say different words and a splice shows.
    """

    OTEL_PROVIDER_NAME = MODEL_NAME

    def __init__(
        self,
        *,
        token_delay_seconds: float = DEFAULT_TOKEN_DELAY_SECONDS,
        fail_after_tokens: int | None = None,
        fail_stream_only: bool = False,
        first_token_delay_seconds: float = 0.0,
        think_seconds: float = 0.0,
        signature: str = "",
    ) -> None:
        if token_delay_seconds < 0:
            raise ValueError(f"token_delay_seconds must be >= 0 (got {token_delay_seconds!r})")
        if fail_after_tokens is not None and fail_after_tokens < 0:
            raise ValueError(f"fail_after_tokens must be >= 0 or None (got {fail_after_tokens!r})")
        super().__init__()
        self.token_delay_seconds = token_delay_seconds
        self.fail_after_tokens = fail_after_tokens
        self.fail_stream_only = fail_stream_only
        self.first_token_delay_seconds = first_token_delay_seconds
        self.think_seconds = think_seconds
        self.signature = signature
        announce_once(
            "model", "using the offline demo model (no model provider configured; see .env.example to use a real one)"
        )

    def _inner_get_response(
        self,
        *,
        messages: Sequence[Message],
        stream: bool,
        options: Mapping[str, Any],
        **kwargs: Any,
    ) -> Awaitable[ChatResponse] | ResponseStream[ChatResponseUpdate, ChatResponse]:
        # Options (temperature, tool_choice, ...) are ignored: the replies are scripted.
        reply = _plan_reply(messages)
        if self.signature and reply.text:
            reply = replace(reply, text="".join(self.signature + token for token in _TOKEN.findall(reply.text)))
        if stream:
            return self._build_response_stream(self._stream_reply(reply))
        return self._complete_reply(reply)

    async def _complete_reply(self, reply: _Reply) -> ChatResponse:
        if reply.function_calls:
            message = Message("assistant", reply.function_calls)
            usage = reply.usage(len(reply.function_calls)).usage_details
            return ChatResponse(
                messages=[message], finish_reason="tool_calls", model=MODEL_NAME, created_at=_now(), usage_details=usage
            )
        if self.fail_after_tokens is not None and not self.fail_stream_only:
            # The durable host retries a failed stream once without streaming;
            # failing here too lets tests see the run fail for real.
            raise self._injected_failure()
        message = Message("assistant", [reply.text])
        usage = reply.usage(len(_TOKEN.findall(reply.text))).usage_details
        return ChatResponse(
            messages=[message], finish_reason="stop", model=MODEL_NAME, created_at=_now(), usage_details=usage
        )

    async def _stream_reply(self, reply: _Reply) -> AsyncIterator[ChatResponseUpdate]:
        # One reply is one assistant message: every update carries the same ids.
        update = functools.partial(
            ChatResponseUpdate,
            role="assistant",
            response_id=_new_id("resp"),
            message_id=_new_id("msg"),
            model=MODEL_NAME,
            created_at=_now(),  # the durable host records it with the answer
        )
        if reply.function_calls:
            usage = reply.usage(len(reply.function_calls))
            if self.think_seconds:
                await asyncio.sleep(self.think_seconds)
            yield update(contents=[*reply.function_calls, usage], finish_reason="tool_calls")
            return
        tokens: list[str] = _TOKEN.findall(reply.text)
        if self.fail_after_tokens is not None:
            tokens = tokens[: self.fail_after_tokens]
        if self.first_token_delay_seconds:
            await asyncio.sleep(self.first_token_delay_seconds)
        for index, token in enumerate(tokens):
            if index and self.token_delay_seconds:
                await asyncio.sleep(self.token_delay_seconds)
            yield update(contents=[Content.from_text(token)])
        if self.fail_after_tokens is not None:
            raise self._injected_failure()
        yield update(contents=[reply.usage(len(tokens))], finish_reason="stop")

    def _injected_failure(self) -> RuntimeError:
        return RuntimeError(f"Demo model failure after {self.fail_after_tokens} tokens (injected)")


def demo_model_from_env(environ: Mapping[str, str]) -> DemoChatClient:
    """Build the demo model from the DEMO_MODEL_* variables (see `demo_model_options`)."""
    return DemoChatClient(**demo_model_options(environ))


def demo_model_options(environ: Mapping[str, str]) -> dict[str, Any]:
    """The demo model's settings from DEMO_MODEL_*, checked without building (or announcing) the model.

    Unset or empty variables keep the defaults (20 ms, never fail); a bad value
    raises `UsageError` with one line naming the variable and what it accepts.
    """
    delay_ms = _whole_number(environ, TOKEN_DELAY_ENV, "a whole number of milliseconds", 60_000)
    fail_after = _whole_number(environ, FAIL_AFTER_TOKENS_ENV, "a whole number of tokens", 1_000_000)
    first_token_ms = _whole_number(environ, FIRST_TOKEN_DELAY_ENV, "a whole number of milliseconds", 600_000) or 0
    think_ms = _whole_number(environ, THINK_ENV, "a whole number of milliseconds", 600_000) or 0
    return {
        "token_delay_seconds": DEFAULT_TOKEN_DELAY_SECONDS if delay_ms is None else delay_ms / 1000,
        "fail_after_tokens": fail_after,
        "fail_stream_only": _on_or_off(environ, STREAM_ONLY_FAILURE_ENV),
        "first_token_delay_seconds": first_token_ms / 1000,
        "think_seconds": think_ms / 1000,
        "signature": _signature(environ),
    }


def _whole_number(environ: Mapping[str, str], name: str, accepted: str, maximum: int) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    # ASCII only: '²' passes isdigit() yet int() rejects it.
    if not (raw.isascii() and raw.isdigit() and int(raw) <= maximum):
        raise UsageError(f"{name} must be {accepted} >= 0 and at most {maximum} (got {raw!r}); fix it or unset it")
    return int(raw)


def _signature(environ: Mapping[str, str]) -> str:
    raw = environ.get(SIGNATURE_ENV, "").strip()
    # No whitespace: the demo model splits its text into words, and a tag must stay part of its word.
    if len(raw) > 16 or any(char.isspace() for char in raw):
        raise UsageError(
            f"{SIGNATURE_ENV} must be at most 16 characters with no spaces (got {raw!r}); fix it or unset it"
        )
    return raw


def _on_or_off(environ: Mapping[str, str], name: str) -> bool:
    raw = environ.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise UsageError(f"{name} must be 1 (on) or 0 (off) (got {environ[name]!r}); fix it or unset it")
