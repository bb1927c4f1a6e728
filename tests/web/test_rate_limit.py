"""Over the requests-per-minute limit, the chat says when to try again and keeps what was typed."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the fixtures fail or skip with the reason
    expect = None  # type: ignore[assignment]

from tests.web.conftest import WebServer, new_page, register_by_api, screenshot, sign_in_in_browser

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.browser


def test_a_429_says_when_to_retry(browser: Browser, web_server: WebServer) -> None:
    # A role's own limit wins over the server's defaults: one request a minute for this user only.
    with web_server.api(web_server.admin_token) as admin:
        created = admin.post("/api/admin/roles", json={"name": "trickle", "requests_per_minute": 1})
        assert created.status_code == 201, created.text
    register_by_api(web_server, "hasty@example.com", role="trickle")
    context, page = new_page(browser, web_server)
    sign_in_in_browser(page, "hasty@example.com")

    page.locator(".composer-input").fill("echo once")
    page.keyboard.press("Enter")
    page.locator(".message.assistant[data-status=complete]", has_text="You said: echo once").wait_for()

    page.locator(".composer-input").fill("echo twice")
    page.keyboard.press("Enter")
    toast = page.locator(".toast.error")
    toast.wait_for()
    match = re.fullmatch(r"Too many requests\. Try again in (\d+) s\.", toast.inner_text())
    assert match, f"the message does not say when to retry: {toast.inner_text()!r}"
    assert 1 <= int(match.group(1)) <= 60
    expect(page.locator(".composer-input")).to_have_value("echo twice")  # nothing typed is lost
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    screenshot(page, "desktop-rate-limited")
    context.close()
