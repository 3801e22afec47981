"""The page's tool steps and Stop button in a real headless Chromium (see test_browser.py for the setup).

uv run pytest tests/webapp/test_browser_stop.py -q
"""

from __future__ import annotations

from tests.webapp.test_browser import NEEDS_A_BROWSER, page_asking, recorded_answer, running_web_app

pytestmark = NEEDS_A_BROWSER  # Chromium and Playwright: skipped cleanly when either is missing


def test_stop_ends_the_run_shows_its_tool_steps_and_the_next_turn_completes_and_a_reload_restores_both() -> None:
    from playwright.sync_api import expect

    with (
        running_web_app(DEMO_MODEL_TOKEN_DELAY_MS="40") as url,
        page_asking(url, "Plan a 3-day trip to Lisbon") as page,
    ):
        page.wait_for_function("document.getElementById('raw').textContent.length > 40")
        page.click("#stop")
        expect(page.locator("#state")).to_have_attribute("data-state", "cancelled", timeout=30_000)
        stopped_text = page.locator("#raw").text_content() or ""
        steps = page.locator("#steps li").all_text_contents()
        step_states = [item.get_attribute("data-status") for item in page.locator("#steps li").all()]
        session = page.locator("#session").text_content() or ""
        record = recorded_answer(url, session, page.evaluate("run.correlationId"))

        page.fill("#message", "Plan a 1-day trip to Oslo")
        page.click("#send")
        expect(page.locator("#state")).to_have_attribute("data-state", "done", timeout=30_000)
        next_steps = page.locator("#steps li").count()
        log = page.locator("#log").text_content() or ""

        page.reload()  # the page keeps its session: the earlier turns come back from the durable record
        expect(page.locator("#history .turn")).to_have_count(2, timeout=30_000)
        restored = [turn.get_attribute("data-status") for turn in page.locator("#history .turn").all()]
        restored_steps = page.locator("#history .turn").first.locator(".steps li").count()
        restored_text = page.locator("#history").text_content() or ""

    assert len(steps) == 2 and step_states == ["done", "done"]
    assert any(s.startswith('get_weather_forecast(destination="Lisbon", days=3) → Weather forecast') for s in steps)
    assert "stop cancelled" in log and "the run was cancelled" in log
    assert stopped_text and "Enjoy your trip!" not in stopped_text
    assert stopped_text == record  # the durable record keeps what the page showed before the stop
    assert next_steps == 2 and "done after" in log
    assert restored == ["cancelled", "completed"] and restored_steps == 2
    assert "You: Plan a 3-day trip to Lisbon" in restored_text and "You: Plan a 1-day trip to Oslo" in restored_text
    assert "(cancelled: stopped through POST /agents/TravelPlanner/cancel)" in restored_text
