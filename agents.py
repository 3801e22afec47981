"""The TravelPlanner agent: its instructions, its two tools and its chat client.

`create_travel_agent()` builds an Agent Framework `Agent` named "TravelPlanner"
that plans trips with two tools, `get_weather_forecast` and `get_local_events`.
Both tools return deterministic demo data, so runs are repeatable. The chat
client comes from `create_chat_client()`: the model provider configured in the
environment (Microsoft Foundry, Azure OpenAI, OpenAI or any OpenAI-compatible
server; see `providers.py` for the order), else the offline demo model in
`demo_model.py`, which calls both tools and then streams a markdown itinerary
built from their results.

Try it (no services needed, the agent runs in-process):

    uv run python -c "import asyncio, agents; \\
        print(asyncio.run(agents.create_travel_agent().run('Plan a 3-day trip to Tokyo')))"
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from typing import Annotated

from agent_framework import Agent, SupportsChatGetResponse
from pydantic import Field

import providers
from demo_model import MAX_DAYS

AGENT_NAME = "TravelPlanner"

TRAVEL_PLANNER_INSTRUCTIONS = """\
You are an expert travel planner who creates detailed, personalized travel itineraries.
When asked to plan a trip:
- Call get_weather_forecast for the destination and the number of days of the trip.
- Call get_local_events for the destination, with a category if the traveller has one.
- Plan around the weather (indoor activities on wet days) and fit the events in.
- Answer in markdown: a short introduction, then a day-by-day plan with a heading
  per day listing the forecast and morning, afternoon and evening activities.
Keep it practical and concise."""

_CONDITIONS = ("Sunny", "Partly cloudy", "Overcast", "Light rain", "Showers", "Clear")
_EVENT_IDEAS = {
    "culture": ("Lantern Festival", "Museum Late Night", "Old Town Walking Tour"),
    "food": ("Night Market", "Street Food Festival", "Farmers' Market"),
    "music": ("Jazz Night", "Open-Air Concert"),
    "outdoors": ("Riverside Cycling Tour", "Sunrise Hike", "Botanical Garden Open Day"),
}
EVENT_CATEGORIES = ("all", *_EVENT_IDEAS)


def _stable_seed(destination: str) -> int:
    # zlib.crc32, not hash(): str hashes change per process (PYTHONHASHSEED),
    # and the demo data must be identical in the worker, the client and tests.
    return zlib.crc32(destination.strip().lower().encode())


def get_weather_forecast(
    destination: Annotated[str, Field(description="City or region, e.g. 'Tokyo'.")],
    days: Annotated[int, Field(description=f"Days to forecast, 1 to {MAX_DAYS}.")] = 3,
) -> str:
    """Get a day-by-day weather forecast for a travel destination."""
    seed = _stable_seed(destination)
    days = max(1, min(days, MAX_DAYS))
    lines = [f"Weather forecast for {destination}:"]
    for day in range(1, days + 1):
        condition = _CONDITIONS[(seed // 7 + day * 3) % len(_CONDITIONS)]
        celsius = 12 + seed % 14 + (seed >> day) % 5 - 2
        lines.append(f"Day {day}: {condition}, {celsius}°C")
    return "\n".join(lines)


def get_local_events(
    destination: Annotated[str, Field(description="City or region, e.g. 'Tokyo'.")],
    category: Annotated[str, Field(description=f"One of: {', '.join(EVENT_CATEGORIES)}.")] = "all",
) -> str:
    """List a few local events happening at a travel destination."""
    shown = category.strip().lower()
    if shown not in _EVENT_IDEAS:
        shown = "all"  # unknown categories get the general listing
    categories = list(_EVENT_IDEAS) if shown == "all" else [shown]
    ideas = [(kind, name) for kind in categories for name in _EVENT_IDEAS[kind]]
    first = _stable_seed(destination) % len(ideas)
    picked = [ideas[(first + step) % len(ideas)] for step in range(min(3, len(ideas)))]
    lines = [f"Events in {destination} ({shown}):"]
    lines += [f"- {destination} {name} ({kind})" for kind, name in picked]
    return "\n".join(lines)


def create_chat_client(
    environ: Mapping[str, str] = os.environ,
) -> SupportsChatGetResponse:
    """Return the chat client the agent talks to, chosen from `environ`.

    The first fully configured provider wins (Foundry, Azure OpenAI, OpenAI, an
    OpenAI-compatible server); with none, the offline demo model, tuned by the
    DEMO_MODEL_* variables. A half-configured provider raises `config.ConfigError`.
    See `providers.py`.
    """
    return providers.create_chat_client(environ)


def create_travel_agent(chat_client: SupportsChatGetResponse | None = None) -> Agent:
    """Build the TravelPlanner agent; without a client it uses `create_chat_client()`."""
    return Agent(
        chat_client if chat_client is not None else create_chat_client(),
        TRAVEL_PLANNER_INSTRUCTIONS,
        name=AGENT_NAME,
        tools=[get_weather_forecast, get_local_events],
    )
