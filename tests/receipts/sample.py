"""The sample receipt (Latin, a rupee sign and a CJK slice) shared by the PDF tests and
bench/receipts_bench.py."""

from __future__ import annotations

from datetime import UTC, datetime

from azora_payments.domain.receipt_content import ReceiptDocument

SAMPLE = ReceiptDocument(
    receipt_id="rcpt_sample",
    number="R-2026-000042",
    issued_at=datetime(2026, 12, 1, 10, 5, tzinfo=UTC),
    merchant_name="Azora Demo Shop",
    merchant_address="12 Harbour Road\nDublin D02 XY45\nIreland",
    merchant_contact="support@azora.dev",
    customer_email="buyer@shop.example",
    description="Café crème — ₹ test 東京",
    amount=2500,
    currency="eur",
    card_brand="visa",
    card_last4="4242",
)
