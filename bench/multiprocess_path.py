"""Question: what do RabbitMQ jobs + Redis Streams add to first-token and per-token latency vs one process?

Setup, in one run on this machine: the demo engine streams TOKENS tokens at
INTER_TOKEN_S. (a) In-process: `ziggurat serve` (gateway and worker in one
process, in-process queue and streams). (b) Multi-process: `ziggurat serve
--role worker` and `ziggurat serve --role api` sharing RabbitMQ and Redis
(fresh queue and key prefixes). For each concurrency level, a load generator
opens that many `/v1/chat/completions` streams at once and reads every byte.
We record time to first token, the mean gap between content chunks per token
(end-to-end minus first token, over tokens), and the gateway process's CPU
seconds per streamed token (for (a) that process also runs the engine).

Command: `.venv/bin/python bench/multiprocess_path.py [--levels 1,100,1000,2000]
[--tokens 40] [--inter-token-s 0.05] [--redis redis://127.0.0.1:6379/0]
[--amqp amqp://guest:guest@127.0.0.1:5672/]`. Output: JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
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
    start_process,
    wait_http,
    write_result,
    ziggurat_api_key,
)

PYTHON = sys.executable


def body(tokens: int) -> dict[str, Any]:
    return {
        "model": "ziggurat-demo",
        "stream": True,
        "messages": [{"role": "user", "content": "Tell me about the ziggurat of Ur"}],
        "max_tokens": tokens,
    }


async def one_stream(
    session: aiohttp.ClientSession, url: str, payload: dict[str, Any]
) -> tuple[float, float]:
    """(time to first content chunk, end to end) in seconds."""
    started = time.perf_counter()
    first: float | None = None
    async with session.post(url, json=payload) as response:
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {await response.text()}")
        async for line in response.content:
            if first is None and line.startswith(b"data: {") and b'"content"' in line:
                first = time.perf_counter() - started
    return first or 0.0, time.perf_counter() - started


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def level(
    url: str, key: str, process: psutil.Process, *, concurrency: int, tokens: int
) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0)
    headers = {"Authorization": f"Bearer {key}"}
    timeout = aiohttp.ClientTimeout(total=900)
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as session:
        before = cpu_seconds(process)
        started = time.perf_counter()
        results = await asyncio.gather(*(one_stream(session, url, body(tokens)) for _ in range(concurrency)))
        wall = time.perf_counter() - started
        cpu = cpu_seconds(process) - before
    ttft = [first for first, _ in results]
    per_token = [(total - first) / max(tokens - 1, 1) for first, total in results]
    return {
        "concurrency": concurrency,
        "wall_s": round(wall, 2),
        "ttft_p50_ms": round(statistics.median(ttft) * 1000, 1),
        "ttft_p99_ms": round(_percentile(ttft, 0.99) * 1000, 1),
        "per_token_p50_ms": round(statistics.median(per_token) * 1000, 2),
        "gateway_cpu_s": round(cpu, 2),
        "gateway_cpu_us_per_token": round(cpu / (concurrency * tokens) * 1e6, 1),
    }


def _env(args: argparse.Namespace, data_dir: str) -> dict[str, str]:
    return {
        "ZIGGURAT_ENGINE__KIND": "demo",
        "ZIGGURAT_ENGINE__DEMO_TIME_TO_FIRST_TOKEN_S": "0",
        "ZIGGURAT_ENGINE__DEMO_INTER_TOKEN_S": str(args.inter_token_s),
        "ZIGGURAT_ENGINE__MAX_CONCURRENCY": str(max(args.levels) + 100),
        "ZIGGURAT_BROKER__MAX_QUEUE_DEPTH": str(max(args.levels) * 2),
        "ZIGGURAT_CONVERSATIONS__AUTO_TITLE": "false",
        "ZIGGURAT_DATA_DIR": data_dir,
        "ZIGGURAT_LOG__LEVEL": "WARNING",
    }


async def run_all_levels(
    base: str, process: psutil.Process, args: argparse.Namespace
) -> list[dict[str, Any]]:
    key = await ziggurat_api_key(base)
    url = base + "/v1/chat/completions"
    await level(url, key, process, concurrency=10, tokens=args.tokens)  # warm-up
    results = []
    for concurrency in args.levels:
        results.append(await level(url, key, process, concurrency=concurrency, tokens=args.tokens))
        print(results[-1], flush=True)
    return results


async def main(args: argparse.Namespace) -> None:
    processes = []
    try:
        port = free_port()
        single = start_process(
            [PYTHON, "-m", "ziggurat.cli", "serve", "--port", str(port)],
            env=_env(args, tempfile.mkdtemp(prefix="ziggurat-bench-")),
        )
        processes.append(single)
        base = f"http://127.0.0.1:{port}"
        await wait_http(base + "/readyz")
        in_process = await run_all_levels(base, psutil.Process(single.pid), args)
        single.terminate()
        single.wait(timeout=30)

        prefix = f"bench-{secrets.token_hex(3)}"
        shared = {
            **_env(args, tempfile.mkdtemp(prefix="ziggurat-bench-")),
            "ZIGGURAT_REDIS_URL": args.redis,
            "ZIGGURAT_BROKER_URL": args.amqp,
            "ZIGGURAT_BROKER__QUEUE_PREFIX": prefix,
            "ZIGGURAT_BROKER__REDIS_PREFIX": prefix,
        }
        worker_port, api_port = free_port(), free_port()
        worker = start_process(
            [PYTHON, "-m", "ziggurat.cli", "serve", "--role", "worker", "--port", str(worker_port)],
            env=shared,
        )
        processes.append(worker)
        await wait_http(f"http://127.0.0.1:{worker_port}/readyz")
        gateway = start_process(
            [PYTHON, "-m", "ziggurat.cli", "serve", "--role", "api", "--port", str(api_port)], env=shared
        )
        processes.append(gateway)
        base = f"http://127.0.0.1:{api_port}"
        await _wait_ready(base)
        worker_cpu_before = cpu_seconds(psutil.Process(worker.pid))
        split = await run_all_levels(base, psutil.Process(gateway.pid), args)
        worker_cpu = cpu_seconds(psutil.Process(worker.pid)) - worker_cpu_before
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
    comparison = [
        {
            "concurrency": one["concurrency"],
            "added_ttft_p50_ms": round(two["ttft_p50_ms"] - one["ttft_p50_ms"], 1),
            "added_per_token_p50_ms": round(two["per_token_p50_ms"] - one["per_token_p50_ms"], 2),
        }
        for one, two in zip(in_process, split, strict=True)
    ]
    write_result(
        "multiprocess_path",
        {
            "question": "added TTFT and per-token latency of RabbitMQ jobs + Redis Streams vs one process",
            **run_metadata(),
            "settings": {**vars(args), "levels": list(args.levels)},
            "in_process": in_process,
            "multi_process": split,
            "multi_process_worker_cpu_s": round(worker_cpu, 2),
            "added": comparison,
        },
    )


async def _wait_ready(base: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(base + "/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{base} not ready")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--levels", type=lambda v: [int(x) for x in v.split(",")], default=[1, 100, 1000, 2000]
    )
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--inter-token-s", type=float, default=0.05)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    asyncio.run(main(parser.parse_args()))
