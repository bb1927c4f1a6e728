"""The conversation list: rename, pin (pinned first), search, and delete, each checked against the server."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the fixtures fail or skip with the reason
    expect = None  # type: ignore[assignment]

from tests.web.conftest import WebServer, new_page, register_in_browser, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

pytestmark = pytest.mark.browser


def row(page: Page, title: str) -> Locator:
    return page.locator(".conv-row", has=page.locator(".conv-title", has_text=title))


def act(page: Page, title: str, action: str) -> None:
    target = row(page, title)
    target.hover()  # the actions show on hover
    target.get_by_role("button", name=action).click()


def test_rename_pin_search_and_delete(browser: Browser, web_server: WebServer) -> None:
    context, page = new_page(browser, web_server)
    register_in_browser(page, "librarian@example.com")
    with web_server.api(web_server.sign_in("librarian@example.com")) as api:
        ids = {}
        for title in ("Alpha plans", "Beta notes", "Gamma ideas"):
            created = api.post("/api/conversations", json={"title": title})
            assert created.status_code == 201, created.text
            ids[title] = created.json()["id"]
        page.reload()
        titles = page.locator(".conv-list .conv-title")
        expect(titles).to_have_text(["Gamma ideas", "Beta notes", "Alpha plans"])

        act(page, "Beta notes", "Rename")
        dialog = page.locator("dialog.modal")
        dialog.locator("input").fill("Beta, renamed")
        dialog.get_by_role("button", name="Save").click()
        expect(titles).to_have_text(["Gamma ideas", "Beta, renamed", "Alpha plans"])
        assert api.get(f"/api/conversations/{ids['Beta notes']}").json()["title"] == "Beta, renamed"

        act(page, "Alpha plans", "Pin")
        expect(titles).to_have_text(["Alpha plans", "Gamma ideas", "Beta, renamed"])
        expect(page.locator(".conv-list h3").first).to_have_text("Pinned")
        unpin = row(page, "Alpha plans").locator("button[aria-label=Unpin]")
        assert unpin.get_attribute("aria-pressed") == "true"
        assert api.get(f"/api/conversations/{ids['Alpha plans']}").json()["pinned"] is True
        screenshot(page, "desktop-sidebar-pinned")

        page.get_by_role("searchbox", name="Search conversations").fill("gamma")
        hits = page.locator(".conv-list .search-hit")
        expect(hits).to_have_count(1)
        expect(hits.locator("mark")).to_have_text("Gamma")
        page.get_by_role("searchbox", name="Search conversations").fill("")
        expect(titles).to_have_count(3)

        act(page, "Gamma ideas", "Delete")
        page.locator("dialog.modal").get_by_role("button", name="Delete").click()
        expect(titles).to_have_text(["Alpha plans", "Beta, renamed"])
        assert api.get(f"/api/conversations/{ids['Gamma ideas']}").status_code == 404
    context.close()
    assert web_server.console_errors == []
