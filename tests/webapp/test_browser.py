"""webapp/static/index.html in a real headless Chromium: stream an answer, drop the connection, resume, compare.

Runs `python web.py --port P` as a user would (nothing configured: its own
embedded scheduler, private Redis and worker), drives the page with Playwright
and Debian's Chromium, and checks that the text the page assembled across the
dropped connection equals the answer the durable agent recorded.

    apt-get install -y chromium        # once (CI's .ci/run does it)
    uv run pytest tests/webapp/test_browser.py -q

Screenshots: test-artifacts/browser.png and chat-390.png. To refresh the README's docs/web-page.png
(the chat at a phone's width, taken by `test_the_page_is_a_chat_that_fits_a_phone`):
    UPDATE_DOCS_SCREENSHOT=1 uv run pytest tests/webapp/test_browser.py -q
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from support.ports import free_port, port_answers
from support.private_redis import PrivateRedisServer
from tests.conftest import ROOT, cli_environment

if TYPE_CHECKING:
    from playwright.sync_api import Page, Response

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Shared by every browser test module (test_browser_stop.py too): both skip, never fail, without them.
NEEDS_A_BROWSER = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install -y chromium)"
    ),
    pytest.mark.skipif(  # a plain `uv run pytest` syncs the test group only; `uv sync --all-groups` adds it
        importlib.util.find_spec("playwright") is None, reason="needs Playwright (uv sync --group dev)"
    ),
]
pytestmark = NEEDS_A_BROWSER


@pytest.fixture
def web_url() -> Iterator[str]:
    with running_web_app(DEMO_MODEL_TOKEN_DELAY_MS="30") as url:
        yield url


@contextlib.contextmanager
def running_web_app(**model_env: str) -> Iterator[str]:
    """web.py in a subprocess; unused local ports make it start its own scheduler and Redis."""
    port = free_port()
    env = cli_environment(LOCAL_SCHEDULER_PORT=str(free_port()), LOCAL_REDIS_PORT=str(free_port()), **model_env)
    process = subprocess.Popen(
        [sys.executable, "web.py", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_answers("127.0.0.1", port, timeout=0.2):
            assert process.poll() is None, f"web.py exited: {process.stderr.read() if process.stderr else ''}"
            assert time.monotonic() < deadline, "web.py did not start listening"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextlib.contextmanager
def page_asking(url: str, message: str, *, refused: list[str] | None = None, **page_options: Any) -> Iterator[Page]:
    """The web page in headless Chromium, with `message` typed and sent; the browser closes on exit.

    `refused` collects every response of the page's with a 4xx or 5xx status, from the first request.
    """
    from playwright.sync_api import sync_playwright  # imported here: only the browser tests need it

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(**page_options)
            if refused is not None:
                page.on("response", lambda response: _note_refusal(response, refused))
            page.goto(url)
            page.fill("#message", message)
            page.click("#send")
            yield page
        finally:
            browser.close()


def _note_refusal(response: Response, refused: list[str]) -> None:
    if response.status >= 400:
        refused.append(f"{response.status} {response.url}")


def recorded_answer(base_url: str, session: str, correlation_id: str) -> str:
    with urllib.request.urlopen(f"{base_url}/agents/TravelPlanner/answer/{session}/{correlation_id}") as response:
        return json.load(response)["text"]


@dataclass(frozen=True)
class PageAnswer:
    shown: str  # the answer's text as the page shows it
    log: str  # the page's log
    recorded: str  # the answer the durable agent recorded for the page's run


def page_answer(page: Page, base_url: str) -> PageAnswer:
    """What the page shows for its run, and what the record holds (asked while web.py still runs)."""
    session = page.locator("#session").text_content() or ""
    recorded = recorded_answer(base_url, session, page.evaluate("run.correlationId"))
    return PageAnswer(page.locator("#raw").text_content() or "", page.locator("#log").text_content() or "", recorded)


def test_the_page_resumes_after_a_dropped_connection_without_losing_a_word(web_url: str) -> None:
    from playwright.sync_api import expect

    with page_asking(web_url, "Plan a 2-day trip to Lisbon", viewport={"width": 1000, "height": 820}) as page:
        page.wait_for_function("document.getElementById('raw').textContent.length > 40")
        page.click("#drop")
        expect(page.locator("#state")).to_have_attribute("data-state", "reconnecting")
        expect(page.locator("#state")).to_have_attribute("data-state", "done", timeout=30_000)

        answer = page_answer(page, web_url)
        save_screenshot(page, "browser.png")

    assert "connection dropped after event" in answer.log
    assert answer.log.count("connected, resuming after") == 2  # the first connection, and the one after the drop
    assert answer.shown == answer.recorded
    assert "Lisbon" in answer.shown


PHONE = {"width": 390, "height": 844}


def test_the_page_is_a_chat_that_fits_a_phone(web_url: str) -> None:
    """At 390 px: two turns stacked, Send disabled while one streams, Stop and Drop on screen, nothing refused.

    Before: each turn replaced the last, Send stayed enabled (sending again hid the running answer
    without stopping it), Stop and Drop connection were off-screen, and /favicon.ico was a 404.
    """
    from playwright.sync_api import expect

    refused: list[str] = []
    with page_asking(web_url, "Plan a 2-day trip to Lisbon", refused=refused, viewport=PHONE) as page:
        page.wait_for_function("document.getElementById('raw').textContent.length > 40")
        while_streaming = {button: page.locator(f"#{button}").is_enabled() for button in ("send", "stop", "drop")}
        on_screen = {button: _on_screen(page, f"#{button}") for button in ("message", "send", "stop", "drop")}
        expect(page.locator("#state")).to_have_attribute("data-state", "done", timeout=30_000)
        first_answer = page.locator("#raw").text_content() or ""
        first_run = page.evaluate("run.correlationId")

        page.fill("#message", "Make day 2 more relaxed")
        page.click("#send")
        page.wait_for_function("document.getElementById('raw').textContent.length > 40")
        page.click("#drop")  # on a phone too: the answer resumes from the last event id
        expect(page.locator("#state")).to_have_attribute("data-state", "done", timeout=30_000)
        turns = [turn.inner_text() for turn in page.locator("#turns .turn").all()]
        send_after = page.locator("#send").is_enabled()
        page_width = page.evaluate("document.documentElement.scrollWidth")
        session = page.locator("#session").text_content() or ""
        save_screenshot(page, "chat-390.png", for_the_readme=True)

    assert while_streaming == {"send": False, "stop": True, "drop": True} and send_after
    assert all(on_screen.values()), on_screen
    assert page_width <= PHONE["width"]  # nothing wider than the screen: no sideways scrolling
    assert len(turns) == 2, turns
    assert turns[0].startswith("You: Plan a 2-day trip to Lisbon") and "Day 2" in turns[0]  # still shown
    assert turns[1].startswith("You: Make day 2 more relaxed") and "Lisbon" in turns[1]
    assert first_answer == recorded_answer(web_url, session, first_run)
    assert refused == []  # the favicon among them, before


def _on_screen(page: Page, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    return box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]


def test_an_answer_whose_end_never_reached_redis_is_shown_from_the_durable_record() -> None:
    """Part way through, the worker can no longer write (its Redis user loses EVAL, the fenced write's command).

    The rest of the answer and its done marker never reach the stream, but the run ends and is recorded. Default
    settings: after the default idle timeout (20 s) the page gets `done` with `from_record`, and shows the answer
    the durable agent recorded instead of "the worker may have died".
    """
    import redis
    from playwright.sync_api import expect

    with (
        PrivateRedisServer(free_port()) as server,  # this test's own: its ACL changes below
        running_web_app(DEMO_MODEL_TOKEN_DELAY_MS="30", REDIS_CONNECTION_STRING=server.url) as url,
        page_asking(url, "Plan a 2-day trip to Lisbon") as page,
    ):
        page.wait_for_function("document.getElementById('raw').textContent.length > 40")
        with redis.Redis.from_url(server.url) as client:
            client.execute_command("ACL", "SETUSER", "default", "-eval")
        expect(page.locator("#state")).to_have_attribute("data-state", "done", timeout=60_000)
        answer = page_answer(page, url)

    assert "the stream ended early; the answer shown is the durable record" in answer.log
    assert "the run failed" not in answer.log
    assert answer.shown == answer.recorded and "Lisbon" in answer.shown


def test_a_failed_run_shows_its_error_and_stops_reconnecting() -> None:
    from playwright.sync_api import expect

    with (
        running_web_app(DEMO_MODEL_FAIL_AFTER_TOKENS="3") as url,
        page_asking(url, "Plan a 2-day trip to Lisbon") as page,
    ):
        expect(page.locator("#state")).to_have_attribute("data-state", "error", timeout=30_000)
        page.wait_for_timeout(1500)  # long enough for a wrongly kept EventSource to reconnect (retry is 1 s)
        state = page.locator("#state").get_attribute("data-state")
        shown_error = page.locator("#answer .error").text_content() or ""
        log = page.locator("#log").text_content() or ""

    assert state == "error"
    assert "Demo model failure" in shown_error
    assert "the run failed" in log and "connection lost" not in log


def test_a_run_waiting_for_a_free_worker_says_so_then_streams() -> None:
    """One run slot, taken by another conversation: the page shows the wait, then the whole answer."""
    from playwright.sync_api import expect

    model = {"WORKER_MAX_CONCURRENT_RUNS": "1", "DEMO_MODEL_TOKEN_DELAY_MS": "30"}
    with running_web_app(**model) as url:
        start_run(url, "Plan a 3-day trip to Oslo")  # another user's run holds the only slot for ~4 s
        with page_asking(url, "Plan a 2-day trip to Lisbon") as page:
            expect(page.locator("#state")).to_have_attribute("data-state", "queued", timeout=10_000)
            queued_text = page.locator("#state").text_content() or ""
            expect(page.locator("#state")).to_have_attribute("data-state", "done", timeout=30_000)
            answer = page_answer(page, url)

    assert "waiting for a free worker" in queued_text and answer.log.count("waiting for a free worker") == 1
    assert answer.shown == answer.recorded and "Lisbon" in answer.shown


def start_run(base_url: str, message: str) -> None:
    request = urllib.request.Request(
        f"{base_url}/agents/TravelPlanner/run",
        data=json.dumps({"message": message}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request) as response:
        assert response.status in (200, 202)


def save_screenshot(page: object, name: str, *, for_the_readme: bool = False) -> None:
    artifact = ROOT / "test-artifacts" / name
    artifact.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(artifact), full_page=True)  # type: ignore[attr-defined]
    if for_the_readme and os.environ.get("UPDATE_DOCS_SCREENSHOT"):  # a test run must not rewrite tracked files
        shutil.copyfile(artifact, ROOT / "docs" / "web-page.png")
