"""A single sign-on the web app started fails onto its login page (`/login?error=<code>`), never raw JSON.

Sign-ins started without `next` (API clients) keep their JSON errors; the same
failures are checked both ways against the local provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from joserfc.jwk import RSAKey

from tests.connection.http.inprocess import app_client, app_settings, assert_error, cheap_passwords
from tests.connection.http.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcTestProvider, running_provider
from tests.server import free_port
from ziggurat.app import build_app

WEB_LOGIN = "/api/auth/oidc/login?next=" + quote("/c/abc")
API_LOGIN = "/api/auth/oidc/login"


def _settings(tmp_path: Path, issuer: str) -> object:
    oidc = {
        "issuer": issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
        "redirect_url": "http://test/api/auth/oidc/callback",
    }  # fmt: skip
    return app_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'z.db'}", oidc=oidc)


@pytest.fixture
async def provider() -> AsyncIterator[OidcTestProvider]:
    async with running_provider() as provider:
        yield provider


@pytest.fixture
async def client(
    tmp_path: Path, provider: OidcTestProvider, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    cheap_passwords(monkeypatch)
    async with app_client(build_app(_settings(tmp_path, provider.issuer))) as client:  # type: ignore[arg-type]
        yield client


async def _start(client: httpx.AsyncClient, login: str) -> str:
    """The provider URL the sign-in sends the browser to (the state cookie is now in `client`)."""
    start = await client.get(login)
    assert start.status_code == 302, start.text
    location: str = start.headers["location"]
    return location


async def _approved_callback(client: httpx.AsyncClient, login: str) -> httpx.Response:
    async with httpx.AsyncClient() as browser:
        approved = await browser.get(await _start(client, login))
    assert approved.status_code == 302
    return await client.get(approved.headers["location"])


def _assert_login_page(response: httpx.Response, code: str) -> None:
    assert response.status_code == 302, response.text
    assert response.headers["location"] == f"/login?error={code}"
    cleared = [v for v in response.headers.get_list("set-cookie") if v.startswith("ziggurat_oidc=")]
    assert cleared and "max-age=0" in cleared[0].lower()
    assert not any(v.startswith("ziggurat_refresh=") for v in response.headers.get_list("set-cookie"))


async def _provider_refusal(client: httpx.AsyncClient, login: str) -> httpx.Response:
    """The provider sends the person back with `error=access_denied` (they pressed Cancel)."""
    state = parse_qs(urlsplit(await _start(client, login)).query)["state"][0]
    return await client.get("/api/auth/oidc/callback", params={"error": "access_denied", "state": state})


async def test_a_provider_refusal_lands_on_the_login_page_for_the_web_app(client: httpx.AsyncClient) -> None:
    _assert_login_page(await _provider_refusal(client, WEB_LOGIN), "sso_denied")
    client.cookies.clear()
    assert_error(await _provider_refusal(client, API_LOGIN), 401, "authentication_error")


async def test_an_id_token_that_does_not_verify_is_sso_failed(
    client: httpx.AsyncClient, provider: OidcTestProvider
) -> None:
    provider.sign_with = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    _assert_login_page(await _approved_callback(client, WEB_LOGIN), "sso_failed")
    assert_error(await _approved_callback(client, API_LOGIN), 401)


async def test_an_unverified_email_is_sso_not_allowed(
    client: httpx.AsyncClient, provider: OidcTestProvider
) -> None:
    provider.email_verified = False
    _assert_login_page(await _approved_callback(client, WEB_LOGIN), "sso_not_allowed")
    assert_error(await _approved_callback(client, API_LOGIN), 403)


async def test_a_state_that_does_not_match_is_sso_expired(client: httpx.AsyncClient) -> None:
    await _start(client, WEB_LOGIN)
    tampered = await client.get("/api/auth/oidc/callback", params={"code": "c", "state": "not-this-one"})
    _assert_login_page(tampered, "sso_expired")


async def test_without_a_state_cookie_from_us_the_answer_stays_json(client: httpx.AsyncClient) -> None:
    # Nothing proves the web app started this one, so there is no page to send it to.
    client.cookies.set("ziggurat_oidc", "forged.token.value", path="/api/auth/oidc")
    answer = await client.get("/api/auth/oidc/callback", params={"code": "c", "state": "s"})
    assert_error(answer, 400)


async def test_an_unreachable_provider_at_the_start_lands_on_the_login_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cheap_passwords(monkeypatch)
    nobody = f"http://127.0.0.1:{free_port()}"
    async with app_client(build_app(_settings(tmp_path, nobody))) as client:  # type: ignore[arg-type]
        _assert_login_page(await client.get(WEB_LOGIN), "sso_unavailable")
        assert_error(await client.get(API_LOGIN), 502)
        assert_error(await client.get("/api/auth/oidc/login?next=//evil.example"), 400)
