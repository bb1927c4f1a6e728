"""Workers reconciling their LoRA adapters to the desired set in Redis, with a fake engine.

The engine is a stand-in for `TransformersEngine`'s `AdapterHost` side: it
loads instantly, refuses paths under `/bad`, and its unload waits until the
adapter's running generations (counted by the test) have ended, as the real
one does. Redis is real; the gateway's view goes through `AdapterAdmin`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as redis

from ziggurat.application.auth.principal import SYSTEM
from ziggurat.application.catalog.adapters import AdapterAdmin
from ziggurat.connection.adapter_sync import AdapterReconciler, RedisAdapters
from ziggurat.errors import InvalidRequest, NotFound
from ziggurat.model.adapters import AdapterInfo, adapter_model_name
from ziggurat.model.engine import ModelInfo

pytestmark = pytest.mark.redis

BASE = ModelInfo(name="tiny", engine="fake")


class FakeHost:
    def __init__(self, startup: dict[str, str] | None = None) -> None:
        self.loaded: dict[str, str] = dict(startup or {})
        self.unloading: set[str] = set()
        self.running: dict[str, int] = {}
        self.idle: dict[str, asyncio.Event] = {}
        self.loads = 0

    def adapters(self) -> list[AdapterInfo]:
        return [
            AdapterInfo(
                name=name,
                model=adapter_model_name(BASE.name, name),
                path=path,
                running=self.running.get(name, 0),
                is_unloading=name in self.unloading,
            )
            for name, path in sorted(self.loaded.items())
        ]

    def served_models(self) -> list[ModelInfo]:
        return [BASE] + [
            dataclasses.replace(BASE, name=a.model, base_model=BASE.name)
            for a in self.adapters()
            if not a.is_unloading
        ]

    async def load_adapter(self, name: str, path: str) -> AdapterInfo:
        self.loads += 1
        if path.startswith("/bad"):
            raise InvalidRequest(f"No adapter directory at '{path}'.", param="path")
        self.loaded[name] = path
        return self.adapters()[sorted(self.loaded).index(name)]

    async def unload_adapter(self, name: str) -> None:
        if name not in self.loaded or name in self.unloading:
            raise NotFound(f"No adapter named '{name}' is loaded.")
        self.unloading.add(name)
        if self.running.get(name, 0):
            await self.idle.setdefault(name, asyncio.Event()).wait()
        del self.loaded[name]
        self.unloading.discard(name)

    def start_generation(self, name: str) -> None:
        self.running[name] = self.running.get(name, 0) + 1
        self.idle.setdefault(name, asyncio.Event()).clear()

    def end_generation(self, name: str) -> None:
        self.running[name] -= 1
        if not self.running[name]:
            self.idle[name].set()


@pytest.fixture
async def store(redis_server_url: str, key_prefix: str) -> AsyncIterator[RedisAdapters]:
    client = redis.Redis.from_url(redis_server_url)
    try:
        yield RedisAdapters(client, prefix=key_prefix)
    finally:
        keys = [key async for key in client.scan_iter(match=f"{key_prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def _eventually(check: Callable[[], bool], timeout_s: float = 3.0) -> None:
    """Poll a fake's state: it has no event to await."""
    async with asyncio.timeout(timeout_s):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_a_worker_loads_the_desired_adapters_and_unloads_removed_ones_after_their_streams(
    store: RedisAdapters,
) -> None:
    host = FakeHost(startup={"boot": "/adapters/boot"})
    advertised: list[list[str]] = []

    async def advertise() -> None:
        advertised.append([model.name for model in host.served_models()])

    reconciler = AdapterReconciler(host, store, model="tiny", worker="w1", on_change=advertise)
    await store.put("tiny", "alpha", "/adapters/alpha")
    await reconciler.reconcile()
    assert host.loaded == {"boot": "/adapters/boot", "alpha": "/adapters/alpha"}
    assert advertised[-1] == ["tiny", "tiny:alpha", "tiny:boot"]
    states = (await store.workers("tiny"))["w1"]
    assert {(s.name, s.state) for s in states} == {("alpha", "loaded"), ("boot", "loaded")}

    host.start_generation("alpha")
    await store.remove("tiny", "alpha")
    await reconciler.reconcile()
    # Refused for new requests (no longer advertised) at once, but still there for its running stream.
    assert advertised[-1] == ["tiny", "tiny:boot"]
    assert "alpha" in host.loaded
    assert [s.state for s in (await store.workers("tiny"))["w1"] if s.name == "alpha"] == ["unloading"]
    await reconciler.reconcile()  # a second pass does not unload it twice
    host.end_generation("alpha")
    await _eventually(lambda: "alpha" not in host.loaded)
    # The start-up adapter is not the registry's to remove.
    assert host.loaded == {"boot": "/adapters/boot"}


