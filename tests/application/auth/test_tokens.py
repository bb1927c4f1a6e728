"""Access tokens: only tokens we minted, unexpired, with the expected algorithm and type pass."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest

from ziggurat.application.auth.tokens import AccessTokens, digest, new_secret
from ziggurat.errors import Unauthenticated

KEY = "s" * 64
TOKENS = AccessTokens(secret_key=KEY, algorithm="HS256", ttl_s=900)


def _claims(**overrides: object) -> dict[str, object]:
    now = datetime.now(UTC)
    claims: dict[str, object] = {
        "sub": "user-1",
        "role": "user",
        "scopes": ["chat"],
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "jti": "j1",
        "typ": "access",
    }
    claims.update(overrides)
    return claims


def test_an_issued_token_decodes_to_its_claims() -> None:
    issued = TOKENS.issue(user_id="user-1", role="admin", scopes=frozenset({"chat", "admin"}))
    claims = TOKENS.decode(issued.token)

    assert issued.expires_in_s == 900
    assert (claims.user_id, claims.role, claims.scopes) == ("user-1", "admin", frozenset({"chat", "admin"}))
    assert jwt.get_unverified_header(issued.token)["alg"] == "HS256"


def test_tokens_are_unique() -> None:
    first = TOKENS.issue(user_id="u", role="user", scopes=frozenset({"chat"}))
    second = TOKENS.issue(user_id="u", role="user", scopes=frozenset({"chat"}))
    assert TOKENS.decode(first.token).token_id != TOKENS.decode(second.token).token_id


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(jwt.encode(_claims(), "another-key-" + "x" * 52, algorithm="HS256"), id="other-key"),
        pytest.param(jwt.encode(_claims(), None, algorithm="none"), id="alg-none"),
        pytest.param(jwt.encode(_claims(), KEY, algorithm="HS512"), id="other-algorithm"),
        pytest.param(jwt.encode(_claims(typ="refresh"), KEY, algorithm="HS256"), id="wrong-type"),
        pytest.param(jwt.encode({k: v for k, v in _claims().items() if k != "jti"}, KEY), id="missing-claim"),
        pytest.param(jwt.encode(_claims(scopes="chat"), KEY, algorithm="HS256"), id="scopes-not-a-list"),
        pytest.param("not-a-jwt", id="garbage"),
    ],
)
def test_foreign_or_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(Unauthenticated, match="invalid"):
        TOKENS.decode(token)


def test_an_expired_token_is_refused_with_a_clear_message() -> None:
    past = datetime.now(UTC) - timedelta(hours=1)
    token = jwt.encode(_claims(iat=past, exp=past + timedelta(minutes=5)), KEY, algorithm="HS256")
    with pytest.raises(Unauthenticated, match="expired"):
        TOKENS.decode(token)


def test_secrets_are_random_and_digests_are_hex_sha256() -> None:
    first, second = new_secret(), new_secret()
    assert first != second and len(first) >= 43
    assert len(digest(first)) == 64 and digest(first) == digest(first) != digest(second)
