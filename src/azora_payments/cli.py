"""The `azora-payments` command: serve, worker, migrate, reconcile, events, jobs, dev."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
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
        engine = create_engine(settings.database_url, pooler=settings.database_pooler)
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


def _require_receipt_storage(settings: Settings) -> None:
    """A bucket that does not exist (or refuses these credentials) stops start-up in one line,
    rather than every receipt job failing later."""
    from azora_payments.storage import StorageUnavailable, storage_for

    storage = storage_for(settings.receipt_storage)
    if storage is None:
        return
    try:
        asyncio.run(storage.check())
    except StorageUnavailable as exc:
        print(f"azora-payments: RECEIPT_STORAGE: {exc}", file=sys.stderr)
        failed = True
    else:
        failed = False
    # obstore's client must go before the interpreter's shutdown, or its runtime aborts the
    # process: the failed request's traceback keeps it alive in a reference cycle.
    del storage
    gc.collect()
    if failed:
        raise SystemExit(1)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings()
    configure_logging(settings.log_level)
    _require_current_schema(settings)
    _require_receipt_storage(settings)
    if args.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Each worker process counts on its own; /metrics adds them up from this folder.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="azora-metrics-")
    if args.metrics_port is not None:
        # The API's processes read their settings from the environment: they leave /metrics out.
        os.environ["METRICS_PORT"] = str(args.metrics_port)
        _serve_metrics_apart(_settings(), host=args.metrics_host, port=args.metrics_port)
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


def _serve_metrics_apart(settings: Settings, *, host: str, port: int) -> None:
    """/metrics on its own port, from this (the parent) process: with several workers it adds up
    their counts from PROMETHEUS_MULTIPROC_DIR, so it must start after that is set."""
    import threading

    import uvicorn

    from azora_payments.app import create_metrics_app

    config = uvicorn.Config(
        create_metrics_app(settings),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
    )
    threading.Thread(target=uvicorn.Server(config).run, name="metrics", daemon=True).start()


def cmd_migrate(_: argparse.Namespace) -> int:
    from azora_payments.db.migrate import upgrade

    settings = _settings()
    configure_logging(settings.log_level)
    upgrade(settings.database_url)
    print("azora-payments: database is at the latest schema")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from azora_payments.jobs import commands

    settings = _settings()
    configure_logging(settings.log_level)
    _require_current_schema(settings)
    _require_receipt_storage(settings)
    return commands.worker(
        settings,
        modules=args.imports,
        only=args.kinds,
        concurrency=args.concurrency,
        once=args.once,
        lease=args.lease,
        heartbeat=args.heartbeat,
        grace=args.grace,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
    )


def cmd_jobs_list(args: argparse.Namespace) -> int:
    from azora_payments.jobs import commands

    settings = _settings()
    configure_logging(settings.log_level)
    return commands.list_jobs(settings, status=args.status, kind=args.kind, limit=args.limit)


def cmd_jobs_retry(args: argparse.Namespace) -> int:
    from azora_payments.jobs import commands

    if bool(args.ids) == args.all_dead:
        print("azora-payments: give job ids or --all-dead", file=sys.stderr)
        return 2
    settings = _settings()
    configure_logging(settings.log_level)
    return commands.retry_jobs(settings, job_ids=args.ids, all_dead=args.all_dead, kind=args.kind)


def _add_job_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = sub.add_parser("worker", help="run queued jobs (e-mails, receipts, clean-ups)")
    worker.add_argument("--concurrency", type=int, default=None, help="jobs run at once")
    worker.add_argument("--once", action="store_true", help="run what is due, then exit")
    worker.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="also import MODULE for its job kinds (repeatable; or AZORA_JOB_MODULES)",
    )
    worker.add_argument(
        "--kinds",
        nargs="+",
        default=[],
        metavar="PATTERN",
        help="run only the kinds matching these patterns (`mail.*`); default all",
    )
    worker.add_argument(
        "--lease",
        type=float,
        default=30.0,
        help="seconds a job is leased for, renewed by a heartbeat; a dead worker's jobs are "
        "taken again after it (30)",
    )
    worker.add_argument(
        "--heartbeat",
        type=float,
        default=None,
        help="seconds between lease renewals (a third of the lease)",
    )
    worker.add_argument(
        "--grace",
        type=float,
        default=25.0,
        help="seconds the jobs in hand get to finish on SIGTERM before release (25)",
    )
    worker.add_argument("--metrics-port", type=int, default=None, help="serve /metrics here")
    worker.add_argument("--metrics-host", default="127.0.0.1")
    worker.set_defaults(func=cmd_worker)

    jobs = sub.add_parser("jobs", help="list and retry queued jobs")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)
    listing = jobs_sub.add_parser("list", help="list jobs (dead ones by default)")
    listing.add_argument("--status", default="dead", choices=["ready", "running", "done", "dead"])
    listing.add_argument("--kind", default=None)
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(func=cmd_jobs_list)
    retry = jobs_sub.add_parser("retry", help="put dead jobs back to ready, attempts reset")
    retry.add_argument("ids", nargs="*", type=int, metavar="ID")
    retry.add_argument("--all-dead", action="store_true", help="every dead job")
    retry.add_argument("--kind", default=None, help="only dead jobs of this kind")
    retry.set_defaults(func=cmd_jobs_retry)


def cmd_dev(args: argparse.Namespace) -> int:
    try:
        from azora_payments.devstack.dev import run_dev
    except ImportError:
        print("azora-payments: `dev` needs the dev extra: pip install -e '.[dev]'", file=sys.stderr)
        return 2
    return run_dev(host=args.host, port=args.port)


def cmd_reconcile(_: argparse.Namespace) -> int:
    from azora_payments.jobs import events

    settings = _settings()
    configure_logging(settings.log_level)
    _require_current_schema(settings)
    return events.reconcile_command(settings)


def cmd_events_list(args: argparse.Namespace) -> int:
    from azora_payments.jobs import events

    settings = _settings()
    configure_logging(settings.log_level)
    return events.list_command(settings, status=args.status, limit=args.limit)


def cmd_events_replay(args: argparse.Namespace) -> int:
    from azora_payments.jobs import events

    if bool(args.ids) == args.all_parked:
        print("azora-payments: give event ids or --all-parked", file=sys.stderr)
        return 2
    settings = _settings()
    configure_logging(settings.log_level)
    return events.replay_command(settings, event_ids=args.ids, all_parked=args.all_parked)


def _add_event_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reconcile = sub.add_parser(
        "reconcile", help="one pass bringing stuck payments and missed events in line with Stripe"
    )
    reconcile.set_defaults(func=cmd_reconcile)

    events = sub.add_parser("events", help="list and replay recorded Stripe events")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    listing = events_sub.add_parser("list", help="recorded events, newest first")
    listing.add_argument(
        "--status", default=None, choices=["received", "applied", "ignored", "parked"]
    )
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(func=cmd_events_list)
    replay = events_sub.add_parser("replay", help="apply events again (idempotent)")
    replay.add_argument("ids", nargs="*", metavar="EVENT_ID")
    replay.add_argument("--all-parked", action="store_true", help="every parked event")
    replay.set_defaults(func=cmd_events_replay)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="azora-payments", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--metrics-port", type=int, default=None, help="serve /metrics here only (internal)"
    )
    serve.add_argument("--metrics-host", default="127.0.0.1")
    serve.set_defaults(func=cmd_serve)

    dev = sub.add_parser("dev", help="everything on this machine: SQLite, Stripe emulator, worker")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.set_defaults(func=cmd_dev)

    migrate = sub.add_parser("migrate", help="bring the database to the latest schema")
    migrate.set_defaults(func=cmd_migrate)

    _add_job_parsers(sub)
    _add_event_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    raise SystemExit(main())
