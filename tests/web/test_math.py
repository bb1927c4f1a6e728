"""TeX in answers renders as MathML under the CSP; nothing in math can make a link or run."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.web.conftest import WebServer, new_page, register_in_browser, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.browser


def test_math_renders_as_mathml_and_cannot_link(browser: Browser, web_server: WebServer) -> None:
    context, page = new_page(browser, web_server)
    register_in_browser(page, "euler@example.com")
    page.locator(".composer-input").fill("some math please")
    page.keyboard.press("Enter")
    page.locator(".message.assistant[data-status=complete]").wait_for()
    reply = page.locator(".message.assistant .markdown").last
    reply.locator("p", has_text="END-OF-MATH").wait_for()

    inline = reply.locator(".math-inline math").first
    assert inline.locator("annotation").text_content() == "E=mc^2"
    assert inline.locator("msup").count() == 1  # c², drawn by the browser, not the TeX source as text
    display = reply.locator(".math-display math")
    assert display.count() == 1 and display.get_attribute("display") == "block"
    assert display.locator("mfrac").count() == 1
    assert "Price: $5 and $10." in reply.inner_text()  # dollars in prose stay text

    # \href{javascript:...} and \htmlClass need KaTeX's `trust`: no link, no class, nothing runs
    assert reply.locator("a, [href]").count() == 0
    assert reply.locator(".x").count() == 0
    reply.locator(".math-inline").nth(1).click()
    page.wait_for_timeout(100)
    assert page.evaluate("window.__pwned") is None
    assert reply.locator("[style]").count() == 0  # inline styles would break the CSP
    screenshot(page, "desktop-math")
    context.close()
    assert web_server.console_errors == []  # CSP refusals are collected here too
