"""`azora-payments dev`: the whole service on one machine, with no outside service.

A SQLite file, the Stripe emulator on loopback wired to our webhook endpoint, one worker in its
own process, e-mails written to a folder, and printed: the `/docs` URL, tokens for a demo user,
an operator and the product's backend, a ready test card, and the link to a demo checkout
session, so a newcomer pays in a browser (3-D Secure included) in a minute.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import FrameType

import httpx
import jwt

from azora_payments.devstack.emulator import EmulatorProcess
from azora_payments.devstack.processes import wait_http

DEV_STRIPE_KEY = "sk_test_azora_dev_stack_key"
DEV_PUBLISHABLE_KEY = "pk_test_azora_dev_stack_key"
DEV_WEBHOOK_SECRET = "whsec_azora_dev_stack_secret"
TOKEN_LIFETIME = 30 * 24 * 3600


def dev_token(secret: str, sub: str, *, email: str, name: str, roles: list[str]) -> str:
    now = int(time.time())
    claims = {
        "sub": sub,
        "email": email,
        "name": name,
        "roles": roles,
        "iat": now,
        "exp": now + TOKEN_LIFETIME,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def _state_dir(base: Path) -> Path:
    state = base / "var" / "dev"
    state.mkdir(parents=True, exist_ok=True)
    return state


def _jwt_secret(state: Path) -> str:
    """Kept across runs so tokens printed yesterday still work today."""
    path = state / "jwt-secret"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def _test_card(base_url: str) -> str:
    response = httpx.post(
        f"{base_url}/v1/payment_methods",
        headers={"Authorization": f"Bearer {DEV_STRIPE_KEY}"},
        data={
            "type": "card",
            "card[number]": "4242424242424242",
            "card[exp_month]": "12",
            "card[exp_year]": "2034",
            "card[cvc]": "123",
        },
        timeout=10,
    )
    response.raise_for_status()
    return str(response.json()["id"])


def run_dev(*, host: str, port: int, base: Path | None = None) -> int:
    base = base or Path.cwd()
    state = _state_dir(base)
    secret = _jwt_secret(state)
    mail_dir = state / "mail"
    mail_dir.mkdir(exist_ok=True)
    url = f"http://{host}:{port}"

    emulator = EmulatorProcess(
        webhook_url=f"{url}/api/webhooks/stripe",
        webhook_secret=DEV_WEBHOOK_SECRET,
        webhook_delay=1.0,
    )
    emulator.start()
    env = {
        **os.environ,
        "AZORA_ENV": "dev",
        "DATABASE_URL": os.environ.get("DATABASE_URL", f"sqlite:///{state / 'azora-dev.db'}"),
        "STRIPE_SECRET_KEY": DEV_STRIPE_KEY,
        "STRIPE_PUBLISHABLE_KEY": DEV_PUBLISHABLE_KEY,
        "STRIPE_WEBHOOK_SECRET": DEV_WEBHOOK_SECRET,
        "STRIPE_API_BASE": emulator.base_url,
        "JWT_SECRET": secret,
        "MAIL_OUTBOX_DIR": str(mail_dir),
        "RECEIPT_STORAGE": str(state),  # PDFs land in var/dev/receipts/<year>/<number>/
        # A demo merchant, so a dev receipt looks like a real one (the environment wins).
        "MERCHANT_NAME": os.environ.get("MERCHANT_NAME", "Azora Demo Shop"),
        "MERCHANT_ADDRESS": os.environ.get(
            "MERCHANT_ADDRESS", "12 Harbour Road\nDublin D02 XY45\nIreland"
        ),
        "MERCHANT_CONTACT": os.environ.get("MERCHANT_CONTACT", "support@azora.dev"),
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
    }
    command = [sys.executable, "-m", "azora_payments.cli"]
    processes: list[subprocess.Popen[bytes]] = []

    def stop(*_: object) -> None:
        for proc in reversed(processes):
            if proc.poll() is None:
                proc.terminate()
        for proc in processes:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        emulator.stop()

    try:
        subprocess.run([*command, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
        processes.append(
            subprocess.Popen([*command, "serve", "--host", host, "--port", str(port)], env=env)
        )
        processes.append(subprocess.Popen([*command, "worker"], env=env))
        # Ready once the database answers too; a slow machine gets the helper's long deadline.
        wait_http(f"{url}/readyz", proc=processes[0], ok=lambda status: status == 200)
        card = _test_card(emulator.base_url)
        demo = dev_token(
            secret, "demo-user", email="demo@azora.example", name="Demo User", roles=[]
        )
        operator = dev_token(
            secret,
            "demo-operator",
            email="ops@azora.example",
            name="Demo Operator",
            roles=["admin"],
        )
        backend = dev_token(
            secret,
            "demo-shop-backend",
            email="shop@azora.example",
            name="Demo Shop",
            roles=["service"],
        )
        checkout_url = url + _demo_checkout(url, backend)
        print(
            "\n".join(
                [
                    "",
                    "Azora Payments dev stack is up (Ctrl-C stops it).",
                    f"  API docs:         {url}/docs   (Authorize with a token below)",
                    f"  Stripe emulator:  {emulator.base_url}",
                    f"  E-mails:          {mail_dir}/",
                    f"  demo user token:  {demo}",
                    f"  operator token:   {operator}",
                    f"  console sign-in:  {_console_link(env['DATABASE_URL'], url)}"
                    "   (one use, within a minute; or paste the operator token)",
                    f"  test card:        {card}   (or pm_card_visa, pm_card_chargeDeclined,"
                    " pm_card_threeDSecure2Required)",
                    f"  backend token:    {backend}   (role service: POST /api/checkout/sessions)",
                    f"  checkout (demo):  {checkout_url}",
                    "                    pay there with 4242 4242 4242 4242 (any future date and"
                    " CVC), 4000 0000 0000 3220 for 3-D Secure, 4000 0000 0000 0002 declined",
                    "",
                ]
            ),
            flush=True,
        )
        received: list[int] = []

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            received.append(signum)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        while not received and all(proc.poll() is None for proc in processes):
            time.sleep(0.2)
        failed = [proc for proc in processes if proc.poll() not in (None, 0)]
        return 1 if failed and not received else 0
    finally:
        stop()


def _console_link(database_url: str, url: str) -> str:
    """A one-time console sign-in link for the demo operator: a nonce, never a token, in it."""
    from azora_payments.auth import OPERATOR_ROLE, User
    from azora_payments.db.session import Database
    from azora_payments.domain.console_sessions import create_sign_in_link

    operator = User(
        id="demo-operator", email="ops@azora.example", name="Demo Operator", roles=(OPERATOR_ROLE,)
    )

    async def make() -> str:
        db = Database(database_url, pool_size=1)
        try:
            return await create_sign_in_link(db=db, operator=operator)
        finally:
            await db.dispose()

    return f"{url}/console/login/link/{asyncio.run(make())}"


def _demo_checkout(url: str, backend_token: str) -> str:
    """A checkout session for the demo user, as the product's backend would create one."""
    response = httpx.post(
        f"{url}/api/checkout/sessions",
        json={
            "customer": {"sub": "demo-user", "email": "demo@azora.example", "name": "Demo User"},
            "amount": 2500,
            "currency": "eur",
            "description": "Demo order: Linear Algebra course",
            "metadata": {"order_id": f"demo-{uuid.uuid4().hex[:8]}"},
            "return_url": f"{url}/docs",
            "expires_in_minutes": 24 * 60,
        },
        headers={"Authorization": f"Bearer {backend_token}", "Idempotency-Key": uuid.uuid4().hex},
        timeout=10,
    )
    response.raise_for_status()
    return str(response.json()["url"])
