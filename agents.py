"""The TravelPlanner agent: its instructions, its two tools and its chat client.

`create_travel_agent()` builds an Agent Framework `Agent` named "TravelPlanner" with two tools,
`get_weather_forecast` and `get_local_events`, which return deterministic demo data so runs are
repeatable. Its chat client is the model provider configured in the environment, else the offline
demo model (support/providers.py, support/demo_model.py).

Try it in-process, no services needed:

    uv run python -c "import asyncio, agents; \\
        print(asyncio.run(agents.create_travel_agent().run('Plan a 3-day trip to Tokyo')))"

Read next: redis_stream_response_handler.py, if you have not yet.
"""

from __future__ import annotations

from typing import Annotated

from agent_framework import Agent, SupportsChatGetResponse
from pydantic import Field

from support.providers import create_chat_client
from support.travel_data import EVENT_CATEGORIES, MAX_DAYS, local_events, weather_forecast

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


def get_weather_forecast(
    destination: Annotated[str, Field(description="City or region, e.g. 'Tokyo'.")],
    days: Annotated[int, Field(description=f"Days to forecast, 1 to {MAX_DAYS}.")] = 3,
) -> str:
    """Get a day-by-day weather forecast for a travel destination."""
    return weather_forecast(destination, days)


def get_local_events(
    destination: Annotated[str, Field(description="City or region, e.g. 'Tokyo'.")],
    category: Annotated[str, Field(description=f"One of: {', '.join(EVENT_CATEGORIES)}.")] = "all",
) -> str:
    """List a few local events happening at a travel destination."""
    return local_events(destination, category)


def create_travel_agent(chat_client: SupportsChatGetResponse | None = None) -> Agent:
    """Build the TravelPlanner agent; without a client it uses `create_chat_client()`."""
    return Agent(
        chat_client if chat_client is not None else create_chat_client(),
        TRAVEL_PLANNER_INSTRUCTIONS,
        name=AGENT_NAME,
        tools=[get_weather_forecast, get_local_events],
    )
