"""Single sign-on from the login page: success signs the browser in; a failure shows a message, not JSON.

This module runs its own server with OIDC set up against the local test provider
(`tests/connection/http/oidc_provider.py`, here on its own event loop in a thread).
The provider must know the callback address before the server has a port, so the
browser reaches the server through the test proxy, whose port is known in advance.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

from tests.connection.http.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcTestProvider, running_provider
from tests.server import running_server
from tests.web.conftest import WebServer, new_page, screenshot
from tests.web.engines import WebScriptedEngine
from tests.web.proxy import SeverableProxy
from ziggurat import app as app_module
from ziggurat.config import EngineSettings, OidcSettings, Settings

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.browser


SSO_BUTTON = "Continue with Test SSO"


@contextmanager
def provider_in_thread() -> Iterator[OidcTestProvider]:
    """The async test provider on an event loop of its own, for a synchronous test."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="oidc-provider", daemon=True)
    thread.start()
    running = running_provider()
    provider = asyncio.run_coroutine_threadsafe(running.__aenter__(), loop).result(timeout=10)
    try:
        yield provider
    finally:
        asyncio.run_coroutine_threadsafe(running.__aexit__(None, None, None), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture(scope="module")
def sso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebServer, OidcTestProvider, str]]:
    """(server, provider, the address the browser uses)."""
    tmp = tmp_path_factory.mktemp("sso")
    engine = WebScriptedEngine()
    with provider_in_thread() as provider:
        proxy = SeverableProxy("127.0.0.1", 0)
        settings = Settings(
            data_dir=tmp,
            cache_dir=tmp / "cache",
            engine=EngineSettings(kind="demo"),
            secret_key="s" * 48,  # type: ignore[arg-type]
            oidc=OidcSettings(
                issuer=provider.issuer,
                client_id=CLIENT_ID,
                client_secret=CLIENT_SECRET,  # type: ignore[arg-type]
                redirect_url=f"{proxy.url}/api/auth/oidc/callback",
                button_name="Test SSO",
            ),
        )
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(app_module, "build_engine", lambda _settings: engine)
            with running_server(settings) as running:
                proxy.upstream_port = running.server.config.port
                with proxy.running():
                    yield WebServer(running=running, engine=engine, admin_token=""), provider, proxy.url


def test_a_failed_sign_in_shows_a_message_on_the_login_page(
    browser: Browser, sso: tuple[WebServer, OidcTestProvider, str]
) -> None:
    server, provider, url = sso
    provider.email_verified = False
    try:
        context, page = new_page(browser, server, base_url=url)
        page.goto("/login")
        page.get_by_role("link", name=SSO_BUTTON).click()
        error = page.locator(".login-card .sso-error")
        error.wait_for()
        assert "did not confirm an email address" in error.inner_text()
        assert page.url == f"{url}/login"  # the code is taken out of the address bar
        assert '"error"' not in page.content()
        screenshot(page, "login-sso-error")

        page.reload()  # a reload does not repeat the message
        page.locator("#login-email").wait_for()
        assert page.locator(".login-card .sso-error").is_hidden()
        context.close()
    finally:
        provider.email_verified = True


def test_a_failure_message_in_chinese(browser: Browser, sso: tuple[WebServer, OidcTestProvider, str]) -> None:
    server, _, url = sso
    context, page = new_page(browser, server, base_url=url, locale="zh-CN")
    page.goto("/login?error=sso_unavailable")
    page.locator(".login-card .sso-error", has_text="暂时无法连接身份提供方").wait_for()
    page.goto("/login?error=made-up")  # an unknown code gets the general sentence
    page.locator(".login-card .sso-error", has_text="单点登录失败").wait_for()
    context.close()


def test_a_successful_sign_in_lands_in_the_app(
    browser: Browser, sso: tuple[WebServer, OidcTestProvider, str]
) -> None:
    server, _, url = sso
    context, page = new_page(browser, server, base_url=url)
    page.goto("/login")
    page.get_by_role("link", name=SSO_BUTTON).click()
    page.locator(".composer-input").wait_for()
    assert page.locator(".me-email").inner_text() == "sso@example.com"
    context.close()
    assert server.console_errors == []
