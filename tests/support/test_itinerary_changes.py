"""How the offline demo model reads a follow-up turn (support/itinerary_changes.py, support/demo_model.py)."""

from __future__ import annotations

import pytest

from support.demo_model import TripRequest, trip_from_conversation
from support.itinerary_changes import requested_change


@pytest.mark.parametrize(
    ("requests", "trip"),
    [
        (["Plan a 2-day trip to Oslo", "Make day 2 more relaxed"], TripRequest("Oslo", 2)),
        (["Plan a 2-day trip to Oslo", "Make it 4 days"], TripRequest("Oslo", 4)),
        (["Plan a 2-day trip to Oslo", "Now plan a trip to Rome"], TripRequest("Rome", 2)),
        (["Make day 2 more relaxed"], TripRequest("Paris", 3)),  # nothing to go on: the defaults
    ],
)
def test_each_detail_comes_from_the_latest_request_that_states_it(requests: list[str], trip: TripRequest) -> None:
    assert trip_from_conversation(requests) == trip


@pytest.mark.parametrize(
    ("text", "relaxed", "days"),
    [
        ("Make day 2 more relaxed", True, {2}),
        ("make the second day easier", True, {2}),
        ("Slow it down a bit", True, set()),
        ("More restaurants please", False, set()),  # "rest…" is not "restful"
    ],
)
def test_requested_change(text: str, relaxed: bool, days: set[int]) -> None:
    change = requested_change(text)

    assert (change.relaxed, set(change.days)) == (relaxed, days)
    assert change.applies_to(2) == relaxed
