"""Deterministic demo data behind the TravelPlanner's tools: a forecast and a few events per destination.

The same destination always gets the same data, in the worker, the client and the tests, so runs
are repeatable and the offline demo model's answers can be checked against the tool results.
"""

from __future__ import annotations

import zlib

MAX_DAYS = 7
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


def weather_forecast(destination: str, days: int) -> str:
    seed = _stable_seed(destination)
    days = max(1, min(days, MAX_DAYS))
    lines = [f"Weather forecast for {destination}:"]
    for day in range(1, days + 1):
        condition = _CONDITIONS[(seed // 7 + day * 3) % len(_CONDITIONS)]
        celsius = 12 + seed % 14 + (seed >> day) % 5 - 2
        lines.append(f"Day {day}: {condition}, {celsius}°C")
    return "\n".join(lines)


def local_events(destination: str, category: str) -> str:
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
