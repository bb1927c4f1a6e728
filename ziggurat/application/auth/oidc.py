"""Sign-in with an OpenID Connect provider (authorization code flow with PKCE).

`start_login` makes a fresh `state`, `nonce` and PKCE verifier and returns the
provider URL to send the browser to, plus those three values in a short-lived
token signed with our key, which the edge keeps in an HttpOnly cookie. Nothing
is stored server-side, so the callback may land on any replica.
`finish_login` checks that the `state` the provider sent back is the one in
that cookie (a login started by someone else, CSRF, fails here), exchanges the
code with the verifier, verifies the ID token (`oidc_provider.py`) against the
cookie's nonce, and signs the user in:

- an identity (`issuer`, `subject`) seen before signs in its linked user;
- otherwise the provider must vouch for the email (`email_verified`): an
  existing account with that email is linked (the provider is one the operator
  chose to trust), or a new account is created under the registration rules
  (closed registration admits only a pending invitation for that email).

The answer is our own token pair. A login started with a `next_path` (the web
app's button) carries that path in the signed state token, so the edge can
send the browser back there with a cookie session instead of answering JSON;
only a same-origin relative path is accepted (`is_safe_next_path`), so the
sign-in cannot be turned into an open redirect.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode

import jwt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ziggurat.application.audit.log import AuditRepository, audit_event
from ziggurat.application.audit.models import AuditAction
from ziggurat.application.auth.models import UserIdentity
from ziggurat.application.auth.oidc_provider import SIGN_IN_FAILED, IdTokenClaims, OidcProvider
from ziggurat.application.auth.schemas import TokenPair
from ziggurat.application.auth.sessions import SessionService
from ziggurat.application.store.database import Database
from ziggurat.application.store.orm import new_id, utcnow
from ziggurat.application.users.models import User
from ziggurat.application.users.repository import UserRepository
from ziggurat.application.users.service import UserService, normalize_email
from ziggurat.config import OidcSettings
from ziggurat.errors import Conflict, Forbidden, InvalidRequest, Unauthenticated
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

STATE_TOKEN_TYPE = "oidc_state"
_BAD_STATE = "This sign-in was not started here or has expired; start it again."


@dataclass(slots=True, frozen=True)
class OidcLoginStart:
    authorization_url: str
    state_token: str
    max_age_s: int


@dataclass(slots=True, frozen=True)
class OidcSignIn:
    tokens: TokenPair
    next_path: str | None
    """Where the web app asked to land after sign-in; None for a JSON answer."""


def is_safe_next_path(path: str) -> bool:
    """A path on this server (`/c/abc?x=1`), never another origin (`//evil`, `/\\evil`, `https://…`)."""
    return (
        path.startswith("/")
        and not path.startswith("//")
        and "\\" not in path  # browsers read `/\\host` as `//host`
        and all(" " < character < "\x7f" for character in path)
    )


class OidcService:
    def __init__(
        self,
        *,
        settings: OidcSettings,
        provider: OidcProvider,
        database: Database,
        users: UserService,
        sessions: SessionService,
        signing_key: str,
    ) -> None:
        assert settings.redirect_url is not None
        self._settings = settings
        self._redirect_url = settings.redirect_url
        self._provider = provider
        self._database = database
        self._users = users
        self._sessions = sessions
        self._signing_key = signing_key

    @property
    def button_name(self) -> str:
        return self._settings.button_name

    async def start_login(self, next_path: str | None = None) -> OidcLoginStart:
        if next_path is not None and not is_safe_next_path(next_path):
            raise InvalidRequest("`next` must be a path on this server, such as /c/123.", param="next")
        metadata = await self._provider.metadata()
        state, nonce, verifier = (
            secrets.token_urlsafe(32),
            secrets.token_urlsafe(32),
            secrets.token_urlsafe(48),
        )
        query = {
            "response_type": "code",
            "client_id": self._settings.client_id or "",
            "redirect_uri": self._redirect_url,
            "scope": " ".join(self._settings.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": _s256(verifier),
            "code_challenge_method": "S256",
        }
        now = utcnow()
        claims = {
            "typ": STATE_TOKEN_TYPE,
            "state": state,
            "nonce": nonce,
            "verifier": verifier,
            "iat": now,
            "exp": now + timedelta(seconds=self._settings.login_timeout_s),
        }
        if next_path is not None:
            claims["next"] = next_path
        separator = "&" if "?" in metadata.authorization_endpoint else "?"
        return OidcLoginStart(
            authorization_url=metadata.authorization_endpoint + separator + urlencode(query),
            state_token=jwt.encode(claims, self._signing_key, algorithm="HS256"),
            max_age_s=self._settings.login_timeout_s,
        )

    async def finish_login(
        self, *, code: str, state: str, state_token: str | None, client_ip: str | None = None
    ) -> OidcSignIn:
        nonce, verifier, next_path = self._check_state(state, state_token)
        id_token = await self._provider.exchange_code(
            code, code_verifier=verifier, redirect_url=self._redirect_url
        )
        claims = await self._provider.verify_id_token(id_token, nonce=nonce)
        user = await self._user_for(claims)
        if not user.is_active:
            raise Unauthenticated("This account is disabled.", code=SIGN_IN_FAILED)
        async with self._database.session() as session:
            tokens = await self._sessions.start(user, session)
            AuditRepository(session).add(
                audit_event(
                    AuditAction.LOGIN_SUCCEEDED,
                    actor_id=user.id,
                    user_id=user.id,
                    ip=client_ip,
                    details={"method": "oidc", "issuer": claims.issuer},
                )
            )
            await session.commit()
        log.info("user_signed_in", user_id=user.id, method="oidc")
        return OidcSignIn(tokens=tokens, next_path=next_path)

    def web_next_path(self, state_token: str | None) -> str | None:
        """The web app's `next` in a state token signed by us, expired or not; None for API sign-ins.

        Only says where a failure should land (the login page rather than a JSON body): an
        expired token still proves the web app started the sign-in, and nothing here signs anyone in.
        """
        if not state_token:
            return None
        try:
            claims = jwt.decode(
                state_token, self._signing_key, algorithms=["HS256"], options={"verify_exp": False}
            )
        except jwt.InvalidTokenError:
            return None
        next_path = claims.get("next")
        if claims.get("typ") != STATE_TOKEN_TYPE or not isinstance(next_path, str):
            return None
        return next_path if is_safe_next_path(next_path) else None

    def _check_state(self, state: str, state_token: str | None) -> tuple[str, str, str | None]:
        if not state_token:
            raise InvalidRequest(_BAD_STATE, param="state")
        try:
            claims = jwt.decode(
                state_token,
                self._signing_key,
                algorithms=["HS256"],
                options={"require": ["typ", "state", "nonce", "verifier", "exp"]},
            )
        except jwt.InvalidTokenError as exc:
            raise InvalidRequest(_BAD_STATE, param="state") from exc
        if claims["typ"] != STATE_TOKEN_TYPE or not hmac.compare_digest(str(claims["state"]), state):
            raise InvalidRequest(_BAD_STATE, param="state")
        next_path = claims.get("next")
        if not isinstance(next_path, str) or not is_safe_next_path(next_path):
            next_path = None
        return str(claims["nonce"]), str(claims["verifier"]), next_path

    async def _user_for(self, claims: IdTokenClaims) -> User:
        async with self._database.session() as session:
            identity = await session.scalar(
                select(UserIdentity).where(
                    UserIdentity.issuer == claims.issuer, UserIdentity.subject == claims.subject
                )
            )
            if identity is not None:
                user = await UserRepository(session).get(identity.user_id)
                if user is None:
                    raise Unauthenticated("This account no longer exists.", code=SIGN_IN_FAILED)
                identity.last_login_at = utcnow()
                await session.commit()
                return user
        if not claims.email or not claims.email_verified:
            raise Forbidden("The identity provider did not confirm an email address for this account.")
        email = normalize_email(claims.email)
        async with self._database.session() as session:
            user = await UserRepository(session).get_by_email(email)
        if user is None:
            try:
                user = await self._users.create_account(email, None, accept_invitation_by_email=True)
            except Conflict:
                # Another sign-in of the same person created it a moment ago.
                async with self._database.session() as session:
                    user = await UserRepository(session).get_by_email(email)
                if user is None:
                    raise
        await self._link(user, claims, email)
        return user

    async def _link(self, user: User, claims: IdTokenClaims, email: str) -> None:
        now = utcnow()
        identity = UserIdentity(
            id=new_id(),
            user_id=user.id,
            issuer=claims.issuer,
            subject=claims.subject,
            email=email,
            created_at=now,
            last_login_at=now,
        )
        async with self._database.session() as session:
            session.add(identity)
            AuditRepository(session).add(
                audit_event(
                    AuditAction.IDENTITY_LINKED,
                    actor_id=user.id,
                    user_id=user.id,
                    details={"issuer": claims.issuer},
                )
            )
            try:
                await session.commit()
            except IntegrityError:
                # A racing sign-in of the same identity linked it first; nothing left to do.
                await session.rollback()

    async def aclose(self) -> None:
        await self._provider.aclose()


def _s256(verifier: str) -> str:
    """The PKCE S256 code challenge of a verifier (RFC 7636)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
