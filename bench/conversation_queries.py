"""Question: how fast are the chat hot paths — listing a user's conversations and opening one — at scale?

Setup: a fresh PostgreSQL database (`ziggurat_bench` on ZIGGURAT_TEST_POSTGRES_URL's server),
migrated with ziggurat's own migrations, filled server-side with generate_series:
USERS users × CONVERSATIONS conversations × MESSAGES messages (alternating user and
assistant, ~200 characters each), then ANALYZEd. We then time, for SAMPLES random users:
(a) the first page (20) of their conversation list and (b) opening one of their
conversations with all its messages — through ziggurat's application services (ORM,
pydantic, ownership checks), and, as the baseline in the same run, the same two queries
as hand-written SQL over a bare asyncpg connection.

Command: `.venv/bin/python bench/conversation_queries.py [--users 10000] [--conversations 100]
[--messages 50] [--samples 500] [--keep]` (the full size takes a while and ~20 GB of disk;
`--keep` reuses an existing filled database). Output: JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).parent))
from _common import run_metadata, write_result

from ziggurat.application.auth.passwords import PasswordHasher
from ziggurat.application.auth.principal import SCOPE_CHAT, Principal, UserId
from ziggurat.application.container import build_application
from ziggurat.application.store.database import Database
from ziggurat.application.store.schema import upgrade_database
from ziggurat.config import Settings
from ziggurat.connection.broker.memory import MemoryBroker
from ziggurat.model.engine import ModelInfo
from ziggurat.service.generation import GenerationService
from ziggurat.service.metrics import Metrics

SERVER = os.environ.get("ZIGGURAT_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
NAME = "ziggurat_bench"

FILL = [
    """INSERT INTO users (id, email, password_hash, role, is_active, created_at)
       SELECT 'u' || u, 'user' || u || '@example.com', 'x', 'user', true, now() - interval '1 year'
       FROM generate_series(1, $1) AS u""",
    """INSERT INTO conversations (id, user_id, title, model, created_at, updated_at)
       SELECT 'c' || u || '-' || c, 'u' || u, 'Conversation ' || c || ' about topic ' || (u * c % 997), 'm',
              now() - interval '1 year', now() - make_interval(secs => (u * 7919 + c * 104729) % 31536000)
       FROM generate_series(1, $1) AS u, generate_series(1, $2) AS c""",
    """INSERT INTO messages (id, conversation_id, parent_id, role, content, model, status, created_at)
       SELECT 'm' || u || '-' || c || '-' || m, 'c' || u || '-' || c,
              CASE WHEN m = 1 THEN NULL ELSE 'm' || u || '-' || c || '-' || (m - 1) END,
              CASE WHEN m % 2 = 1 THEN 'user' ELSE 'assistant' END,
              repeat('lorem ipsum dolor sit amet ', 7) || m, 'm', 'complete',
              now() - interval '1 year' + make_interval(secs => m)
       FROM generate_series(1, $1) AS u, generate_series(1, $2) AS c, generate_series(1, $3) AS m""",
]

LIST_SQL = """SELECT id, title, model, system_prompt, preset_id, is_pinned, is_archived, created_at,
              updated_at FROM conversations WHERE user_id = $1 AND is_archived = false AND deleted_at IS NULL
              ORDER BY is_pinned DESC, updated_at DESC, id DESC LIMIT 20"""
OPEN_SQL = [
    "SELECT * FROM conversations WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
    "SELECT * FROM messages WHERE conversation_id = $1 ORDER BY created_at, id",
]


def dsn(database: str) -> str:
    return (
        make_url(SERVER).set(drivername="postgresql", database=database).render_as_string(hide_password=False)
    )


async def fill(args: argparse.Namespace) -> dict[str, float]:
    admin = await asyncpg.connect(dsn(make_url(SERVER).database or "test"))
    exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", NAME)
    if exists and args.keep:
        await admin.close()
        return {}
    await admin.execute(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{NAME}"')
    await admin.close()
    url = make_url(SERVER).set(database=NAME).render_as_string(hide_password=False)
    await upgrade_database(url)
    connection = await asyncpg.connect(dsn(NAME))
    timings: dict[str, float] = {}
    try:
        for statement, params, label in zip(
            FILL,
            [
                (args.users,),
                (args.users, args.conversations),
                (args.users, args.conversations, args.messages),
            ],
            ["users", "conversations", "messages"],
            strict=True,
        ):
            started = time.perf_counter()
            await connection.execute(statement, *params)
            timings[f"fill_{label}_s"] = round(time.perf_counter() - started, 1)
            print(f"filled {label} in {timings[f'fill_{label}_s']}s", file=sys.stderr)
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
    return timings


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000, 3),
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(42)
    picks = [(rng.randint(1, args.users), rng.randint(1, args.conversations)) for _ in range(args.samples)]
    raw = await asyncpg.connect(dsn(NAME))
    raw_list: list[float] = []
    raw_open: list[float] = []
    try:
        for user, conversation in picks:
            started = time.perf_counter()
            await raw.fetch(LIST_SQL, f"u{user}")
            raw_list.append(time.perf_counter() - started)
            started = time.perf_counter()
            await raw.fetchrow(OPEN_SQL[0], f"c{user}-{conversation}", f"u{user}")
            await raw.fetch(OPEN_SQL[1], f"c{user}-{conversation}")
            raw_open.append(time.perf_counter() - started)
    finally:
        await raw.close()
    url = make_url(SERVER).set(database=NAME).render_as_string(hide_password=False)
    database = Database(url)
    metrics = Metrics()
    generation = GenerationService(
        broker=MemoryBroker(max_queue_depth=1, stream_buffer_events=1),
        models=[ModelInfo(name="m", engine="none")],
        metrics=metrics,
    )
    settings = Settings(database_url=url, secret_key="b" * 48)  # type: ignore[arg-type]
    application = build_application(
        settings, database=database, generation=generation, passwords=PasswordHasher()
    )
    ours_list: list[float] = []
    ours_open: list[float] = []
    try:
        for user, conversation in picks:
            principal = Principal(user_id=UserId(f"u{user}"), role="user", scopes=frozenset({SCOPE_CHAT}))
            started = time.perf_counter()
            page = await application.conversations.list_conversations(principal, limit=20)
            ours_list.append(time.perf_counter() - started)
            assert len(page.data) == min(20, args.conversations)
            started = time.perf_counter()
            detail = await application.conversations.get(principal, f"c{user}-{conversation}")
            ours_open.append(time.perf_counter() - started)
            assert len(detail.messages) == args.messages
    finally:
        await database.aclose()
    return {
        "list_first_page": {
            "baseline_raw_sql": percentiles(raw_list),
            "ziggurat": percentiles(ours_list),
            "p50_ratio": round(statistics.median(ours_list) / statistics.median(raw_list), 2),
        },
        "open_conversation": {
            "baseline_raw_sql": percentiles(raw_open),
            "ziggurat": percentiles(ours_open),
            "p50_ratio": round(statistics.median(ours_open) / statistics.median(raw_open), 2),
        },
    }


async def main(args: argparse.Namespace) -> None:
    timings = await fill(args)
    results = await measure(args)
    write_result(
        "conversation_queries",
        {
            "question": "p50/p99 of listing conversations and opening one, ziggurat services vs raw SQL",
            **run_metadata(),
            "settings": vars(args),
            **timings,
            **results,
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--conversations", type=int, default=100)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--keep", action="store_true", help="reuse an existing filled database")
    asyncio.run(main(parser.parse_args()))
