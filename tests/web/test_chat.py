"""The main path in a real browser: register, chat with a streamed answer, reload, rate, admin review."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the fixtures fail or skip with the reason
    expect = None  # type: ignore[assignment]

from tests.web.conftest import ADMIN_EMAIL, PASSWORD, WebServer, new_page, register_in_browser, screenshot
from tests.web.engines import MODEL

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

pytestmark = pytest.mark.browser

WATCH_LENGTHS = """() => {
  window.__lengths = [];
  new MutationObserver(() => {
    const replies = document.querySelectorAll('.message.assistant .markdown');
    const last = replies[replies.length - 1];
    if (last) window.__lengths.push(last.textContent.length);
  }).observe(document.querySelector('.messages'), {subtree: true, childList: true, characterData: true});
}"""


def last_reply(page: Page) -> Locator:
    return page.locator(".message.assistant").last


def test_register_chat_reload_rate_and_admin_review(browser: Browser, web_server: WebServer) -> None:
    context, page = new_page(browser, web_server)
    response = page.goto("/")
    assert response is not None and "default-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_url("**/login")
    register_in_browser(page, "carol@example.com")
    assert page.locator(".model-picker").input_value() == MODEL

    page.evaluate(WATCH_LENGTHS)
    page.locator(".composer-input").fill("Tell me about ziggurats")
    page.keyboard.press("Enter")
    page.wait_for_url("**/c/*")
    reply = last_reply(page)
    reply.locator(".markdown", has_text="END-OF-ANSWER").wait_for()
    page.locator(".message.assistant[data-status=complete]").wait_for()

    lengths = [n for n in page.evaluate("window.__lengths") if n > 0]
    partial = sorted({n for n in lengths if n < max(lengths)})
    assert len(partial) >= 5, f"the answer did not arrive progressively: {lengths}"
    # rendered as markdown: a heading, a list, a table, a highlighted code block with a copy button
    assert reply.locator("h2", has_text="Ziggurats").count() == 1
    assert reply.locator("ol > li").count() == 3
    assert reply.locator("table td", has_text="Etemenanki").count() == 1
    assert reply.locator(".code-block .hljs-keyword", has_text="def").count() == 1
    assert reply.locator(".code-block button.copy-code").count() == 1
    screenshot(page, "desktop-chat-light")

    conversation_url = page.url
    page.reload()
    page.locator(".message.user .bubble", has_text="Tell me about ziggurats").wait_for()
    assert page.url == conversation_url
    assert last_reply(page).locator("table td", has_text="Etemenanki").count() == 1
    expect(page.locator(".conv-item")).to_have_count(1)

    last_reply(page).get_by_role("button", name="Bad answer").click()
    dialog = page.locator("dialog.modal")
    dialog.locator("#fb-comment").fill("Too vague about dates")
    dialog.locator("#fb-correction").fill("The Great Ziggurat of Ur was built around 2100 BC.")
    dialog.get_by_role("button", name="Submit").click()
    page.locator(".thumb.on[aria-label='Bad answer']").wait_for()
    context.close()

    admin_context, admin = new_page(browser, web_server)
    admin.goto("/login")
    admin.locator("#login-email").fill(ADMIN_EMAIL)
    admin.locator("#login-password").fill(PASSWORD)
    admin.locator(".login-form button[type=submit]").click()
    admin.locator(".side-link", has_text="Admin").click()
    admin.locator(".tab", has_text="Feedback").click()
    card = admin.locator(".feedback-card", has_text="carol@example.com")
    card.wait_for()
    correction = card.locator(".fb-field.correction").inner_text()
    assert "The Great Ziggurat of Ur was built around 2100 BC." in correction
    assert "Too vague about dates" in card.inner_text()
    assert card.locator(".thumb-badge.down").count() == 1
    screenshot(admin, "desktop-admin-feedback")
    admin_context.close()
    assert web_server.console_errors == []
