"""Editing a sent message makes a second branch; ‹ 1/2 › switches between them, each with its own answer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the fixtures fail or skip with the reason
    expect = None  # type: ignore[assignment]

from tests.web.conftest import WebServer, new_page, register_in_browser, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.browser


def test_edit_then_move_between_branches(browser: Browser, web_server: WebServer) -> None:
    context, page = new_page(browser, web_server)
    register_in_browser(page, "brancher@example.com")
    page.locator(".composer-input").fill("echo apples")
    page.keyboard.press("Enter")
    page.locator(
        ".message.assistant[data-status=complete] .markdown", has_text="You said: echo apples"
    ).wait_for()

    question = page.locator(".message.user").last
    question.hover()
    question.get_by_role("button", name="Edit").click()
    question.locator("textarea.edit-box").fill("echo pears")
    question.get_by_role("button", name="Save & submit").click()

    answer = page.locator(".message.assistant .markdown")
    expect(answer).to_have_text(["You said: echo pears"])
    page.locator(".message.assistant[data-status=complete]").wait_for()
    user = page.locator(".message.user")
    expect(user.locator(".bubble")).to_have_text(["echo pears"])
    expect(user.locator(".branch-count")).to_have_text("2 / 2")
    screenshot(page, "desktop-branch-2-of-2")

    user.hover()
    user.get_by_role("button", name="Previous version").click()
    expect(user.locator(".bubble")).to_have_text(["echo apples"])
    expect(answer).to_have_text(["You said: echo apples"])
    expect(user.locator(".branch-count")).to_have_text("1 / 2")
    assert user.get_by_role("button", name="Previous version").is_disabled()

    user.hover()
    user.get_by_role("button", name="Next version").click()
    expect(user.locator(".bubble")).to_have_text(["echo pears"])
    expect(answer).to_have_text(["You said: echo pears"])

    page.reload()  # the chosen branch is the server's, not only the page's
    expect(page.locator(".message.user .bubble")).to_have_text(["echo pears"])
    expect(page.locator(".message.assistant .markdown")).to_have_text(["You said: echo pears"])
    context.close()
    assert web_server.console_errors == []
