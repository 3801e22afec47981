"""`client.py --session KEY --cancel`: stop a conversation's current run from the command line.

The request itself is reliability/stop_requests.py; this turns its outcome into a line and an exit
status: 0 the run stopped (or, still waiting for a run slot, will end without starting), 1 nothing
stopped, 2 an unknown session.

Seen at work: README.md, "Stopping a run" (the outcomes, from three terminals), and
tests/tutorial/test_cli_activity.py, which runs exactly that.
"""

from __future__ import annotations

from redis_stream_response_handler import RedisStreamResponseHandler
from reliability.stop_requests import stop_current_run
from support.config import Settings
from support.console import EXIT_OK, EXIT_RUN_FAILED, announce, fail
from support.errors import UsageError
from support.scheduler import connect_client
from support.services import Services


async def cancel_command(settings: Settings, services: Services, session_key: str) -> int:
    """`client.py --session KEY --cancel`: 0 when the run stopped, 1 when nothing stopped, 2 unknown session."""
    async with RedisStreamResponseHandler.from_url(services.redis_url) as handler:
        scheduler = connect_client(services.scheduler_endpoint, settings.taskhub)
        outcome = await stop_current_run(
            handler, scheduler, session_key, "cancelled with client.py --cancel",
            idle_timeout_seconds=settings.idle_timeout_seconds,
        )  # fmt: skip
    if outcome.status == "unknown":
        raise UsageError(f"{outcome.message}; check the key (printed as `[client] session ...`)")
    if outcome.status not in ("cancelled", "will_not_start"):
        return fail(outcome.message, EXIT_RUN_FAILED)
    announce("client", outcome.message)
    return EXIT_OK
