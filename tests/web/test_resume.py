"""A reply survives a real connection cut: a banner, a resume from Last-Event-ID, and no text twice."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.web.conftest import WebServer, new_page, register_in_browser
from tests.web.engines import RESUME_REPLY
from tests.web.proxy import SeverableProxy

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Request

pytestmark = pytest.mark.browser

# Every text the reply ever shows, so a duplicated or skipped piece is caught even though the
# finished reply is re-read from the server afterwards.
WATCH_TEXTS = """() => {
  window.__texts = [];
  window.__banners = [];
  const banner = document.querySelector('.banner');
  new MutationObserver(() => {
    const replies = document.querySelectorAll('.message.assistant .markdown');
    const last = replies[replies.length - 1];
    if (last) window.__texts.push(last.textContent.trim());
    if (!banner.hidden) window.__banners.push(banner.textContent);
  }).observe(document.querySelector('.main'),
             {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def test_a_cut_connection_resumes_the_answer_exactly_once(browser: Browser, web_server: WebServer) -> None:
    upstream = web_server.running.server.config
    with SeverableProxy(upstream.host, upstream.port).running() as proxy:
        context, page = new_page(browser, web_server, base_url=proxy.url)
        requests: list[Request] = []
        page.on("request", lambda request: requests.append(request))
        register_in_browser(page, "commuter@example.com")
        page.evaluate(WATCH_TEXTS)

        page.locator(".composer-input").fill("resume after a tunnel")
        page.keyboard.press("Enter")
        page.locator(".message.assistant .markdown", has_text="part6").wait_for()
        assert proxy.cut(down_s=1.2) >= 1  # the reply's own connection at least
        page.locator(".banner", has_text="Connection lost").wait_for()

        page.locator(".message.assistant[data-status=complete]").wait_for()
        final = page.locator(".message.assistant .markdown").last.inner_text()
        assert final == RESUME_REPLY
        texts = [text for text in page.evaluate("window.__texts") if text]
        assert texts, "the reply was never watched"
        wrong = [text for text in texts if not RESUME_REPLY.startswith(text)]
        assert not wrong, f"the reply showed text that is not a prefix of the answer: {wrong[:3]}"
        assert page.locator(".banner").is_hidden()

        # it went through the resume endpoint, from where it had got to, after the refused attempts
        assert proxy.refused >= 1
        resumes = [request for request in requests if request.url.endswith("/stream")]
        assert resumes, "the page never asked GET /api/messages/{id}/stream"
        last_seen = resumes[-1].headers.get("last-event-id")
        assert last_seen, f"the resume sent no Last-Event-ID: {resumes[-1].headers}"
        assert page.evaluate("window.__banners").count("Connection lost. Reconnecting…") >= 1
        context.close()
    assert web_server.console_errors == []


def test_a_reply_cut_before_its_first_event_is_found_and_followed(
    browser: Browser, web_server: WebServer
) -> None:
    upstream = web_server.running.server.config
    with SeverableProxy(upstream.host, upstream.port).running() as proxy:
        context, page = new_page(browser, web_server, base_url=proxy.url)
        register_in_browser(page, "early@example.com")
        page.evaluate(WATCH_TEXTS)
        proxy.cut_before_answer(b"/messages HTTP/1.1")
        page.locator(".composer-input").fill("resume me from nowhere")
        page.keyboard.press("Enter")
        page.locator(".message.assistant[data-status=complete]").wait_for()
        assert proxy.trapped == 1
        final = page.locator(".message.assistant .markdown").last.inner_text()
        assert final == RESUME_REPLY
        wrong = [text for text in page.evaluate("window.__texts") if not RESUME_REPLY.startswith(text)]
        assert not wrong, f"the reply showed text that is not a prefix of the answer: {wrong[:3]}"
        conversation_id = page.url.rsplit("/", 1)[-1]
        context.close()
    assert web_server.console_errors == []
    with web_server.api(web_server.sign_in("early@example.com")) as api:
        messages = api.get(f"/api/conversations/{conversation_id}").json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]  # sent once, answered once
