"""Browser tests: Debian's Chromium driven by Playwright against a real ziggurat server.

One server for all of `tests/web` (every test signs up its own accounts, so
they do not see each other's conversations; package scope, because Playwright's
sync API holds the thread's event loop, which async tests elsewhere need back
when the run leaves this folder), serving the SPA and a
scripted engine (`engines.WebScriptedEngine`) in place of a model; tests that
need other settings (single sign-on) start their own. Playwright's own browser
downloads are not used: the tests launch `/usr/bin/chromium` (or
`ZIGGURAT_TEST_CHROMIUM`). When Playwright or Chromium is missing the tests are
skipped, with the reason, and fail under `CI=true`. Screenshots go to
`artifacts/web/` at the repository root (git-ignored).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import httpx
import pytest

from tests.conftest import unavailable
from tests.server import RunningServer, running_server
from tests.web.engines import WebScriptedEngine
from ziggurat import app as app_module
from ziggurat.application import container
from ziggurat.application.auth.passwords import PasswordHasher
from ziggurat.config import ConversationSettings, EngineSettings, Settings

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Playwright

CHROMIUM = os.environ.get("ZIGGURAT_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "web"
PASSWORD = "correct horse battery"
ADMIN_EMAIL = "admin@example.com"


def _unavailable(reason: str) -> NoReturn:
    unavailable(f"{reason} (browser tests must run under CI=true)")


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _unavailable(f"the playwright package is not installed: {exc}")
    if not Path(CHROMIUM).exists():
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set ZIGGURAT_TEST_CHROMIUM)")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, args=["--no-sandbox", "--disable-background-networking"]
    )
    try:
        yield browser
    finally:
        browser.close()


@dataclass
class WebServer:
    running: RunningServer
    engine: WebScriptedEngine
    admin_token: str
    console_errors: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.running.base_url

    def api(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def sign_in(self, email: str) -> str:
        """An access token for `email` (body-token sign-in, as an API client does)."""
        with self.api() as client:
            response = client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
            assert response.status_code == 200, response.text
            token: str = response.json()["access_token"]
            return token


@pytest.fixture(scope="package")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """A server with the SPA and the scripted engine; its first account (the admin) already exists."""
    tmp = tmp_path_factory.mktemp("web")
    engine = WebScriptedEngine()
    settings = Settings(
        data_dir=tmp,
        cache_dir=tmp / "cache",
        engine=EngineSettings(kind="demo"),
        conversations=ConversationSettings(auto_title=False),
        secret_key="w" * 48,  # type: ignore[arg-type]
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app_module, "build_engine", lambda _settings: engine)
        patch.setattr(container, "PasswordHasher", lambda: PasswordHasher(time_cost=1, memory_cost_kib=64))
        with running_server(settings) as running:
            with httpx.Client(base_url=running.base_url, timeout=30) as client:
                registered = client.post(
                    "/api/auth/register", json={"email": ADMIN_EMAIL, "password": PASSWORD}
                )
                assert registered.status_code == 201, registered.text
                token = registered.json()["tokens"]["access_token"]
            yield WebServer(running=running, engine=engine, admin_token=token)


@pytest.fixture(autouse=True)
def _fresh_console(request: pytest.FixtureRequest) -> None:
    """Each test judges only its own pages' script errors, though the server is shared."""
    if "web_server" in request.fixturenames:
        request.getfixturevalue("web_server").console_errors.clear()


def new_page(browser: Browser, server: WebServer, **context_options: Any) -> tuple[BrowserContext, Page]:
    """A fresh browser profile on the server; console errors and CSP reports are collected on `server`."""
    options: dict[str, Any] = {"base_url": server.url, "locale": "en-US", **context_options}
    context = browser.new_context(**options)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.on("console", lambda message: _note(server, message.type, message.text))
    page.on("pageerror", lambda error: server.console_errors.append(f"pageerror: {error}"))
    return context, page


def _note(server: WebServer, kind: str, text: str) -> None:
    """Script errors and CSP refusals; an API answer's 4xx status (expected in places) is not one."""
    if "Failed to load resource" in text:
        return
    if kind == "error" or "Content Security Policy" in text:
        server.console_errors.append(text)


def register_in_browser(page: Page, email: str) -> None:
    page.goto("/register")
    page.locator("#login-email").fill(email)
    page.locator("#login-password").fill(PASSWORD)
    page.locator(".login-form button[type=submit]").click()
    page.locator(".composer-input").wait_for()


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def sign_in_in_browser(page: Page, email: str) -> None:
    page.goto("/login")
    page.locator("#login-email").fill(email)
    page.locator("#login-password").fill(PASSWORD)
    page.locator(".login-form button[type=submit]").click()
    page.locator(".composer-input").wait_for()


def register_by_api(server: WebServer, email: str, role: str | None = None) -> str:
    """A new account's id; `role` (which must exist) is given by the admin."""
    with server.api() as client:
        registered = client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
        assert registered.status_code == 201, registered.text
        user_id: str = registered.json()["user"]["id"]
    if role is not None:
        with server.api(server.admin_token) as admin:
            moved = admin.patch(f"/api/admin/users/{user_id}", json={"role": role})
            assert moved.status_code == 200, moved.text
    return user_id
