"""`azora-payments dev` from an empty folder: it prints what a newcomer needs, and it works."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from azora_payments.devstack.processes import START_SECONDS, free_port


def test_dev_stack_saves_a_card_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "JWT_", "DATABASE"))}
    stderr = (tmp_path / "stderr.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "azora_payments.cli", "dev", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    try:
        lines: dict[str, str] = {}
        # dev waits up to the helper's deadline for its server: this waits a little longer.
        deadline = time.monotonic() + START_SECONDS + 60
        assert proc.stdout is not None
        while "checkout (demo)" not in lines and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if ":" in line:
                label, _, value = line.strip().partition(":")
                lines[label.strip()] = value.strip()
        assert "checkout (demo)" in lines, lines
        docs_url = lines["API docs"].split()[0]
        token = lines["demo user token"]
        operator = lines["operator token"]
        card = lines["test card"].split()[0]
        assert re.fullmatch(r"pm_\w+", card)

        docs = httpx.get(docs_url, timeout=5)
        assert docs.status_code == 200
        assert "swagger-ui-bundle.js" in docs.text

        base = f"http://127.0.0.1:{port}"
        saved = httpx.post(
            f"{base}/api/payments/methods/save",
            json={"payment_method_id": card, "set_default": True},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert saved.status_code == 201, saved.text
        assert saved.json()["last4"] == "4242"
        audit = httpx.get(
            f"{base}/api/audit", headers={"Authorization": f"Bearer {operator}"}, timeout=10
        )
        assert audit.status_code == 200
        assert {r["action"] for r in audit.json()["data"]} >= {"payment_method.saved"}
        assert (tmp_path / "var" / "dev" / "azora-dev.db").exists()

        # The console's one-time link: a GET shows a button, the POST signs in, once.
        link = lines["console sign-in"].split()[0]
        nonce = link.rsplit("/", 1)[1]
        assert link.startswith(f"{base}/console/login/link/")
        assert "eyJ" not in link
        assert httpx.get(link, timeout=5).status_code == 200
        redeemed = httpx.post(f"{base}/console/login/link", data={"nonce": nonce}, timeout=10)
        assert redeemed.status_code == 303
        assert redeemed.headers["set-cookie"].startswith("__Host-azora-console=")
        used = httpx.post(f"{base}/console/login/link", data={"nonce": nonce}, timeout=10)
        assert used.status_code == 401

        # The demo checkout session: its page, and paying it once.
        checkout_url = lines["checkout (demo)"].split()[0]
        assert re.fullmatch(rf"{base}/checkout/cs_[0-9a-z]{{32}}", checkout_url)
        page = httpx.get(checkout_url, timeout=5)
        assert page.status_code == 200
        assert "€25.00" in page.text
        assert "/js.stripe.com/v3/" in page.text
        checkout_id = checkout_url.rsplit("/", 1)[1]
        paid = httpx.post(
            f"{base}/api/checkout/sessions/{checkout_id}/pay",
            json={"payment_method_id": "pm_card_visa"},
            timeout=10,
        )
        assert paid.status_code == 201, paid.text
        session = httpx.get(
            f"{base}/api/checkout/sessions/{checkout_id}",
            headers={"Authorization": f"Bearer {lines['backend token'].split()[0]}"},
            timeout=5,
        )
        assert session.json()["status"] == "complete"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            assert proc.stdout is not None
            proc.stdout.close()
            stderr.close()
    assert code == 0, (tmp_path / "stderr.log").read_text()[-2000:]
    # Everything it started is gone: the port is free again.
    with httpx.Client() as client:
        try:
            client.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            raise AssertionError("the API server outlived `dev`")
        except httpx.ConnectError:
            pass
