"""Settings: required and malformed settings stop start-up with one line naming the setting;
`dev` needs no secrets; a `.env` file is read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from azora_payments.config import ConfigError, Settings, load_settings
from tests.conftest import JWT_SECRET, STRIPE_KEY, WEBHOOK_SECRET

REQUIRED = {
    "STRIPE_SECRET_KEY": STRIPE_KEY,
    "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "JWT_SECRET": JWT_SECRET,
}
# What a token checked with a public key or JWKS must say outside dev.
ISSUED = {"JWT_ISSUER": "https://id.azora.dev", "JWT_AUDIENCE": "azora-payments"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No stray variable or `.env` of the machine running the tests takes part."""
    monkeypatch.chdir(tmp_path)
    names = {name.upper() for name in Settings.model_fields} | {"AZORA_ENV"}
    for name in list(os.environ):
        if name.upper() in names:
            monkeypatch.delenv(name)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Any:
    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


def refused(**values: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(**values)
    line = str(info.value)
    assert "\n" not in line
    return line


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_pem() -> str:
    return pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def ec_pem() -> str:
    return pem(ec.generate_private_key(ec.SECP256R1()))


# ---------------------------------------------------------------- required settings


def test_complete_environment_loads(env: Any) -> None:
    env(**REQUIRED)
    settings = load_settings()
    assert settings.environment == "production"
    assert settings.stripe_webhook_secret == [WEBHOOK_SECRET]
    assert settings.effective_jwt_algorithms == ["HS256"]
    assert settings.stripe_livemode is False
    assert settings.is_postgres is False
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.jwt_leeway_seconds == 30
    assert {"usd", "eur", "gbp", "jpy", "bhd", "kwd"} <= set(settings.currencies)


@pytest.mark.parametrize("environment", ["production", "test"])
@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_each_required_setting_is_named_when_missing(
    env: Any, environment: str, missing: str
) -> None:
    env(AZORA_ENV=environment, **{k: v for k, v in REQUIRED.items() if k != missing})
    line = refused()
    assert line.startswith(f"{missing}: "), line


def test_empty_value_counts_as_missing(env: Any) -> None:
    env(**{**REQUIRED, "STRIPE_WEBHOOK_SECRET": " , "})
    assert refused().startswith("STRIPE_WEBHOOK_SECRET: required")


def test_dev_needs_no_secret(env: Any) -> None:
    env(AZORA_ENV="dev")
    settings = load_settings()
    assert settings.environment == "dev"
    assert settings.stripe_secret_key is None
    assert settings.jwt_secret is None


def test_unknown_environment_is_refused(env: Any) -> None:
    env(AZORA_ENV="staging", **REQUIRED)
    assert refused().startswith("AZORA_ENV: ")


# ---------------------------------------------------------------- malformed settings


@pytest.mark.parametrize(
    "secret",
    [
        "short-but-random-9f8e7d",  # < 32 bytes
        "changeme-changeme-changeme-changeme",
        "my-super-secret-jwt-key-for-production-use",
        "https://example.com/0123456789abcdefghij",
        "a" * 64,  # long, but no entropy
        "abababababababababababababababababab",
    ],
)
def test_weak_jwt_secret_is_refused(env: Any, secret: str) -> None:
    env(**{**REQUIRED, "JWT_SECRET": secret})
    assert refused().startswith("JWT_SECRET: ")


def test_weak_jwt_secret_is_fine_in_dev(env: Any) -> None:
    env(AZORA_ENV="dev", JWT_SECRET="changeme")
    assert load_settings().jwt_secret == "changeme"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STRIPE_SECRET_KEY", "pk_test_" + "a" * 24),  # a publishable key
        ("STRIPE_SECRET_KEY", "azora" * 8),
        ("STRIPE_WEBHOOK_SECRET", "sk_test_" + "a" * 24),
        ("STRIPE_WEBHOOK_SECRET", "whsec_short"),
        ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET + ",nope"),
    ],
)
def test_malformed_stripe_secrets_are_refused(env: Any, name: str, value: str) -> None:
    env(**{**REQUIRED, name: value})
    assert refused().startswith(f"{name}: ")


def test_webhook_secrets_rotate_as_a_list(env: Any) -> None:
    second = "whsec_" + "another0123456789abcdef"
    env(**{**REQUIRED, "STRIPE_WEBHOOK_SECRET": f" {WEBHOOK_SECRET} ,{second}"})
    assert load_settings().stripe_webhook_secret == [WEBHOOK_SECRET, second]


def test_live_key_means_livemode(env: Any) -> None:
    env(**{**REQUIRED, "STRIPE_SECRET_KEY": "sk_live_" + "z" * 24})
    assert load_settings().stripe_livemode is True


@pytest.mark.parametrize(
    "url",
    [
        "mysql://root@localhost/db",
        "sqlite+pysqlite:///var/x.db",
        "postgresqlx://host/db",
        "postgresql+pg8000://u@h/db",
        "",
        "var/azora.db",
    ],
)
def test_bad_database_url_is_refused(env: Any, url: str) -> None:
    env(**REQUIRED, DATABASE_URL=url)
    assert refused().startswith("DATABASE_URL: ")


