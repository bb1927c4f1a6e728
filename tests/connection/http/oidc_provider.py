"""A small OpenID Connect provider for tests: discovery, JWKS, auto-approving /authorize, /token.

It signs ID tokens with an RSA key generated per test (RS256) and checks what a
real provider checks: the client's credentials, the redirect URI, one-time
codes and the PKCE verifier. Knobs (`claims`, `sign_with`) let a test make it
misbehave in exactly one way.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlencode

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.server import free_port

CLIENT_ID = "ziggurat-test"
CLIENT_SECRET = "provider-secret"


@functools.cache
def signing_key() -> RSAKey:
    """One RSA key per test run: generating one costs about 0.1 s."""
    return RSAKey.generate_key(2048, parameters={"kid": "k1"})


@dataclass
class _Grant:
    redirect_uri: str
    nonce: str
    challenge: str


@dataclass
class OidcTestProvider:
    issuer: str
    key: RSAKey = field(default_factory=lambda: signing_key())
    subject: str = "subject-1"
    email: str = "sso@example.com"
    email_verified: bool = True
    claims: dict[str, object] = field(default_factory=dict)
    sign_with: RSAKey | None = None
    token_requests: int = 0
    _grants: dict[str, _Grant] = field(default_factory=dict)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        return app

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": [self.key.as_dict(private=False)]})

    async def _authorize(self, request: web.Request) -> web.Response:
        query = request.query
        assert query["client_id"] == CLIENT_ID and query["response_type"] == "code"
        assert query["code_challenge_method"] == "S256" and "openid" in query["scope"].split()
        code = secrets.token_urlsafe(16)
        self._grants[code] = _Grant(query["redirect_uri"], query["nonce"], query["code_challenge"])
        raise web.HTTPFound(query["redirect_uri"] + "?" + urlencode({"code": code, "state": query["state"]}))

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = await request.post()
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return web.json_response({"error": "invalid_client"}, status=401)
        grant = self._grants.pop(str(form.get("code")), None)
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if grant is None or grant.redirect_uri != form.get("redirect_uri") or grant.challenge != challenge:
            return web.json_response({"error": "invalid_grant"}, status=400)
        now = int(time.time())
        claims: dict[str, object] = {
            "iss": self.issuer, "sub": self.subject, "aud": CLIENT_ID, "iat": now, "exp": now + 300,
            "nonce": grant.nonce, "email": self.email, "email_verified": self.email_verified,
        }  # fmt: skip
        claims.update(self.claims)
        signer = self.sign_with or self.key
        id_token = jwt.encode({"alg": "RS256", "kid": signer.kid}, claims, signer)
        return web.json_response({"access_token": "opaque", "token_type": "Bearer", "id_token": id_token})


@asynccontextmanager
async def running_provider() -> AsyncIterator[OidcTestProvider]:
    port = free_port()
    provider = OidcTestProvider(issuer=f"http://127.0.0.1:{port}")
    runner = web.AppRunner(provider.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield provider
    finally:
        await runner.cleanup()
