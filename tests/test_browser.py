"""static/index.html in a real headless Chromium: stream an answer, drop the connection, resume, compare.

Runs `python web.py --port P` as a user would (nothing configured: its own
embedded scheduler, private Redis and worker), drives the page with Playwright
and Debian's Chromium, and checks that the text the page assembled across the
dropped connection equals the answer the durable agent recorded.

    apt-get install -y chromium        # once (CI's .ci/run does it)
    uv run pytest tests/test_browser.py -q

Screenshots: test-artifacts/browser.png, and docs/web-page.png for the README.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_services import free_port, port_answers
from tests.conftest import ROOT, cli_environment

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

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install -y chromium)"
)


@pytest.fixture
def web_url() -> Iterator[str]:
    """web.py in a subprocess; unused local ports make it start its own scheduler and Redis."""
    port = free_port()
    env = cli_environment(
        LOCAL_SCHEDULER_PORT=str(free_port()), LOCAL_REDIS_PORT=str(free_port()), DEMO_MODEL_TOKEN_DELAY_MS="30"
    )
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


def recorded_answer(base_url: str, session: str, correlation_id: str) -> str:
    with urllib.request.urlopen(f"{base_url}/agents/TravelPlanner/answer/{session}/{correlation_id}") as response:
        return json.load(response)["text"]


def test_the_page_resumes_after_a_dropped_connection_without_losing_a_word(web_url: str) -> None:
    from playwright.sync_api import expect, sync_playwright  # imported here: only this test needs it

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 820})
            page.goto(web_url)
            page.fill("#message", "Plan a 2-day trip to Lisbon")
            page.click("#send")
            page.wait_for_function("document.getElementById('raw').textContent.length > 40")
            page.click("#drop")
            expect(page.locator("#state")).to_have_attribute("data-state", "reconnecting")
            expect(page.locator("#state")).to_have_attribute("data-state", "done", timeout=30_000)

            shown = page.locator("#raw").text_content() or ""
            session = page.locator("#session").text_content() or ""
            correlation_id = page.evaluate("run.correlationId")
            log = page.locator("#log").text_content() or ""
            save_screenshot(page)
        finally:
            browser.close()

    assert "connection dropped after event" in log
    assert log.count("connected, resuming after") == 2  # the first connection, and the one after the drop
    assert shown == recorded_answer(web_url, session, correlation_id)
    assert "Lisbon" in shown


def save_screenshot(page: object) -> None:
    artifact = ROOT / "test-artifacts" / "browser.png"
    artifact.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(artifact), full_page=True)  # type: ignore[attr-defined]
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    shutil.copyfile(artifact, docs / "web-page.png")