@pytest.mark.parametrize(
    ("url", "postgres"),
    [
        ("sqlite:///var/x.db", False),
        ("sqlite+aiosqlite:///var/x.db", False),
        ("postgres://u@h/db", True),
        ("postgresql://u:p@h:5432/db", True),
        ("postgresql+asyncpg://u@h/db", True),
    ],
)
def test_good_database_urls(env: Any, url: str, postgres: bool) -> None:
    env(**REQUIRED, DATABASE_URL=url)
    assert load_settings().is_postgres is postgres


def test_currencies_are_checked_and_lower_cased(env: Any) -> None:
    env(**REQUIRED, CURRENCIES="USD, Eur,jpy")
    assert load_settings().currencies == ["usd", "eur", "jpy"]
    env(CURRENCIES="usd,xyz")
    line = refused()
    assert line.startswith("CURRENCIES: ")
    assert "xyz" in line


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_BODY_BYTES", "lots"),
        ("MAX_BODY_BYTES", "10"),
        ("JWT_LEEWAY_SECONDS", "-1"),
        ("RATE_LIMIT_USER", "many"),
        ("RATE_LIMIT_IP", "0/minute"),
        ("RATE_LIMIT_RECEIPT_EMAIL", "3 per fortnight"),
        ("DATABASE_POOL_SIZE", "0"),
        ("TRUSTED_PROXIES", "10.0.0.0/8,proxy.internal"),
    ],
)
def test_malformed_values_name_the_setting(env: Any, name: str, value: str) -> None:
    env(**REQUIRED, **{name: value})
    assert refused().startswith(f"{name}: ")


def test_trusted_proxies_and_cors_origins_are_lists(env: Any) -> None:
    env(
        **REQUIRED,
        TRUSTED_PROXIES="10.0.0.0/8, 192.0.2.1,2001:db8::/32",
        CORS_ORIGINS="https://a.example",
    )
    settings = load_settings()
    assert settings.trusted_proxies == ["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"]
    assert settings.cors_origins == ["https://a.example"]


def test_notify_secret_rules(env: Any) -> None:
    env(**REQUIRED, NOTIFY_URL="https://product.example/hooks")
    assert refused().startswith("NOTIFY_SECRET: required")
    env(NOTIFY_SECRET="short")
    assert refused().startswith("NOTIFY_SECRET: must be at least 32 bytes")
    env(NOTIFY_SECRET="n" * 16 + "0123456789abcdef")
    assert load_settings().notify_url == "https://product.example/hooks"


# ---------------------------------------------------------------- JWT keys and algorithms


@pytest.mark.parametrize("algorithms", ["HS256,RS256", "RS256,HS512", "ES256, HS384"])
def test_mixing_hmac_and_public_key_algorithms_is_refused(env: Any, algorithms: str) -> None:
    env(**REQUIRED, JWT_ALGORITHMS=algorithms)
    line = refused()
    assert line.startswith("JWT_ALGORITHMS: ")
    assert "mix" in line


@pytest.mark.parametrize("algorithm", ["none", "PS256", "EdDSA", "hs256"])
def test_unsupported_algorithm_is_refused(env: Any, algorithm: str) -> None:
    env(**REQUIRED, JWT_ALGORITHMS=algorithm)
    assert refused().startswith("JWT_ALGORITHMS: unsupported")


def test_hmac_with_a_public_key_is_refused(env: Any, rsa_pem: str) -> None:
    env(**{k: v for k, v in REQUIRED.items() if k != "JWT_SECRET"})
    env(JWT_PUBLIC_KEY=rsa_pem, JWT_ALGORITHMS="HS256")
    assert refused().startswith("JWT_ALGORITHMS: ")


def test_public_key_algorithm_with_a_secret_is_refused(env: Any) -> None:
    env(**REQUIRED, JWT_ALGORITHMS="RS256")
    assert refused().startswith("JWT_ALGORITHMS: ")


def test_two_kinds_of_key_are_refused(env: Any, rsa_pem: str) -> None:
    env(**REQUIRED, JWT_PUBLIC_KEY=rsa_pem)
    assert refused().startswith("JWT_SECRET: ")


def test_public_key_defaults_to_rs256_and_accepts_escaped_newlines(env: Any, rsa_pem: str) -> None:
    env(**{k: v for k, v in REQUIRED.items() if k != "JWT_SECRET"}, **ISSUED)
    env(JWT_PUBLIC_KEY=rsa_pem.replace("\n", "\\n"))
    settings = load_settings()
    assert settings.effective_jwt_algorithms == ["RS256"]
    assert settings.jwt_public_key == rsa_pem.strip()


def test_jwks_url_alone_is_a_key(env: Any) -> None:
    env(**{k: v for k, v in REQUIRED.items() if k != "JWT_SECRET"}, **ISSUED)
    env(JWT_JWKS_URL="https://id.azora.dev/.well-known/jwks.json")
    assert load_settings().effective_jwt_algorithms == ["RS256"]


