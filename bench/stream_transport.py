"""Question: what does reading token streams from Redis cost the gateway, against a bare XREAD loop?

Setup: WORKERS worker processes together keep STREAMS jobs running, each at
RATE tokens/s, claimed with `RedisStreams.claim` and written every FLUSH_MS
with its append script (the publisher's coalescing: one pipelined round trip
per worker per flush; a lean client sends it, so the simulated workers leave
the cores to the gateway). A job ends after TOKENS tokens and its slot starts
the next job, so readers come and go as in production. Each chunk's text is
the wall time of its flush.

The gateway, one process of its own so its CPU is isolated, reads the same
streams twice, each with fresh workers and keys:
(a) `ziggurat`: `RedisStreams.read()` per stream, one task per reader, as the
    SSE routes do;
(b) `bare`: one task running redis-py `xread(streams={...})` over every
    current key, no per-reader queues, tasks or decoding into `StreamEntry`
    (the same pause between XREADs as ours, so both batch alike, but it
    blocks on every call).
After WARMUP_S, each measures its own CPU time (getrusage: user + system) over
DURATION_S, the tokens and entries received, and the latency from a flush to
the reader seeing the entry (p50/p99). Redis's CPU and the machine's load in
the window are recorded too: on a small machine the workers and Redis compete
with the gateway for cores.

Command: `.venv/bin/python bench/stream_transport.py [--streams 2000] [--rate 20]
[--flush-ms 50] [--tokens 200] [--workers 4] [--duration-s 20] [--loop uvloop]
[--gc-threshold0 0] [--redis-url redis://127.0.0.1:6379/0]`. Output: JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import gc
import multiprocessing as mp
import random
import resource
import secrets
import statistics
import sys
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import hiredis
import psutil
import redis.asyncio as redis

sys.path.insert(0, str(Path(__file__).parent))
from _common import run_metadata, write_result

from ziggurat.connection.streams import redis_shard
from ziggurat.connection.streams.base import Appendable, Chunk
from ziggurat.connection.streams.redis import RedisStreams, _fields, _script
from ziggurat.model.engine import GenerationEnd, TextDelta, Usage


def job_id(slot: int, generation: int) -> str:
    return f"{slot}-{generation}"


def open_streams(args: argparse.Namespace, prefix: str) -> RedisStreams:
    return RedisStreams.from_url(
        args.redis_url,
        prefix=prefix,
        max_entries=10_000,
        ttl_s=300.0,
        first_event_timeout_s=30.0,
        idle_timeout_s=30.0,
    )


def resp(*args: str) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class LeanAppender:
    """`RedisStreams.append`'s Redis work (the same script, one pipelined write per flush) at a fraction
    of redis-py's client-side CPU, so the simulated workers leave the machine's cores to the gateway."""

    def __init__(self, args: argparse.Namespace, prefix: str) -> None:
        self._url = redis.connection.parse_url(args.redis_url)
        self._prefix = prefix
        self._reader = hiredis.Reader()

    async def open(self) -> None:
        host, port = self._url.get("host", "127.0.0.1"), self._url.get("port", 6379)
        self._stream_reader, self._writer = await asyncio.open_connection(host, port)
        db = str(self._url.get("db", 0))
        replies = await self._call(resp("SELECT", db), resp("SCRIPT", "LOAD", _script("append")))
        self._sha = replies[-1].decode()

    async def _call(self, *commands: bytes) -> list[Any]:
        self._writer.write(b"".join(commands))
        replies: list[Any] = []
        while len(replies) < len(commands):
            reply = self._reader.gets()
            if reply is False:
                self._reader.feed(await self._stream_reader.read(1 << 16))
                continue
            if isinstance(reply, hiredis.ReplyError):
                raise RuntimeError(str(reply))
            replies.append(reply)
        return replies

    async def append(self, batch: dict[str, tuple[int, list[str]]]) -> None:
        commands = []
        for job, (epoch, fields) in batch.items():
            keys = (f"{self._prefix}:s:{job}", f"{self._prefix}:e:{job}", f"{self._prefix}:d:{job}")
            commands.append(resp("EVALSHA", self._sha, "3", *keys, str(epoch), "300000", "10000", *fields))
        replies = await self._call(*commands)
        assert all(reply == 0 for reply in replies), replies


async def run_worker(args: argparse.Namespace, prefix: str, slots: list[int], stop: Event) -> None:
    """Keep `slots` busy: one job each, RATE tokens/s, all written every FLUSH_MS in one round trip."""
    streams = open_streams(args, prefix)
    appender = LeanAppender(args, prefix)
    await appender.open()
    rng = random.Random(slots[0])
    loop = asyncio.get_running_loop()
    generation = dict.fromkeys(slots, 0)
    epochs = {slot: (await streams.claim(job_id(slot, 0))).epoch for slot in slots}
    # Jobs start part-way through so that endings (and new readers) spread over time.
    produced = {slot: rng.randrange(args.tokens) for slot in slots}
    credit = dict.fromkeys(slots, 0.0)
    tick_s = args.flush_ms / 1000
    await asyncio.sleep(rng.random() * tick_s)
    last = next_tick = loop.time()
    while not stop.is_set():
        next_tick += tick_s
        await asyncio.sleep(max(0.0, next_tick - loop.time()))
        now = loop.time()
        elapsed, last = now - last, now
        stamp = f"{time.time():.6f} "
        batch: dict[str, tuple[int, list[str]]] = {}
        finished: list[int] = []
        for slot in slots:
            credit[slot] += args.rate * elapsed
            count = int(credit[slot])
            if not count:
                continue
            credit[slot] -= count
            produced[slot] += count
            items: list[Appendable] = [Chunk(stamp, count)]
            if produced[slot] >= args.tokens:
                items.append(GenerationEnd("stop", Usage(0, produced[slot])))
                finished.append(slot)
            batch[job_id(slot, generation[slot])] = (epochs[slot], _fields(items))
        await appender.append(batch)
        for slot in finished:
            generation[slot] += 1
            produced[slot] = 0
            epochs[slot] = (await streams.claim(job_id(slot, generation[slot]))).epoch
    await streams.aclose()


def worker_process(args: argparse.Namespace, prefix: str, slots: list[int], stop: Event) -> None:
    asyncio.run(run_worker(args, prefix, slots, stop))


class Window:
    """What the gateway received while measuring."""

    def __init__(self) -> None:
        self.is_open = False
        self.tokens = 0
        self.entries = 0
        self.errors = 0
        self.latencies: list[float] = []

    def record(self, text: str, tokens: int) -> None:
        if self.is_open:
            self.latencies.append(time.time() - float(text))
            self.tokens += tokens
            self.entries += 1


async def read_ours(args: argparse.Namespace, prefix: str, window: Window) -> None:
    streams = open_streams(args, prefix)

    async def consume(slot: int) -> None:
        generation = 0
        while True:
            async for entry in streams.read(job_id(slot, generation)):
                event = entry.event
                if isinstance(event, TextDelta):
                    window.record(event.text, entry.tokens)
                elif event.finish_reason == "error":
                    window.errors += 1
            generation += 1

    tasks = [asyncio.create_task(consume(slot)) for slot in range(args.streams)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await streams.aclose()


async def read_bare(args: argparse.Namespace, prefix: str, window: Window) -> None:
    client = redis.from_url(args.redis_url, decode_responses=True)
    loop = asyncio.get_running_loop()
    generation = dict.fromkeys(range(args.streams), 0)
    positions = {f"{prefix}:s:{job_id(slot, 0)}": "0-0" for slot in range(args.streams)}
    slot_of = {key: slot for slot, key in enumerate(positions)}
    try:
        while True:
            started = loop.time()
            reply = await client.xread(positions, count=128, block=1000)  # type: ignore[arg-type]
            for key, entries in reply or ():
                for _, fields in entries:
                    if "t" in fields:
                        window.record(fields["t"], int(fields["n"]))
                positions[key] = entries[-1][0]
                if "f" in entries[-1][1]:
                    slot = slot_of.pop(key)
                    del positions[key]
                    generation[slot] += 1
                    next_key = f"{prefix}:s:{job_id(slot, generation[slot])}"
                    positions[next_key], slot_of[next_key] = "0-0", slot
            if reply:
                await asyncio.sleep(max(0.0, started + args.read_pause_ms / 1000 - loop.time()))
    finally:
        await client.aclose()


async def redis_cpu_s(url: str) -> float:
    client = redis.from_url(url, decode_responses=True)
    try:
        info = await client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    finally:
        await client.aclose()


def process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure_gateway(args: argparse.Namespace, prefix: str, mode: str) -> dict[str, Any]:
    window = Window()
    reading = asyncio.create_task(
        read_ours(args, prefix, window) if mode == "ziggurat" else read_bare(args, prefix, window)
    )
    await asyncio.sleep(args.warmup_s)
    redis_before, machine_before = await redis_cpu_s(args.redis_url), psutil.cpu_times()
    collector = GcTimer()
    window.is_open = True
    wall_before, cpu_before = time.perf_counter(), process_cpu_s()
    gc.callbacks.append(collector.observe)
    await asyncio.sleep(args.duration_s)
    gc.callbacks.remove(collector.observe)
    cpu = process_cpu_s() - cpu_before
    wall = time.perf_counter() - wall_before
    window.is_open = False
    redis_cpu = await redis_cpu_s(args.redis_url) - redis_before
    machine_after = psutil.cpu_times()
    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)
    busy = sum(machine_after) - sum(machine_before)
    idle = (machine_after.idle + machine_after.iowait) - (machine_before.idle + machine_before.iowait)
    latencies = sorted(window.latencies)
    return {
        "wall_s": round(wall, 2),
        "tokens_per_s": round(window.tokens / wall),
        "entries_per_s": round(window.entries / wall),
        "timeouts": window.errors,
        "gateway_cpu_percent_of_one_core": round(cpu / wall * 100, 1),
        "cpu_us_per_token": round(cpu / max(window.tokens, 1) * 1e6, 2),
        "cpu_us_per_entry": round(cpu / max(window.entries, 1) * 1e6, 2),
        "latency_p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "latency_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2) if latencies else None,
        "gc_collections": collector.collections,
        "gc_percent_of_one_core": round(collector.seconds / wall * 100, 1),
        "redis_cpu_percent_of_one_core": round(redis_cpu / wall * 100, 1),
        "machine_busy_percent": round((busy - idle) / busy * 100, 1) if busy else None,
    }


class GcTimer:
    """Time spent in the cyclic garbage collector (wall time, so only meaningful on an idle core)."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = 0.0
        self._started = 0.0

    def observe(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections[info["generation"]] += 1


def gateway_process(args: argparse.Namespace, prefix: str, mode: str, out: Connection) -> None:
    faulthandler.dump_traceback_later(args.warmup_s + args.duration_s + 60, exit=True)
    redis_shard.MIN_READ_INTERVAL_S = args.read_pause_ms / 1000
    if args.gc_threshold0:
        gc.set_threshold(args.gc_threshold0, *gc.get_threshold()[1:])
    if args.loop == "uvloop":
        import uvloop

        out.send(uvloop.run(measure_gateway(args, prefix, mode)))
    else:
        out.send(asyncio.run(measure_gateway(args, prefix, mode)))


async def delete_keys(url: str, prefix: str) -> None:
    client = redis.from_url(url)
    try:
        batch: list[Any] = []
        async for key in client.scan_iter(match=f"{prefix}:*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()


def run_mode(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    context = mp.get_context("spawn")
    prefix = f"bench-{secrets.token_hex(3)}"
    stop = context.Event()
    shares = [list(range(args.streams))[n :: args.workers] for n in range(args.workers)]
    workers = [context.Process(target=worker_process, args=(args, prefix, share, stop)) for share in shares]
    for worker in workers:
        worker.start()
    receiving, sending = context.Pipe(duplex=False)
    gateway = context.Process(target=gateway_process, args=(args, prefix, mode, sending))
    try:
        gateway.start()
        if not receiving.poll(args.warmup_s + args.duration_s + 90):
            raise RuntimeError(f"the {mode} gateway did not report")
        result: dict[str, Any] = receiving.recv()
        gateway.join()
        failed = [worker.exitcode for worker in workers if not worker.is_alive()]
        if failed:
            raise RuntimeError(f"{len(failed)} worker processes died (exit codes {failed})")
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        asyncio.run(delete_keys(args.redis_url, prefix))
    return result


def main(args: argparse.Namespace) -> None:
    ours = run_mode(args, "ziggurat")
    bare = run_mode(args, "bare")
    write_result(
        "stream_transport",
        {
            "question": "gateway CPU and latency of reading Redis token streams vs a bare XREAD loop",
            **run_metadata(),
            "settings": vars(args),
            "bare_xread": bare,
            "ziggurat": ours,
            "cpu_ratio_vs_bare": round(ours["cpu_us_per_token"] / bare["cpu_us_per_token"], 2),
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=20.0, help="tokens/s per stream")
    parser.add_argument("--flush-ms", type=float, default=50.0)
    parser.add_argument("--tokens", type=int, default=200, help="tokens per job")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--loop", choices=["uvloop", "asyncio"], default="uvloop", help="the gateway's (uvicorn picks uvloop)"
    )
    parser.add_argument(
        "--gc-threshold0", type=int, default=0, help="the gateway's gc threshold 0 (0: Python's default)"
    )
    parser.add_argument(
        "--read-pause-ms",
        type=float,
        default=redis_shard.MIN_READ_INTERVAL_S * 1000,
        help="pause between XREADs under load, for both readers (ours: redis_shard.MIN_READ_INTERVAL_S)",
    )
    main(parser.parse_args())
