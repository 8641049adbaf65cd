"""The `azora-payments` command: serve, worker, migrate, reconcile, events, jobs, dev."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from azora_payments.config import ConfigError, Settings, load_settings
from azora_payments.logs import configure_logging


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"azora-payments: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _require_current_schema(settings: Settings) -> None:
    from azora_payments.db.migrate import schema_is_current
    from azora_payments.db.session import create_engine

    async def check() -> bool:
        engine = create_engine(settings.database_url)
        try:
            return await schema_is_current(engine)
        finally:
            await engine.dispose()

    try:
        current = asyncio.run(check())
    except Exception as exc:
        print(f"azora-payments: database unavailable: {type(exc).__name__}", file=sys.stderr)
        raise SystemExit(1) from None
    if not current:
        print(
            "azora-payments: database schema is not current: run `azora-payments migrate`",
            file=sys.stderr,
        )
        raise SystemExit(1)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings()
    configure_logging(settings.log_level)
    _require_current_schema(settings)
    uvicorn.run(
        "azora_payments.asgi:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=None,
        access_log=False,
        proxy_headers=False,  # X-Forwarded-For is believed only from TRUSTED_PROXIES, by us
        server_header=False,
        timeout_graceful_shutdown=20,
    )
    return 0


def cmd_migrate(_: argparse.Namespace) -> int:
    from azora_payments.db.migrate import upgrade

    settings = _settings()
    configure_logging(settings.log_level)
    upgrade(settings.database_url)
    print("azora-payments: database is at the latest schema")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="azora-payments", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="bring the database to the latest schema")
    migrate.set_defaults(func=cmd_migrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    raise SystemExit(main())
