"""Question: how much CPU does the ziggurat gateway spend per streamed request, against a bare relay?

Setup: a mock OpenAI upstream (bench/mock_upstream.py) streams TOKENS tokens per
request at INTER_TOKEN_S. In front of it, one at a time, run (a) the bare relay
(bench/bare_relay.py: aiohttp in, aiohttp out, bytes copied) and (b) ziggurat
(`ziggurat serve --engine openai`, one process, API key auth, SSE re-encoding,
metrics, queue and worker). A load generator opens CONCURRENCY streams at once,
REQUESTS in total, and reads every byte (closed loop), or with `--rate` starts
requests at Poisson arrival times (open loop; the time to first byte a request
sees, without the lockstep bursts of the closed loop). We record the relay
process's CPU seconds (user + system) and the time to first byte seen by the client.

Command: `.venv/bin/python bench/gateway_overhead.py [--concurrency 200] [--requests 1000]
[--tokens 64] [--inter-token-s 0.02] [--rate R] [--rounds N] [--no-limits] [--profile FILE]` (limits,
metrics and routing are on unless `--no-limits`; `--rounds N` measures relay then gateway N times
with both running and reports the medians; `--framework-floor` also measures bench/fastapi_relay.py,
the leanest FastAPI relay, each round; `PROFILE_NATIVE=1` adds C frames to the profile, `PROFILE_RATE`
sets its samples per second;
`BENCH_GATEWAY_ENV="K=V ..."` passes settings to the gateway).
Output: JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from _common import (
    cpu_seconds,
    free_port,
    run_metadata,
    speed_probe_ms,
    start_process,
    wait_http,
    write_result,
    ziggurat_api_key,
)

PYTHON = sys.executable
LIMITS_ON = {
    # Every limit checked on every request (high enough never to refuse one in this run).
    "ZIGGURAT_LIMITS__REQUESTS_PER_MINUTE": "1000000",
    "ZIGGURAT_LIMITS__TOKENS_PER_MINUTE": "1000000000",
    "ZIGGURAT_LIMITS__MAX_CONCURRENT_STREAMS": "100000",
    "ZIGGURAT_LIMITS__DAILY_TOKENS": "1000000000",
    "ZIGGURAT_LIMITS__MONTHLY_TOKENS": "1000000000",
    "ZIGGURAT_LIMITS__API_KEY_REQUESTS_PER_MINUTE": "1000000",
}
HERE = Path(__file__).parent
BODY = {
    "model": "mock",
    "stream": True,
    "messages": [{"role": "user", "content": "hello"}],
    "max_tokens": 4096,
}


async def one_stream(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    first_byte: float | None = None
    received = 0
    async with session.post(url, json=BODY, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {await response.text()}")
        async for chunk in response.content.iter_any():
            if first_byte is None:
                first_byte = time.perf_counter() - started
            received += len(chunk)
    return first_byte or 0.0, received


async def load(
    url: str, headers: dict[str, str], *, concurrency: int, requests: int, rate: float | None = None
) -> dict[str, Any]:
    """Closed loop (`concurrency` streams, each starting the next when one ends) or, with
    `rate`, open loop: Poisson arrivals at `rate` requests/s whatever is still streaming.

    In the closed loop the streams run in lockstep (same length), so requests arrive in
    bursts of `concurrency` and time to first byte measures how long a burst takes to get
    through, not the latency one request sees; the open loop measures the latter.
    """
    semaphore = asyncio.Semaphore(concurrency if rate is None else requests)
    first_bytes: list[float] = []

    async def bounded(session: aiohttp.ClientSession) -> None:
        async with semaphore:
            ttfb, _ = await one_stream(session, url, headers)
            first_bytes.append(ttfb)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=600)
    ) as session:
        started = time.perf_counter()
        if rate is None:
            await asyncio.gather(*(bounded(session) for _ in range(requests)))
        else:
            arrivals = random.Random(7)  # the same arrival times for the relay and the gateway
            streams = []
            for _ in range(requests):
                streams.append(asyncio.create_task(bounded(session)))
                await asyncio.sleep(arrivals.expovariate(rate))
            await asyncio.gather(*streams)
        wall = time.perf_counter() - started
    first_bytes.sort()
    return {
        "wall_s": round(wall, 3),
        "ttfb_p50_ms": round(statistics.median(first_bytes) * 1000, 2),
        "ttfb_p99_ms": round(first_bytes[int(len(first_bytes) * 0.99) - 1] * 1000, 2),
    }


async def measure(
    process: psutil.Process, url: str, headers: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    await load(url, headers, concurrency=min(args.concurrency, 20), requests=40)  # warm-up
    before = cpu_seconds(process)
    times_before = process.cpu_times()
    threads_before = _thread_cpu(process)
    stats = await load(url, headers, concurrency=args.concurrency, requests=args.requests, rate=args.rate)
    cpu = cpu_seconds(process) - before
    times = process.cpu_times()
    threads = _thread_cpu(process)
    busy_threads = sorted(
        (round(spent - threads_before.get(thread_id, 0.0), 3) for thread_id, spent in threads.items()),
        reverse=True,
    )
    return {
        **stats,
        "cpu_s_by_thread": busy_threads[:4],
        "cpu_s_user": round(times.user - times_before.user, 3),
        "cpu_s_system": round(times.system - times_before.system, 3),
        "cpu_s": round(cpu, 3),
        "cpu_us_per_request": round(cpu / args.requests * 1e6, 1),
        "cpu_us_per_token": round(cpu / (args.requests * args.tokens) * 1e6, 2),
    }


async def main(args: argparse.Namespace) -> None:
    probe_before = speed_probe_ms()
    upstream_port, relay_port, ziggurat_port = free_port(), free_port(), free_port()
    upstream = start_process(
        [
            PYTHON,
            str(HERE / "mock_upstream.py"),
            str(upstream_port),
            str(args.tokens),
            str(args.inter_token_s),
        ]
    )
    processes = [upstream]
    rounds: list[dict[str, Any]] = []
    try:
        upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
        await wait_http(upstream_url + "/models")
        relay = start_process([PYTHON, str(HERE / "bare_relay.py"), str(relay_port), upstream_url])
        processes.append(relay)
        await wait_http(f"http://127.0.0.1:{relay_port}/")
        floor = None
        if args.framework_floor:
            floor_port = free_port()
            floor = start_process([PYTHON, str(HERE / "fastapi_relay.py"), str(floor_port), upstream_url])
            processes.append(floor)
            await wait_http(f"http://127.0.0.1:{floor_port}/")
        data_dir = tempfile.mkdtemp(prefix="ziggurat-bench-")
        extra_env = dict(item.split("=", 1) for item in os.environ.get("BENCH_GATEWAY_ENV", "").split())
        gateway = start_process(
            [
                PYTHON,
                "-m",
                "ziggurat.cli",
                "serve",
                "--port",
                str(ziggurat_port),
                "--engine",
                "openai",
                "--model",
                "mock",
            ],
            env={
                "ZIGGURAT_ENGINE__OPENAI_BASE_URL": upstream_url,
                "ZIGGURAT_DATA_DIR": data_dir,
                "ZIGGURAT_ENGINE__MAX_CONCURRENCY": str(args.concurrency * 2),
                "ZIGGURAT_LOG__LEVEL": "WARNING",
                **(LIMITS_ON if args.limits else {}),
                **extra_env,
            },
        )
        processes.append(gateway)
        base = f"http://127.0.0.1:{ziggurat_port}"
        await wait_http(base + "/healthz")
        key = await ziggurat_api_key(base)
        # Both stay up; each round measures the relay, then the gateway, so that every ratio
        # compares two measurements taken seconds apart (this VM's speed drifts by ±15%).
        profile = args.profile  # the first round's gateway only: one profile is enough
        for _ in range(args.rounds):
            baseline = await measure(
                psutil.Process(relay.pid), f"http://127.0.0.1:{relay_port}/v1/chat/completions", {}, args
            )
            framework = None
            if floor is not None:
                framework = await measure(
                    psutil.Process(floor.pid), f"http://127.0.0.1:{floor_port}/v1/chat/completions", {}, args
                )
            profiler = _start_profiler(gateway.pid, profile) if profile else None
            ours = await measure(
                psutil.Process(gateway.pid),
                base + "/v1/chat/completions",
                {"Authorization": f"Bearer {key}"},
                args,
            )
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(timeout=30)
                profile = None
            entry = {
                "bare_relay": baseline,
                "ziggurat": ours,
                "cpu_ratio_vs_bare": round(ours["cpu_s"] / baseline["cpu_s"], 2),
                "ttfb_p50_added_ms": round(ours["ttfb_p50_ms"] - baseline["ttfb_p50_ms"], 2),
            }
            if framework is not None:
                entry["fastapi_relay"] = framework
                entry["fastapi_relay_cpu_ratio_vs_bare"] = round(framework["cpu_s"] / baseline["cpu_s"], 2)
            rounds.append(entry)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
    ratios = [entry["cpu_ratio_vs_bare"] for entry in rounds]
    added = [entry["ttfb_p50_added_ms"] for entry in rounds]
    floors = [entry["fastapi_relay_cpu_ratio_vs_bare"] for entry in rounds if "fastapi_relay" in entry]
    write_result(
        "gateway_overhead",
        {
            "question": "gateway CPU per streamed request vs a bare aiohttp relay",
            **run_metadata(),
            "speed_probe_ms": [probe_before, speed_probe_ms()],
            "settings": vars(args),
            "rounds": rounds,
            "bare_relay": rounds[-1]["bare_relay"],
            "ziggurat": rounds[-1]["ziggurat"],
            "cpu_ratios": ratios,
            "cpu_ratio_vs_bare": round(statistics.median(ratios), 2),
            "ttfb_p50_added_ms_by_round": added,
            "ttfb_p50_added_ms": round(statistics.median(added), 2),
            **(
                {
                    "fastapi_relay_cpu_ratios": floors,
                    "fastapi_relay_cpu_ratio_vs_bare": statistics.median(floors),
                }
                if floors
                else {}
            ),
        },
    )


def _thread_cpu(process: psutil.Process) -> dict[int, float]:
    """CPU seconds per thread: tells the event loop's share from helper threads' (SQLite, executors)."""
    return {thread.id: thread.user_time + thread.system_time for thread in process.threads()}


def _start_profiler(pid: int, output: str) -> subprocess.Popen[bytes]:
    """py-spy samples the gateway while it serves the load; collapsed stacks go to `output`."""
    py_spy = Path(PYTHON).with_name("py-spy")
    native = ["--native"] if os.environ.get("PROFILE_NATIVE") else []  # C frames too (uvloop, syscalls)
    rate = os.environ.get("PROFILE_RATE", "200")
    command = [str(py_spy), "record", "--pid", str(pid), "--format", "raw", "--rate", rate, *native]
    command += ["-o", output]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rate", type=float, help="open loop: Poisson arrivals, requests per second")
    parser.add_argument(
        "--rounds", type=int, default=1, help="alternate relay and gateway this often; medians reported"
    )
    parser.add_argument("--inter-token-s", type=float, default=0.02)
    parser.add_argument(
        "--limits", action=argparse.BooleanOptionalAction, default=True, help="every rate limit and quota on"
    )
    parser.add_argument(
        "--framework-floor",
        action="store_true",
        help="also measure bench/fastapi_relay.py (the leanest FastAPI relay) each round",
    )
    parser.add_argument("--profile", metavar="FILE", help="py-spy the gateway (collapsed stacks)")
    asyncio.run(main(parser.parse_args()))