async def test_a_bad_path_is_reported_for_that_worker_and_not_retried_until_it_changes(
    store: RedisAdapters,
) -> None:
    host = FakeHost()
    reconciler = AdapterReconciler(host, store, model="tiny", worker="w1")
    await store.put("tiny", "broken", "/bad/path")
    await reconciler.reconcile()
    await reconciler.reconcile()
    assert host.loads == 1
    [state] = (await store.workers("tiny"))["w1"]
    assert (state.name, state.state, state.path) == ("broken", "error", "/bad/path")
    assert state.error is not None and "/bad/path" in state.error

    listed = await AdapterAdmin(database=None, engines=[], shared=store).list_adapters(SYSTEM, "tiny")  # type: ignore[arg-type]
    assert [(s.name, [(w.worker, w.state) for w in s.workers]) for s in listed] == [
        ("broken", [("w1", "error")])
    ]

    await store.remove("tiny", "broken")
    await store.put("tiny", "broken", "/adapters/fixed")
    await reconciler.reconcile()
    assert host.loaded == {"broken": "/adapters/fixed"}
    assert [s.state for s in (await store.workers("tiny"))["w1"]] == ["loaded"]


async def test_a_running_worker_follows_notices_and_the_gateway_sees_each_worker(
    store: RedisAdapters,
) -> None:
    hosts = {"w1": FakeHost(), "w2": FakeHost()}
    reconcilers = [AdapterReconciler(host, store, model="tiny", worker=w) for w, host in hosts.items()]
    running = [asyncio.create_task(r.run()) for r in reconcilers]
    try:
        admin = AdapterAdmin(database=None, engines=[], shared=store)  # type: ignore[arg-type]
        async with asyncio.timeout(3):
            while len(await store.workers("tiny")) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        await store.put("tiny", "alpha", "/adapters/alpha")
        # The notice, not the 2 s timer, wakes them: well under a second.
        await _eventually(lambda: all("alpha" in h.loaded for h in hosts.values()), timeout_s=1.0)
        async with asyncio.timeout(3):
            while True:
                [status] = await admin.list_adapters(SYSTEM, "tiny")
                if [w.state for w in status.workers] == ["loaded", "loaded"]:
                    break
                await asyncio.sleep(0.02)
        assert [w.worker for w in status.workers] == ["w1", "w2"]
        with pytest.raises(NotFound):
            await admin.list_adapters(SYSTEM, "other")
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    # A stopped worker withdraws its report.
    assert await store.workers("tiny") == {}


async def test_a_worker_that_starts_later_loads_the_current_set(store: RedisAdapters) -> None:
    await store.put("tiny", "alpha", "/adapters/alpha")
    await store.put("tiny", "beta", "/adapters/beta")
    host = FakeHost()
    await AdapterReconciler(host, store, model="tiny", worker="late").reconcile()
    assert host.loaded == {"alpha": "/adapters/alpha", "beta": "/adapters/beta"}
