"""Callers of one key share one run; a cancelled caller leaves it to the others; `forget` starts afresh."""

from __future__ import annotations

import asyncio

import pytest

from ziggurat.single_flight import SingleFlight


async def test_concurrent_callers_share_one_run_and_its_failure() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    runs = 0
    gate = asyncio.Event()

    async def work() -> int:
        nonlocal runs
        runs += 1
        await gate.wait()
        raise ValueError(f"run {runs}")

    callers = [asyncio.create_task(flight.run("k", work)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert runs == 1 and all(str(result) == "run 1" for result in results)
    with pytest.raises(ValueError, match="run 2"):
        await flight.run("k", work)  # the run had ended: a new one


async def test_a_cancelled_caller_leaves_the_run_to_the_others_and_forget_starts_afresh() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    gate = asyncio.Event()
    runs = 0

    async def work() -> int:
        nonlocal runs
        runs += 1
        number = runs
        await gate.wait()
        return number

    leaving = asyncio.create_task(flight.run("k", work))
    staying = asyncio.create_task(flight.run("k", work))
    await asyncio.sleep(0)
    leaving.cancel()
    flight.forget("k")
    fresh = asyncio.create_task(flight.run("k", work))
    await asyncio.sleep(0)
    gate.set()
    assert await staying == 1 and await fresh == 2
    assert leaving.cancelled()
