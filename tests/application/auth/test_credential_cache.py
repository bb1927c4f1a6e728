from ziggurat.application.auth.credential_cache import CredentialCache
from ziggurat.application.auth.principal import Principal, UserId


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def principal(user: str, key: str | None = None) -> Principal:
    return Principal(user_id=UserId(user), role="user", scopes=frozenset({"chat"}), api_key_id=key)


def test_entries_expire_after_ttl() -> None:
    clock = FakeClock()
    cache = CredentialCache(ttl_s=5, clock=clock)
    cache.put("d1", principal("u1"))
    clock.now += 4.9
    assert cache.get("d1") == principal("u1")
    clock.now += 0.2
    assert cache.get("d1") is None


def test_not_after_caps_the_entry() -> None:
    clock = FakeClock()
    cache = CredentialCache(ttl_s=60, clock=clock)
    cache.put("d1", principal("u1"), not_after=clock.now + 1)
    clock.now += 1.5
    assert cache.get("d1") is None


def test_evict_by_key_and_user() -> None:
    cache = CredentialCache(ttl_s=60)
    cache.put("a", principal("u1", "k1"))
    cache.put("b", principal("u1", "k2"))
    cache.put("c", principal("u2", "k3"))
    cache.evict_api_key("k1")
    assert cache.get("a") is None and cache.get("b") is not None
    cache.evict_user("u1")
    assert cache.get("b") is None and cache.get("c") is not None


def test_bounded_and_disabled_with_zero_ttl() -> None:
    cache = CredentialCache(ttl_s=60, max_entries=2)
    for name in ("a", "b", "c"):
        cache.put(name, principal(name))
    assert cache.get("a") is None and cache.get("c") is not None
    off = CredentialCache(ttl_s=0)
    off.put("a", principal("a"))
    assert off.get("a") is None
