"""Input checks shared by the CLI and the web app: session keys, cursors and messages.

Each check runs before anything is sent anywhere and raises `UsageError` with one line that
says what is wrong (the web app answers it as a 4xx).
"""

from __future__ import annotations

import re

from support.errors import UsageError

MAX_MESSAGE_CHARACTERS = 32_000  # a travel request, not a document; keeps entity state small
EMPTY_MESSAGE = "the message is empty"
NOT_UTF8_MESSAGE = "the message is not valid UTF-8 text"

# fullmatch and [0-9], never `$` and `\d`: `$` also matches before a trailing newline, and `\d` matches
# any Unicode digit ('١'). Each part of an entry id is an unsigned 64-bit number in Redis.
_ENTRY_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
MAX_ENTRY_ID_PART = 2**64 - 1
# Session keys become part of a Redis key; keep them to a boring, safe alphabet.
_SESSION_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def validate_session_key(session_key: str) -> str:
    if not _SESSION_KEY.fullmatch(session_key):
        raise UsageError(
            f"session key must be 1-128 characters of letters, digits, '_', '-', '.' or ':' (got {session_key!r})"
        )
    return session_key


def validate_cursor(cursor: str) -> str:
    """Reject anything that is not a stream entry id, before it reaches Redis."""
    match = _ENTRY_ID.fullmatch(cursor)
    if match is None or any(int(part) > MAX_ENTRY_ID_PART for part in match.groups()):
        raise UsageError(
            f"cursor must be a Redis stream entry id such as 1734649123456-0, each part at most {MAX_ENTRY_ID_PART} "
            f"(got {cursor!r})"
        )
    return cursor


def entry_id_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a sortable pair: ids compare by milliseconds, then sequence."""
    milliseconds, sequence = entry_id.split("-")
    return int(milliseconds), int(sequence)


def message_problem(message: str) -> str | None:
    """What makes `message` unfit to send to the agent, or None."""
    if not message.strip():
        return EMPTY_MESSAGE
    if len(message) > MAX_MESSAGE_CHARACTERS:
        return f"the message has {len(message)} characters; the limit is {MAX_MESSAGE_CHARACTERS}"
    try:
        message.encode("utf-8")  # bytes that are not UTF-8 (in argv, or typed) arrive as lone surrogates
    except UnicodeEncodeError:
        return NOT_UTF8_MESSAGE
    return None


def check_message(message: str) -> str:
    """`message`, or a UsageError that says how to fix it on the command line."""
    problem = message_problem(message)
    if problem == EMPTY_MESSAGE:
        raise UsageError(f'{problem}: pass -m "Plan a 2-day trip to Paris"')
    if problem == NOT_UTF8_MESSAGE:
        raise UsageError(f"{problem}; check your terminal's encoding (e.g. LANG=C.UTF-8)")
    if problem is not None:
        raise UsageError(problem)
    return message
