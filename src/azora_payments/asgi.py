"""The ASGI entry point for uvicorn's workers: settings from the environment."""

from __future__ import annotations

from fastapi import FastAPI

from azora_payments.app import create_app
from azora_payments.config import load_settings
from azora_payments.logs import configure_logging


def app_from_env() -> FastAPI:
    settings = load_settings()
    configure_logging(settings.log_level)
    return create_app(settings)
