"""The one Settings class: every knob of the service, read from the environment and `.env`.

Names and defaults are those of API.md's Operations table. Outside `dev`, secrets that are
missing, short or obviously placeholders stop start-up with one line naming the setting.
"""

from __future__ import annotations

import ipaddress
from functools import cached_property
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_CURRENCIES = (
    "usd,eur,gbp,cad,aud,chf,jpy,krw,inr,bhd,kwd,jod,omr,tnd,nzd,sgd,hkd,sek,nok,dkk,pln,czk,"
    "huf,ron,bgn,mxn,brl,zar,aed,ils,thb,myr,php,idr,twd,vnd,clp,xof,xaf"
)
DATABASE_URL_PREFIXES = (
    "sqlite://",
    "sqlite+aiosqlite://",
    "postgres://",
    "postgresql://",
    "postgresql+asyncpg://",
    "postgresql+psycopg://",
    "postgresql+psycopg2://",
)
PLACEHOLDER_MARKERS = ("changeme", "change-me", "placeholder", "example", "secret", "xxxx")

Environment = Literal["dev", "test", "production"]


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it in one line."""


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CsvList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    environment: Environment = Field(default="production", alias="AZORA_ENV")
    log_level: str = "INFO"

    database_url: str = "sqlite:///var/azora-payments.db"
    database_pool_size: int = Field(default=10, ge=1, le=200)
    # `pgbouncer`: DATABASE_URL is a PgBouncer in transaction mode (no prepared statements kept).
    database_pooler: Literal["none", "pgbouncer"] = "none"
    redis_url: str | None = None

    stripe_secret_key: str | None = None
    stripe_api_base: str = "https://api.stripe.com"
    stripe_webhook_secret: CsvList = Field(default_factory=list)
    stripe_max_network_retries: int = Field(default=2, ge=0, le=10)
    # With the SDK's retries, a Stripe call must end inside IDEMPOTENCY_LOCK_SECONDS (3 x 8 s
    # plus backoff < 30 s): otherwise a client's retry could take the key over mid-call.
    stripe_timeout_seconds: float = Field(default=8.0, gt=0, le=120)

    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_jwks_url: str | None = None
    jwt_algorithms: CsvList = Field(default_factory=list)
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=600)
    jwt_jwks_cache_seconds: int = Field(default=300, ge=0)

    currencies: CsvList = Field(default_factory=lambda: DEFAULT_CURRENCIES.split(","))

    idempotency_key_ttl_hours: int = Field(default=24, ge=1, le=24 * 30)
    idempotency_lock_seconds: int = Field(default=30, ge=1, le=3600)

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Stripe's events are a few KiB: anything near this is not Stripe, and is refused before the
    # HMAC is computed over it.
    webhook_max_body_bytes: int = Field(default=512 * 1024, ge=1024)

    rate_limit_user: str = "120/minute"
    rate_limit_ip: str = "600/minute"
    rate_limit_receipt_email: str = "3/hour"
    # Per caller, on top of the per-payment limit: one payer with many small payments must not
    # make us send merchant-branded mail to strangers.
    rate_limit_receipt_email_user: str = "10/day"
    # Failed webhook requests (size or signature) per address; verified ones are never counted.
    rate_limit_webhook_failures: str = "60/minute"

    # /metrics tells payment counts, Stripe errors and queue depth: with a token it needs
    # `Authorization: Bearer <it>`; with a port (`serve --metrics-port`) it is served there only.
    metrics_token: str | None = Field(default=None, min_length=16)
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # Declines before new payment attempts are refused (card testing): per user, per card
    # (Stripe's fingerprint) and per client address.
    rate_limit_declines_user: str = "5/hour"
    rate_limit_declines_card: str = "3/hour"
    rate_limit_declines_ip: str = "30/hour"

    cors_origins: CsvList = Field(default_factory=list)
    trusted_proxies: CsvList = Field(default_factory=list)

    smtp_url: str | None = None
    receipt_from_email: str = "receipts@azora.dev"
    merchant_name: str = "Azora"
    merchant_address: str = ""
    # How a customer reaches the merchant, printed on receipts (RECEIPT_FROM_EMAIL when empty).
    merchant_contact: str = ""
    receipt_storage: str = "var/receipts"
    receipt_locale: str = "en"
    receipt_timezone: str = "UTC"
    mail_outbox_dir: str | None = None

    notify_url: str | None = None
    notify_secret: str | None = None

    worker_poll_seconds: float = Field(default=0.5, gt=0, le=60)
    worker_concurrency: int = Field(default=4, ge=1, le=64)
    # Jobs of a batched kind (webhook events) claimed and run together, in one transaction.
    worker_batch_size: int = Field(default=50, ge=1, le=500)
    reconcile_after_seconds: int = Field(default=900, ge=1)
    # Abandoned 3-D Secure payments are canceled at Stripe after this (API.md).
    requires_action_expires_hours: int = Field(default=24, ge=1, le=24 * 30)

    # The operator console: on in dev, off elsewhere unless CONSOLE_ENABLED says so.
    console_enabled: bool | None = None
    console_session_hours: float = Field(default=8, gt=0, le=24 * 7)
    console_refund_approval_above: int | None = Field(default=None, ge=0)

    # `Server-Timing` on answers: none, operators' only, or all (the dev default). Not for all in
    # production: to a card tester it would tell whether Stripe was called.
    server_timing: Literal["off", "operators", "all"] | None = None

    # Checkout sessions and their page: on in dev, off elsewhere unless CHECKOUT_ENABLED says so.
    checkout_enabled: bool | None = None
    stripe_publishable_key: str | None = Field(default=None, pattern=r"^pk_(test|live)_\w+$")

    @field_validator(
        "stripe_webhook_secret", "jwt_algorithms", "cors_origins", "trusted_proxies", mode="before"
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("currencies", mode="before")
    @classmethod
    def _currencies(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, list):
            return [str(code).lower() for code in value]
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        # Only drivers the service can run on: anything else would fail later, with a traceback.
        if not value.startswith(DATABASE_URL_PREFIXES):
            raise ValueError("must be postgresql://… or sqlite:///…")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not an address or network") from None
        return value

    @field_validator(
        "rate_limit_user",
        "rate_limit_ip",
        "rate_limit_receipt_email",
        "rate_limit_receipt_email_user",
        "rate_limit_webhook_failures",
        "rate_limit_declines_user",
        "rate_limit_declines_card",
        "rate_limit_declines_ip",
    )
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        from limits import parse

        try:
            item = parse(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate like 120/minute") from None
        if item.amount < 1:
            raise ValueError(f"{value!r} allows no request at all")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str | None) -> str | None:
        from azora_payments.mail import parse_smtp_url

        if value:
            parse_smtp_url(value)
        return value or None

    @field_validator("receipt_storage")
    @classmethod
    def _receipt_storage(cls, value: str) -> str:
        from azora_payments.storage import parse_s3_url

        if value.strip().lower().startswith("s3:"):
            parse_s3_url(value.strip())
        return value

    @field_validator("receipt_locale")
    @classmethod
    def _receipt_locale(cls, value: str) -> str:
        from babel import Locale, UnknownLocaleError

        try:
            Locale.parse(value.replace("-", "_"))
        except (ValueError, UnknownLocaleError):
            raise ValueError(f"{value!r} is not a CLDR locale (en, fr, de_CH, ja…)") from None
        return value

    @field_validator("receipt_timezone")
    @classmethod
    def _receipt_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a time zone (UTC, Europe/Paris…)") from None
        return value

    @field_validator("jwt_public_key")
    @classmethod
    def _public_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # A PEM in one environment variable line often comes with its newlines escaped.
        value = value.replace("\\n", "\n").strip()
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        try:
            load_pem_public_key(value.encode())
        except (ValueError, TypeError):
            raise ValueError("is not a PEM public key (-----BEGIN PUBLIC KEY-----…)") from None
        return value

    @model_validator(mode="after")
    def _secrets(self) -> Settings:
        from azora_payments.domain.money import is_supported_currency_code

        for code in self.currencies:
            if not is_supported_currency_code(code):
                raise ValueError(f"CURRENCIES: unknown currency {code!r}")
        algorithms = self.jwt_algorithms or self.default_jwt_algorithms()
        for alg in algorithms:
            if alg not in ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384"):
                raise ValueError(f"JWT_ALGORITHMS: unsupported algorithm {alg!r}")
        hmac = any(a.startswith("HS") for a in algorithms)
        if hmac and any(not a.startswith("HS") for a in algorithms):
            # One key, one family: mixing would let a public key be used as an HMAC secret.
            raise ValueError("JWT_ALGORITHMS: do not mix HMAC and public-key algorithms")
        if self.jwt_secret and (self.jwt_public_key or self.jwt_jwks_url):
            raise ValueError("JWT_SECRET: set either it or JWT_PUBLIC_KEY / JWT_JWKS_URL, not both")
        if hmac and (self.jwt_public_key or self.jwt_jwks_url):
            raise ValueError("JWT_ALGORITHMS: HS* verifies with JWT_SECRET, not a public key")
        if not hmac and self.jwt_secret:
            raise ValueError("JWT_ALGORITHMS: RS*/ES* need JWT_PUBLIC_KEY or JWT_JWKS_URL")
        if self.jwt_public_key:
            _check_key_fits(self.jwt_public_key, algorithms)
        if self.environment == "dev":
            return self
        if not self.stripe_secret_key:
            raise ValueError("STRIPE_SECRET_KEY: required outside dev")
        if not self.stripe_secret_key.startswith(("sk_test_", "sk_live_", "rk_test_", "rk_live_")):
            raise ValueError("STRIPE_SECRET_KEY: must be a Stripe secret key (sk_… or rk_…)")
        if not self.stripe_webhook_secret:
            raise ValueError("STRIPE_WEBHOOK_SECRET: required outside dev")
        for secret in self.stripe_webhook_secret:
            if not secret.startswith("whsec_") or len(secret) < 16:
                raise ValueError("STRIPE_WEBHOOK_SECRET: each secret must be a whsec_… value")
        if not (self.jwt_secret or self.jwt_public_key or self.jwt_jwks_url):
            raise ValueError("JWT_SECRET: one of JWT_SECRET, JWT_PUBLIC_KEY, JWT_JWKS_URL required")
        if self.jwt_secret is not None:
            if len(self.jwt_secret.encode()) < 32:
                raise ValueError("JWT_SECRET: must be at least 32 bytes")
            if _looks_placeholder(self.jwt_secret):
                raise ValueError("JWT_SECRET: looks like a placeholder; use a random value")
        if (self.jwt_public_key or self.jwt_jwks_url) and not self.jwt_issuer:
            # A shared identity provider signs every app's tokens with the same keys: only
            # `iss` and `aud` tell ours from another app's (whose `admin` is not our operator).
            raise ValueError("JWT_ISSUER: required outside dev with JWT_PUBLIC_KEY / JWT_JWKS_URL")
        if (self.jwt_public_key or self.jwt_jwks_url) and not self.jwt_audience:
            raise ValueError(
                "JWT_AUDIENCE: required outside dev with JWT_PUBLIC_KEY / JWT_JWKS_URL"
            )
        for name, url in (
            ("JWT_JWKS_URL", self.jwt_jwks_url),
            ("STRIPE_API_BASE", self.stripe_api_base),
            ("NOTIFY_URL", self.notify_url),
        ):
            if url is not None and not _is_secure_url(url):
                raise ValueError(f"{name}: must be https:// outside dev (http:// only to loopback)")
        if self.notify_url and not self.notify_secret:
            raise ValueError("NOTIFY_SECRET: required when NOTIFY_URL is set")
        if self.notify_secret is not None and len(self.notify_secret.encode()) < 32:
            raise ValueError("NOTIFY_SECRET: must be at least 32 bytes")
        if self.checkout_on and not self.stripe_publishable_key:
            raise ValueError("STRIPE_PUBLISHABLE_KEY: required when CHECKOUT_ENABLED is on")
        if self.stripe_publishable_key and (
            self.stripe_publishable_key.startswith("pk_live_") != self.stripe_livemode
        ):
            raise ValueError("STRIPE_PUBLISHABLE_KEY: live and test keys do not mix")
        return self

    def default_jwt_algorithms(self) -> list[str]:
        return ["HS256"] if self.jwt_secret else ["RS256"]

    @cached_property
    def effective_jwt_algorithms(self) -> list[str]:
        return self.jwt_algorithms or self.default_jwt_algorithms()

    @property
    def stripe_livemode(self) -> bool:
        return bool(self.stripe_secret_key and "_live_" in self.stripe_secret_key)

    @property
    def console_on(self) -> bool:
        if self.console_enabled is not None:
            return self.console_enabled
        return self.environment == "dev"

    @property
    def server_timing_mode(self) -> Literal["off", "operators", "all"]:
        if self.server_timing is not None:
            return self.server_timing
        return "all" if self.environment == "dev" else "off"

    @property
    def checkout_on(self) -> bool:
        if self.checkout_enabled is not None:
            return self.checkout_enabled
        return self.environment == "dev"

    @property
    def stripe_js_url(self) -> str:
        """Stripe's own Stripe.js, unless the API is an emulator on this machine (dev, tests):
        then the emulator's, so the page works with no internet."""
        if self.stripe_uses_emulator:
            return self.stripe_api_base.rstrip("/") + "/js.stripe.com/v3/"
        return "https://js.stripe.com/v3/"

    @property
    def stripe_uses_emulator(self) -> bool:
        from urllib.parse import urlsplit

        parts = urlsplit(self.stripe_api_base)
        return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgres", "postgresql"))


def _check_key_fits(pem: str, algorithms: list[str]) -> None:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key(pem.encode())
    for alg in algorithms:
        kind = {"RS": RSAPublicKey, "ES": EllipticCurvePublicKey}[alg[:2]]
        if not isinstance(key, kind):
            raise ValueError(f"JWT_PUBLIC_KEY: this key cannot verify {alg} tokens")


def is_loopback_host(host: str | None) -> bool:
    """`localhost` or a loopback address: traffic that never leaves the machine."""
    if not host:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_secure_url(url: str) -> bool:
    # Keys, the Stripe secret key and signed notifications travel on these: in clear only to
    # this machine (an emulator, a sidecar).
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and is_loopback_host(parts.hostname)


def _looks_placeholder(secret: str) -> bool:
    lowered = secret.lower()
    return any(marker in lowered for marker in PLACEHOLDER_MARKERS) or len(set(secret)) < 8


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning pydantic's report into one line naming the setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first["loc"]).upper()
        message = str(first["msg"]).removeprefix("Value error, ")
        line = message if not loc else f"{loc}: {message}"
        raise ConfigError(line) from None