@pytest.mark.parametrize("key", ["JWT_PUBLIC_KEY", "JWT_JWKS_URL"])
@pytest.mark.parametrize("missing", ["JWT_ISSUER", "JWT_AUDIENCE"])
def test_public_keys_need_issuer_and_audience_outside_dev(
    env: Any, rsa_pem: str, key: str, missing: str
) -> None:
    # A shared identity provider's keys sign other apps' tokens too: without iss and aud, their
    # `admin` would be an operator here.
    value = rsa_pem if key == "JWT_PUBLIC_KEY" else "https://id.azora.dev/.well-known/jwks.json"
    env(**{k: v for k, v in REQUIRED.items() if k != "JWT_SECRET"}, **{key: value})
    env(**{name: v for name, v in ISSUED.items() if name != missing})
    assert refused().startswith(f"{missing}: required outside dev")
    env(AZORA_ENV="dev")
    assert load_settings().environment == "dev"


def test_a_secret_needs_no_issuer_or_audience(env: Any) -> None:
    env(**REQUIRED)
    settings = load_settings()
    assert settings.jwt_issuer is None
    assert settings.jwt_audience is None


# ---------------------------------------------------------------- endpoints that carry secrets


@pytest.mark.parametrize("name", ["JWT_JWKS_URL", "STRIPE_API_BASE", "NOTIFY_URL"])
@pytest.mark.parametrize(
    "url",
    [
        "http://id.azora.dev/jwks.json",
        "http://10.0.0.5:8080/x",
        "http://[fe80::1]/x",
        "ftp://id.azora.dev/x",
        "https:///no-host",
        "//id.azora.dev/x",
    ],
)
def test_plain_http_is_refused_outside_dev(env: Any, name: str, url: str) -> None:
    env(**secure_base(name), **{name: url})
    assert refused() == f"{name}: must be https:// outside dev (http:// only to loopback)"
    env(AZORA_ENV="dev")
    assert load_settings().environment == "dev"


@pytest.mark.parametrize("name", ["JWT_JWKS_URL", "STRIPE_API_BASE", "NOTIFY_URL"])
@pytest.mark.parametrize(
    "url",
    [
        "https://id.azora.dev/x",
        "http://127.0.0.1:12111",
        "http://127.3.2.1/x",
        "http://[::1]:8000/x",
        "http://localhost:8000/x",
        "http://stripe.localhost/x",
    ],
)
def test_https_or_loopback_is_accepted(env: Any, name: str, url: str) -> None:
    env(**secure_base(name), **{name: url})
    assert getattr(load_settings(), name.lower()) == url


def secure_base(name: str) -> dict[str, str]:
    """A complete production environment in which `name` is the setting under test."""
    values = dict(REQUIRED)
    if name == "JWT_JWKS_URL":
        del values["JWT_SECRET"]
        values.update(ISSUED)
    if name == "NOTIFY_URL":
        values["NOTIFY_SECRET"] = "n0t1fy-" + "4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e"
    return values


@pytest.mark.parametrize(
    "value", ["not a key", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"]
)
def test_malformed_public_key_is_refused(env: Any, value: str) -> None:
    env(**{k: v for k, v in REQUIRED.items() if k != "JWT_SECRET"}, JWT_PUBLIC_KEY=value)
    assert refused().startswith("JWT_PUBLIC_KEY: ")


def test_key_must_fit_the_algorithm(env: Any, rsa_pem: str, ec_pem: str) -> None:
    env(**{k: v for k, v in REQUIRED.items() if k != "JWT_SECRET"}, **ISSUED)
    env(JWT_PUBLIC_KEY=rsa_pem, JWT_ALGORITHMS="ES256")
    assert refused().startswith("JWT_PUBLIC_KEY: ")
    env(JWT_PUBLIC_KEY=ec_pem, JWT_ALGORITHMS="RS256")
    assert refused().startswith("JWT_PUBLIC_KEY: ")
    env(JWT_ALGORITHMS="ES256")
    assert load_settings().effective_jwt_algorithms == ["ES256"]


# ---------------------------------------------------------------- .env


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    lines = [f"{name}={value}" for name, value in REQUIRED.items()]
    lines += ["MERCHANT_NAME=Azora Academy", "CURRENCIES=usd,eur", "# a comment", ""]
    (tmp_path / ".env").write_text("\n".join(lines), encoding="utf-8")
    settings = load_settings()
    assert settings.merchant_name == "Azora Academy"
    assert settings.currencies == ["usd", "eur"]
    assert settings.jwt_secret == JWT_SECRET


def test_environment_beats_dotenv(tmp_path: Path, env: Any) -> None:
    (tmp_path / ".env").write_text(
        "\n".join(f"{k}={v}" for k, v in REQUIRED.items()) + "\nMERCHANT_NAME=From file\n",
        encoding="utf-8",
    )
    env(MERCHANT_NAME="From env")
    assert load_settings().merchant_name == "From env"


def test_dotenv_with_a_bad_value_is_named(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("AZORA_ENV=dev\nDATABASE_URL=mysql://x/y\n", encoding="utf-8")
    assert refused().startswith("DATABASE_URL: ")
