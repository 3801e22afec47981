"""Follow-up requests the offline demo model understands: "Make day 2 more relaxed".

A follow-up turn names no destination; the demo model keeps the trip the conversation is about
(see `demo_model.trip_from_conversation`) and applies the change read here to that plan. It
understands a slower pace for one day ("day 2", "the second day") or for every day ("make it
more relaxed"); any other request is quoted in the answer's introduction, so the answer
visibly responds to it.

Try it: `uv run python -m support.itinerary_changes "Make day 2 more relaxed"`
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh")
_DAY = re.compile(r"\bday\s+(\d{1,2})\b|\b(" + "|".join(_ORDINALS) + r")\s+day\b", re.IGNORECASE)
_SLOWER = re.compile(r"\b(relax\w*|slow\w*|eas(y|ier)|lighter|calm\w*|restful|lazy|lazier|chill\w*)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Change:
    """What a follow-up asks to change; `days` is empty when it applies to the whole trip."""

    request: str
    relaxed: bool
    days: frozenset[int] = frozenset()

    def applies_to(self, day: int) -> bool:
        return self.relaxed and (not self.days or day in self.days)

    def summary(self) -> str:
        if not self.relaxed:
            return f"Updated for your request: “{self.request}”."
        which = " and ".join(f"day {day}" for day in sorted(self.days)) or "every day"
        return f"As you asked, {which} is now more relaxed."


def requested_change(text: str) -> Change:
    """The change a follow-up message asks for (a plain request gives one that only quotes it)."""
    days = frozenset(_day_number(match) for match in _DAY.finditer(text))
    return Change(request=text.strip(), relaxed=bool(_SLOWER.search(text)), days=days)


def relaxed_day(place: str) -> tuple[str, str, str]:
    """Morning, highlight and evening for a day taken slowly."""
    return (
        "a late start and a long breakfast",
        f"one unhurried stroll through {place}, with no fixed plans",
        "an early, quiet dinner",
    )


def _day_number(match: re.Match[str]) -> int:
    number, ordinal = match.groups()
    return int(number) if number else _ORDINALS.index(ordinal.lower()) + 1


if __name__ == "__main__":
    print(requested_change(" ".join(sys.argv[1:]) or "Make day 2 more relaxed"))
