"""Shared pieces of the benchmarks: a mock OpenAI upstream, process CPU accounting, run metadata."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_metadata() -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "commit": commit,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or platform.node()}",
        "cpu_model": _cpu_model(),
    }


def speed_probe_ms() -> float:
    """CPU milliseconds of a fixed pure-Python loop (best of three): how fast this VM runs right now.

    The same machine has run it in 0.5x to 2.5x the time of its fastest runs (its host is
    shared), and a busy host slows system calls and Python code by different amounts, so a
    ratio measured while the probe reads high is not comparable with one measured while it
    reads low. Benchmarks record it at their start and end.
    """
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        total = 0
        for number in range(2_000_000):
            total += number
        best = min(best, time.process_time() - started)
    return round(best * 1000, 1)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    total = times.user + times.system
    for child in process.children(recursive=True):
        child_times = child.cpu_times()
        total += child_times.user + child_times.system
    return total


def start_process(args: list[str], *, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def wait_http(url: str, timeout_s: float = 60) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout_s}s")


def write_result(name: str, result: dict[str, Any]) -> None:
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"written to {path}", file=sys.stderr)


async def ziggurat_api_key(base: str) -> str:
    """Register a benchmark user on a fresh ziggurat and return a new API key."""
    import aiohttp

    async with aiohttp.ClientSession(base_url=base) as session:
        async with session.post(
            "/api/auth/register", json={"email": "bench@example.com", "password": "benchmark-password"}
        ) as response:
            token = (await response.json())["tokens"]["access_token"]
        async with session.post(
            "/api/keys", json={"name": "bench"}, headers={"Authorization": f"Bearer {token}"}
        ) as response:
            key: str = (await response.json())["key"]
            return key
