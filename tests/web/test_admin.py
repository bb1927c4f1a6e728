"""The admin pages (users, usage, models) and the model picker, which lists only what a user may use."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the fixtures fail or skip with the reason
    expect = None  # type: ignore[assignment]

from tests.server import wait_until
from tests.web.conftest import (
    ADMIN_EMAIL,
    WebServer,
    new_page,
    register_by_api,
    screenshot,
    sign_in_in_browser,
)
from tests.web.engines import MODEL, MODEL_TERSE

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser


def picker_options(page: Page) -> list[str]:
    page.locator(".model-picker option").first.wait_for(state="attached")
    options: list[str] = page.locator(".model-picker option").evaluate_all("els => els.map(e => e.value)")
    return options


@pytest.fixture
def terse_entry(web_server: WebServer) -> Iterator[str]:
    """A registry entry for the second model (the admin page lists entries); enabled again afterwards."""
    with web_server.api(web_server.admin_token) as admin:
        entries = admin.get("/api/admin/models").json()["data"]
        entry = next((e for e in entries if e["name"] == MODEL_TERSE), None)
        if entry is None:
            created = admin.post("/api/admin/models", json={"name": MODEL_TERSE})
            assert created.status_code == 201, created.text
            entry = created.json()
        entry_id: str = entry["id"]
        try:
            yield entry_id
        finally:
            admin.patch(f"/api/admin/models/{entry_id}", json={"enabled": True})


def test_change_a_users_role(browser: Browser, web_server: WebServer) -> None:
    user_id = register_by_api(web_server, "promoted@example.com")
    context, page = new_page(browser, web_server)
    sign_in_in_browser(page, ADMIN_EMAIL)
    page.goto("/admin/users")
    page.get_by_placeholder("Filter by email").fill("promoted")
    role = page.get_by_label("Role promoted@example.com")
    expect(role).to_have_value("user")
    expect(page.locator("table.data tbody tr")).to_have_count(1)
    role.select_option("admin")
    page.locator(".toast", has_text="Saved").wait_for()
    with web_server.api(web_server.admin_token) as admin:
        assert admin.get(f"/api/admin/users/{user_id}").json()["role"] == "admin"
    page.reload()
    page.get_by_placeholder("Filter by email").fill("promoted")
    expect(page.get_by_label("Role promoted@example.com")).to_have_value("admin")
    context.close()
    assert web_server.console_errors == []


def test_usage_shows_the_tokens_of_the_traffic(browser: Browser, web_server: WebServer) -> None:
    user_id = register_by_api(web_server, "spender@example.com")
    with web_server.api(web_server.sign_in("spender@example.com")) as user:
        conversation = user.post("/api/conversations", json={}).json()["id"]
        turn = user.post(f"/api/conversations/{conversation}/messages", json={"content": "echo count these"})
        assert turn.status_code == 200 and "event: done" in turn.text
    rows: list[dict[str, Any]] = []
    with web_server.api(web_server.admin_token) as admin:

        def recorded() -> bool:
            rows[:] = admin.get("/api/admin/usage", params={"by": "user", "user_id": user_id}).json()["data"]
            return bool(rows)

        assert wait_until(recorded, timeout_s=5), "the turn's usage was never recorded"
    assert len(rows) == 1 and rows[0]["requests"] == 1
    # the scripted engine's own count: 3 prompt words; "You said: echo count these" in 5 pieces
    assert (rows[0]["prompt_tokens"], rows[0]["completion_tokens"]) == (3, 5)

    context, page = new_page(browser, web_server)
    sign_in_in_browser(page, ADMIN_EMAIL)
    page.goto("/admin/usage")
    row = page.locator("table.data tbody tr", has_text="spender@example.com")
    expect(row.locator("td")).to_have_text([rows[0]["day"], "spender@example.com", "1", "3", "5", "8"])
    screenshot(page, "desktop-admin-usage")
    context.close()
    assert web_server.console_errors == []


def test_a_disabled_model_leaves_the_users_picker(
    browser: Browser, web_server: WebServer, terse_entry: str
) -> None:
    register_by_api(web_server, "chooser@example.com")
    user_context, user = new_page(browser, web_server)
    sign_in_in_browser(user, "chooser@example.com")
    assert picker_options(user) == [MODEL, MODEL_TERSE]

    admin_context, admin = new_page(browser, web_server)
    sign_in_in_browser(admin, ADMIN_EMAIL)
    admin.goto("/admin/models")
    enabled = admin.get_by_label(f"Enabled {MODEL_TERSE}")
    expect(enabled).to_be_checked()
    enabled.uncheck()
    admin.locator(".toast", has_text="Saved").wait_for()
    screenshot(admin, "desktop-admin-models")

    user.reload()
    assert picker_options(user) == [MODEL]
    user_context.close()
    admin_context.close()
    assert web_server.console_errors == []


def test_the_picker_lists_only_the_models_of_the_users_role(browser: Browser, web_server: WebServer) -> None:
    with web_server.api(web_server.admin_token) as admin:
        created = admin.post("/api/admin/roles", json={"name": "narrow", "allowed_models": [MODEL]})
        assert created.status_code == 201, created.text
    register_by_api(web_server, "narrow@example.com", role="narrow")
    context, page = new_page(browser, web_server)
    sign_in_in_browser(page, "narrow@example.com")
    assert picker_options(page) == [MODEL]
    # and no admin link for a role without the admin permission
    assert page.locator(".side-link", has_text="Admin").count() == 0
    context.close()
    assert web_server.console_errors == []
