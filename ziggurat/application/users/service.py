"""User accounts: registration rules and lookup.

Rules: emails are trimmed and lower-cased before they are stored or compared;
the first account ever created becomes an admin, so a fresh install can be
administered without a separate bootstrap step; once that account exists,
new sign-ups are accepted only while `allow_registration` is on and, when an
allow-list of email domains is set, only from those domains. An invitation
(one-time token from an admin, for one email and role) admits its invitee
even when registration is closed or the domain is not listed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ziggurat.application.audit.log import AuditRepository, audit_event
from ziggurat.application.audit.models import AuditAction
from ziggurat.application.auth.passwords import PasswordHasher, check_password_policy
from ziggurat.application.auth.principal import Principal
from ziggurat.application.auth.tokens import digest
from ziggurat.application.roles.policy import ROLE_ADMIN, ROLE_USER
from ziggurat.application.roles.service import find_policy
from ziggurat.application.store.database import Database
from ziggurat.application.store.orm import new_id, utcnow
from ziggurat.application.users.models import Invitation, User
from ziggurat.application.users.repository import InvitationRepository, UserRepository
from ziggurat.application.users.schemas import UserOut
from ziggurat.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthenticated
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

# Deliberately loose: the only real check of an address is mail arriving there.
_EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_BAD_INVITATION = "This invitation is invalid, already used, revoked or expired."
_TAKEN = "An account with this email already exists."


def normalize_email(email: str) -> str:
    normalized = email.strip().lower()
    if len(normalized) > 320 or not _EMAIL_PATTERN.fullmatch(normalized):
        raise InvalidRequest("Enter a valid email address.", param="email")
    return normalized


class UserService:
    def __init__(
        self,
        *,
        database: Database,
        passwords: PasswordHasher,
        allow_registration: bool,
        allowed_email_domains: Sequence[str] = (),
    ) -> None:
        self._database = database
        self._passwords = passwords
        self._allow_registration = allow_registration
        self._allowed_domains = frozenset(
            domain.strip().lower().lstrip("@") for domain in allowed_email_domains
        )

    @property
    def is_registration_open(self) -> bool:
        return self._allow_registration

    async def register(self, email: str, password: str, *, invitation: str | None = None) -> User:
        """Create an account; the very first one is an admin. Raises `Conflict` for a taken email."""
        email = normalize_email(email)
        check_password_policy(password, email=email)
        password_hash = await self._passwords.hash(password)
        return await self.create_account(email, password_hash, invitation=invitation)

    async def create_account(
        self,
        email: str,
        password_hash: str | None,
        *,
        invitation: str | None = None,
        accept_invitation_by_email: bool = False,
    ) -> User:
        """Create an account for a normalised email under the registration rules.

        `password_hash` is None for accounts that sign in through OIDC; those may
        be admitted by a pending invitation for their (verified) email.
        """
        async with self._database.session() as session:
            users = UserRepository(session)
            await users.serialize_registrations()
            is_first = await users.count() == 0
            if await users.get_by_email(email) is not None:
                raise Conflict(_TAKEN, param="email")
            invited = await self._find_invitation(session, email, invitation, accept_invitation_by_email)
            if invited is not None:
                role = invited.role
            elif is_first:
                role = ROLE_ADMIN
            else:
                self._check_open_registration(email)
                role = ROLE_USER
            user = User(
                id=new_id(),
                email=email,
                password_hash=password_hash,
                role=role,
                is_active=True,
                session_version=0,
                created_at=utcnow(),
            )
            try:
                await users.add(user)
                if invited is not None:
                    await self._accept(session, invited, user)
                AuditRepository(session).add(
                    audit_event(
                        AuditAction.USER_REGISTERED,
                        actor_id=user.id,
                        user_id=user.id,
                        details={"role": role, "password": password_hash is not None},
                    )
                )
                await session.commit()
            except IntegrityError as exc:
                raise Conflict(_TAKEN, param="email") from exc
        log.info("user_registered", user_id=user.id, role=user.role)
        return user

    def _check_open_registration(self, email: str) -> None:
        if not self._allow_registration:
            raise Forbidden("Registration is closed on this server; ask an administrator for an invitation.")
        domain = email.rsplit("@", 1)[1]
        if self._allowed_domains and domain not in self._allowed_domains:
            raise Forbidden("Sign-up is not open to this email domain.", param="email")

    async def _find_invitation(
        self, session: AsyncSession, email: str, token: str | None, by_email: bool
    ) -> Invitation | None:
        invitations = InvitationRepository(session)
        now = utcnow()
        if token is None:
            return await invitations.pending_for_email(email, now=now) if by_email else None
        invitation = await invitations.get_by_hash(digest(token))
        if (
            invitation is None
            or invitation.accepted_at is not None
            or invitation.revoked_at is not None
            or invitation.expires_at <= now
        ):
            raise Forbidden(_BAD_INVITATION, param="invitation")
        if invitation.email != email:
            raise Forbidden("This invitation is for another email address.", param="email")
        if await find_policy(session, invitation.role) is None:
            raise Conflict("The role of this invitation no longer exists; ask for a new invitation.")
        return invitation

    async def _accept(self, session: AsyncSession, invitation: Invitation, user: User) -> None:
        if not await InvitationRepository(session).mark_accepted(
            invitation.id, user_id=user.id, now=utcnow()
        ):
            raise Forbidden(_BAD_INVITATION, param="invitation")
        AuditRepository(session).add(
            audit_event(
                AuditAction.INVITATION_ACCEPTED,
                actor_id=user.id,
                user_id=user.id,
                details={"invitation_id": invitation.id, "role": invitation.role},
            )
        )

    async def me(self, principal: Principal) -> UserOut:
        async with self._database.session() as session:
            user = await UserRepository(session).get(principal.user_id)
        if user is None:
            raise NotFound("This account no longer exists.")
        if not user.is_active:
            raise Unauthenticated("This account is disabled.")
        return UserOut.model_validate(user)
