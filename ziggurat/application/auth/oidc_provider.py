"""Talking to an OpenID Connect provider: discovery, the token endpoint, and ID-token checks.

HTTP goes through one `aiohttp.ClientSession` (the project's client for calls
the server makes). The discovery document is cached for an hour; the JWKS is
cached too and fetched again, at most once a minute, when a token names a key
we do not know (the provider rotated its keys). ID tokens are verified with
joserfc (authlib's JOSE library): signature against the provider's JWKS with
asymmetric algorithms only (never `none` or HS*, whose key would be our client
secret), then issuer, audience (and `azp` when there are several audiences),
expiry, issued-at and the nonce of this sign-in.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from urllib.parse import quote_plus

import aiohttp
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ziggurat.config import OidcSettings
from ziggurat.errors import ConfigurationError, Unauthenticated, UpstreamFailed
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

# The error code of every refused OIDC sign-in (the default `invalid_api_key` would mislead).
SIGN_IN_FAILED = "sign_in_failed"
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
_DISCOVERY_TTL_S = 3600.0
_JWKS_REFETCH_S = 60.0
_LEEWAY_S = 60


@dataclass(slots=True, frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    auth_methods: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class IdTokenClaims:
    issuer: str
    subject: str
    email: str | None
    email_verified: bool


class OidcProvider:
    """One configured provider. `aclose()` closes its HTTP session."""

    def __init__(self, settings: OidcSettings) -> None:
        if not settings.is_enabled or settings.issuer is None or settings.client_id is None:
            raise ConfigurationError("OIDC needs ZIGGURAT_OIDC__ISSUER, __CLIENT_ID and __REDIRECT_URL.")
        self._settings = settings
        self._issuer = settings.issuer.removesuffix("/.well-known/openid-configuration").rstrip("/")
        self._client_id = settings.client_id
        self._http: aiohttp.ClientSession | None = None
        self._metadata: tuple[float, ProviderMetadata] | None = None
        self._keys: tuple[float, KeySet] | None = None

    async def metadata(self) -> ProviderMetadata:
        now = time.monotonic()
        if self._metadata is not None and now - self._metadata[0] < _DISCOVERY_TTL_S:
            return self._metadata[1]
        document = await self._get_json(self._issuer + "/.well-known/openid-configuration")
        methods = document.get("token_endpoint_auth_methods_supported")
        try:
            metadata = ProviderMetadata(
                issuer=str(document["issuer"]),
                authorization_endpoint=str(document["authorization_endpoint"]),
                token_endpoint=str(document["token_endpoint"]),
                jwks_uri=str(document["jwks_uri"]),
                auth_methods=tuple(str(method) for method in methods) if isinstance(methods, list) else (),
            )
        except (KeyError, TypeError) as exc:
            raise UpstreamFailed("The identity provider's discovery document is incomplete.") from exc
        if metadata.issuer.rstrip("/") != self._issuer:
            raise UpstreamFailed("The identity provider's discovery document names another issuer.")
        self._metadata = (now, metadata)
        return metadata

    async def exchange_code(self, code: str, *, code_verifier: str, redirect_url: str) -> str:
        """The ID token the token endpoint returns for an authorization code."""
        metadata = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_url,
            "code_verifier": code_verifier,
        }
        headers: dict[str, str] = {}
        secret = self._settings.client_secret.get_secret_value() if self._settings.client_secret else None
        if secret is not None and metadata.auth_methods == ("client_secret_post",):
            form.update(client_id=self._client_id, client_secret=secret)
        elif secret is not None:
            headers["Authorization"] = _basic_auth(self._client_id, secret)
        else:
            form["client_id"] = self._client_id
        try:
            async with self._session().post(metadata.token_endpoint, data=form, headers=headers) as response:
                body = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise UpstreamFailed("The identity provider's token endpoint did not answer.") from exc
        if status >= 400 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else None
            log.warning("oidc_code_refused", status=status, error=error)
            raise Unauthenticated(
                "The identity provider refused the authorization code; sign in again.", code=SIGN_IN_FAILED
            )
        id_token = body.get("id_token")
        if not isinstance(id_token, str):
            raise UpstreamFailed("The identity provider returned no ID token.")
        return id_token

    async def verify_id_token(self, id_token: str, *, nonce: str) -> IdTokenClaims:
        metadata = await self.metadata()
        try:
            token = await self._decode(id_token, metadata)
            claims = token.claims
            jwt.JWTClaimsRegistry(
                leeway=_LEEWAY_S,
                iss={"essential": True, "value": metadata.issuer},
                aud={"essential": True, "value": self._client_id},
                sub={"essential": True},
                exp={"essential": True},
                iat={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(claims)
        except JoseError as exc:
            log.warning("oidc_id_token_refused", error_type=type(exc).__name__)
            raise Unauthenticated(
                "The identity provider's ID token is not valid for this sign-in.", code=SIGN_IN_FAILED
            ) from exc
        audience = claims.get("aud")
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != self._client_id:
            raise Unauthenticated(
                "The identity provider's ID token was issued to another client.", code=SIGN_IN_FAILED
            )
        email = claims.get("email")
        return IdTokenClaims(
            issuer=metadata.issuer,
            subject=str(claims["sub"]),
            email=email if isinstance(email, str) else None,
            email_verified=claims.get("email_verified") is True,
        )

    async def _decode(self, id_token: str, metadata: ProviderMetadata) -> jwt.Token:
        keys = await self._key_set(metadata, refresh=False)
        try:
            return jwt.decode(id_token, keys, algorithms=list(ASYMMETRIC_ALGORITHMS))
        except (ValueError, JoseError):
            # Maybe the provider rotated its keys; look once more (rate-limited), then give up.
            fresh = await self._key_set(metadata, refresh=True)
            if fresh is keys:
                raise
            return jwt.decode(id_token, fresh, algorithms=list(ASYMMETRIC_ALGORITHMS))

    async def _key_set(self, metadata: ProviderMetadata, *, refresh: bool) -> KeySet:
        now = time.monotonic()
        if self._keys is not None and (not refresh or now - self._keys[0] < _JWKS_REFETCH_S):
            return self._keys[1]
        document = await self._get_json(metadata.jwks_uri)
        try:
            keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
        except (ValueError, KeyError, TypeError, JoseError) as exc:
            raise UpstreamFailed("The identity provider's signing keys could not be read.") from exc
        self._keys = (now, keys)
        return keys

    async def _get_json(self, url: str) -> dict[str, object]:
        try:
            async with self._session().get(url) as response:
                response.raise_for_status()
                document = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("oidc_provider_unreachable", url=url, error_type=type(exc).__name__)
            raise UpstreamFailed("The identity provider did not answer; try again later.") from exc
        if not isinstance(document, dict):
            raise UpstreamFailed("The identity provider answered with something unexpected.")
        return document

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            timeout = aiohttp.ClientTimeout(total=self._settings.http_timeout_s)
            self._http = aiohttp.ClientSession(timeout=timeout)
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()


def _basic_auth(client_id: str, secret: str) -> str:
    """`client_secret_basic`: both parts form-encoded first, as RFC 6749 section 2.3.1 asks."""
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()
