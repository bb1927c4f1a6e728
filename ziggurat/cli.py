"""Command line: `ziggurat serve`, `ziggurat --version`.

Builds the one `Settings` object from the environment plus flags, configures
logging, and runs uvicorn. Configuration problems are printed as one clear line
and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from ziggurat import __version__
from ziggurat.config import Settings
from ziggurat.errors import ConfigurationError
from ziggurat.telemetry import configure_logging


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
    return parser


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


def serve(settings: Settings) -> None:
    """Run uvicorn; a model that fails to load after start-up stops the server with that error."""
    import uvicorn

    from ziggurat.app import build_app, build_engine, check_topology

    configure_logging(level=settings.log.level, json_format=settings.log.json_format)
    check_topology(settings)
    build_engine(settings)  # fail fast on a bad engine or model reference, before binding the port
    fatal: list[str] = []

    def stop_on_fatal(message: str) -> None:
        fatal.append(message)
        server.should_exit = True

    app = build_app(settings, on_fatal=stop_on_fatal)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
    )
    server = uvicorn.Server(config)
    server.run()
    if fatal:
        raise ConfigurationError(fatal[0])


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        if args.command == "serve":
            serve(settings)
    except ValidationError as exc:
        print(f"ziggurat: invalid settings: {exc}", file=sys.stderr)
        return 2
    except ConfigurationError as exc:
        print(f"ziggurat: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
