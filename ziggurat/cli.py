"""Command line: `ziggurat serve`, `ziggurat --version`, and data commands.

`export-feedback` writes rated answers as fine-tuning JSONL and
`purge-deleted` removes conversations deleted longer ago than the retention
period; both work on the configured database directly (migrating it first,
like `serve`), acting as the operator, who holds the admin permission.

Builds the one `Settings` object from the environment plus flags, configures
logging, and runs uvicorn. Configuration problems are printed as one clear line
and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO

from pydantic import ValidationError

from ziggurat import __version__
from ziggurat.application.auth.principal import SYSTEM
from ziggurat.config import Settings
from ziggurat.errors import ConfigurationError
from ziggurat.telemetry import configure_logging

if TYPE_CHECKING:
    from ziggurat.application.store.database import Database

# Who the data commands act as: whoever can run them already has the database.


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ziggurat", description="Self-hosted LLM chat platform.")
    parser.add_argument("--version", action="version", version=f"ziggurat {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server (all roles in one process by default)")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--role", choices=["all", "api", "worker"], help="which roles this process runs")
    serve.add_argument(
        "--engine", choices=["auto", "demo", "transformers", "openai"], help="inference engine (default auto)"
    )
    serve.add_argument("--model", help="model directory, .gguf file, hub id, or remote model name")
    serve.add_argument("--served-name", help="name clients use for the model")
    serve.add_argument("--log-format", choices=["json", "text"], help="log line format")
    _add_data_commands(commands)
    return parser


def _add_data_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = commands.add_parser("export-feedback", help="write rated answers as fine-tuning JSONL")
    export.add_argument("--format", choices=["sft", "preference"], default="sft", help="record shape")
    export.add_argument("--output", required=True, help="file to write, or - for standard output")
    export.add_argument("--since", type=_moment, help="feedback given at or after (ISO 8601, UTC if no zone)")
    export.add_argument("--until", type=_moment, help="feedback given before (ISO 8601)")
    export.add_argument("--model", help="answers of this model only")
    export.add_argument("--user", help="feedback of this user (id or e-mail) only")
    export.add_argument("--role", help="feedback of users with this role only")
    export.add_argument("--thumb", choices=["up", "down"], help="feedback with this thumb only")
    export.add_argument("--min-rating", type=int, choices=range(1, 6), help="ratings at least this")
    export.add_argument("--max-rating", type=int, choices=range(1, 6), help="ratings at most this")
    purge = commands.add_parser("purge-deleted", help="remove conversations deleted long enough ago")
    retention = "default: ZIGGURAT_CONVERSATIONS__DELETED_RETENTION_DAYS (30)"
    purge.add_argument("--older-than-days", type=int, help=retention)


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for field in ("host", "port", "role"):
        value = getattr(args, field)
        if value is not None:
            overrides[field] = value
    base = Settings()
    engine = base.engine.model_copy(
        update={
            key: value
            for key, value in (
                ("kind", args.engine),
                ("model", args.model),
                ("served_name", args.served_name),
            )
            if value is not None
        }
    )
    log_settings = base.log
    if args.log_format:
        log_settings = log_settings.model_copy(update={"json_format": args.log_format == "json"})
    return base.model_copy(update={**overrides, "engine": engine, "log": log_settings})


GC_THRESHOLD0 = 10_000


def tune_garbage_collector() -> None:
    """Collect the youngest generation less often and keep start-up objects out of every collection.

    A gateway streaming thousands of answers allocates many short-lived
    objects (stream entries, frames); with Python's default threshold (700) the
    collector took about a third of the stream reader's CPU in
    bench/stream_transport.py. Freezing what start-up created (modules,
    settings, the app) keeps later full collections short.
    """
    import gc

    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD0, older, oldest)


def serve(settings: Settings) -> None:
    """Run uvicorn; a model that fails to load after start-up stops the server with that error.

    SIGTERM drains first (`connection/http/server.py`): streams in flight get
    `ZIGGURAT_HTTP__DRAIN_GRACE_S` to finish before the server stops.
    """
    import uvicorn

    from ziggurat.app import build_app, check_topology
    from ziggurat.connection.http.server import DrainingServer
    from ziggurat.engines import build_engine
    from ziggurat.service.lifecycle import Draining

    configure_logging(level=settings.log.level, json_format=settings.log.json_format)
    check_topology(settings)
    build_engine(settings)  # fail fast on a bad engine or model reference, before binding the port
    fatal: list[str] = []

    def stop_on_fatal(message: str) -> None:
        fatal.append(message)
        server.should_exit = True

    draining = Draining(grace_s=settings.http.drain_grace_s)
    app = build_app(settings, on_fatal=stop_on_fatal, draining=draining)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=math.ceil(settings.http.drain_grace_s),
    )
    server = DrainingServer(config, draining)
    tune_garbage_collector()
    server.run()
    if fatal:
        raise ConfigurationError(fatal[0])


@asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[Database]:
    from ziggurat.application.store.database import Database
    from ziggurat.application.store.schema import upgrade_database

    url = settings.resolved_database_url
    await upgrade_database(url)
    database = Database(url)
    try:
        yield database
    finally:
        await database.aclose()


async def export_feedback(settings: Settings, args: argparse.Namespace) -> None:
    from ziggurat.application.feedback.schemas import FeedbackFilters
    from ziggurat.application.feedback.service import FeedbackService

    filters = FeedbackFilters(
        thumb=args.thumb,
        min_rating=args.min_rating,
        max_rating=args.max_rating,
        model=args.model,
        user=args.user,
        role=args.role,
        since=args.since,
        until=args.until,
    )
    written = 0
    async with _database(settings) as database:
        lines = FeedbackService(database=database).export(SYSTEM, args.format, filters)
        with _output(args.output) as output:
            async for line in lines:
                output.write(line)
                written += 1
    print(f"ziggurat: wrote {written} {args.format} records to {args.output}", file=sys.stderr)


@contextmanager
def _output(path: str) -> Iterator[BinaryIO]:
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with open(path, "wb") as output:
        yield output


async def purge_deleted(settings: Settings, older_than_days: int | None) -> None:
    from ziggurat.application.conversations.service import purge_deleted

    days = older_than_days if older_than_days is not None else settings.conversations.deleted_retention_days
    async with _database(settings) as database:
        purged = await purge_deleted(database, SYSTEM, older_than=timedelta(days=days))
    print(f"ziggurat: purged {purged} conversations deleted more than {days} days ago", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = settings_from_args(args) if args.command == "serve" else Settings()
        if args.command == "serve":
            serve(settings)
        elif args.command == "export-feedback":
            asyncio.run(export_feedback(settings, args))
        elif args.command == "purge-deleted":
            asyncio.run(purge_deleted(settings, args.older_than_days))
    except ValidationError as exc:
        print(f"ziggurat: invalid settings: {exc}", file=sys.stderr)
        return 2
    except ConfigurationError as exc:
        print(f"ziggurat: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
