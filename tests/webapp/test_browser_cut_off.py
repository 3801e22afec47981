"""The page when the server cuts its stream off (a reader too slow, the server stopping): it resumes, losing nothing.

The server's error event for a reader it cut off ends with "resume after <id>", and carries that id.
Before, the page took it for the run failing: it closed the stream and showed an error, while the
answer went on in Redis. See test_browser.py for the setup (headless Chromium, Playwright).

uv run pytest tests/webapp/test_browser_cut_off.py -q
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack

from support.config import Settings
from support.services import Services
from tests.webapp.test_browser import NEEDS_A_BROWSER, page_answer, page_asking
from tests.webapp.test_web import demo_worker, serve
from webapp.stream_hub import ServerStoppingError, StreamHub

pytestmark = NEEDS_A_BROWSER  # Chromium and Playwright: skipped cleanly when either is missing


def test_the_page_resumes_when_the_server_cuts_its_stream_off(redis_url: str) -> None:
    from playwright.sync_api import expect

    loops: list[asyncio.AbstractEventLoop] = []

    def worker_noting_the_loop(settings: Settings, services: Services, stack: ExitStack) -> None:
        loops.append(asyncio.get_running_loop())  # the app's loop: the hub is driven on it
        demo_worker(DEMO_MODEL_TOKEN_DELAY_MS="30")(settings, services, stack)

    with (
        serve(redis_url, worker_noting_the_loop) as web,
        page_asking(web.url, "Plan a 2-day trip to Lisbon") as page,
    ):
        page.wait_for_function("document.getElementById('raw').textContent.length > 40")
        loops[0].call_soon_threadsafe(cut_off_every_reader, web.app.state.hub)
        expect(page.locator("#state")).to_have_attribute("data-state", "done", timeout=30_000)
        answer = page_answer(page, web.url)
        errors_shown = page.locator("#answer .error").count()

    assert "the server is stopping; resume after" in answer.log
    assert answer.log.count("connected, resuming after") == 2  # the first connection, and the one after the cut
    assert errors_shown == 0  # the cut is no failure of the run
    assert answer.shown == answer.recorded and "Lisbon" in answer.shown


def cut_off_every_reader(hub: StreamHub) -> None:
    """What the hub does to each reader when web.py stops (webapp/server.py), this hub going on serving."""
    for stream in hub.streams.values():
        for reader in stream.readers:
            reader.end(ServerStoppingError("the server is stopping"))
