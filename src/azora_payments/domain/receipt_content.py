"""What a receipt says, as plain values (`ReceiptDocument`) and as the words and figures a reader
sees (`ReceiptContent`): the PDF and the e-mail's HTML and text parts are drawn from the same
`ReceiptContent`, so they cannot disagree."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum

from azora_payments.domain.formatting import Formatter
from azora_payments.domain.statuses import RefundStatus

__all__ = [
    "MARK_COLOURS",
    "ReceiptContent",
    "ReceiptDocument",
    "RefundLine",
    "RefundMark",
    "Row",
    "content_of",
]

# Refunds that take money back (or will): listed and counted in the net amount.
SHOWN_REFUNDS = (RefundStatus.SUCCEEDED, RefundStatus.PENDING)


class RefundMark(StrEnum):
    REFUNDED = "Refunded"
    PARTIALLY_REFUNDED = "Partially refunded"


# The mark's background and ink, the same in the PDF and the e-mail.
MARK_COLOURS = {
    RefundMark.REFUNDED: ("#fee7e7", "#a21c2a"),
    RefundMark.PARTIALLY_REFUNDED: ("#fff3d6", "#965400"),
}


@dataclass(frozen=True, slots=True)
class RefundLine:
    amount: int
    created_at: datetime
    status: str


@dataclass(frozen=True, slots=True)
class ReceiptDocument:
    receipt_id: str
    number: str
    issued_at: datetime
    merchant_name: str
    merchant_address: str
    merchant_contact: str
    customer_email: str | None
    description: str | None
    amount: int
    currency: str
    card_brand: str | None
    card_last4: str | None
    refunds: Sequence[RefundLine] = field(default_factory=tuple)
    locale: str = "en"
    timezone: str = "UTC"

    @property
    def refunded(self) -> int:
        return sum(r.amount for r in self.refunds if r.status in SHOWN_REFUNDS)

    def fingerprint(self) -> str:
        """A digest of everything the receipt shows: equal digests, equal PDFs."""
        values = asdict(self)
        values["refunds"] = [asdict(r) for r in self.refunds]
        text = json.dumps(values, sort_keys=True, default=str, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    value: str
    strong: bool = False
    muted: bool = False


@dataclass(frozen=True, slots=True)
class ReceiptContent:
    title: str
    merchant_name: str
    merchant_lines: tuple[str, ...]
    amount_paid: str
    paid_on: str
    mark: RefundMark | None
    details: tuple[Row, ...]
    lines: tuple[Row, ...]
    summary: tuple[Row, ...]
    footer: str

    def as_text(self) -> str:
        """The plain-text part of an e-mail: the same rows as the PDF."""
        width = max(len(r.label) for r in (*self.details, *self.lines, *self.summary))
        out = [self.merchant_name, *self.merchant_lines, "", self.title, self.amount_paid]
        out += [f"Paid {self.paid_on}"] + ([self.mark.value.upper()] if self.mark else []) + [""]
        out += [f"{r.label}: {r.value}" for r in self.details] + [""]
        for row in (*self.lines, *self.summary):
            out.append(f"{row.label.ljust(width)}  {row.value}")
        return "\n".join([*out, "", self.footer]) + "\n"

    def texts(self) -> list[str]:
        """Every string printed, for choosing fonts."""
        out = [self.title, self.merchant_name, *self.merchant_lines, self.amount_paid]
        out += [self.paid_on, self.footer, str(self.mark or "")]
        for row in (*self.details, *self.lines, *self.summary):
            out += [row.label, row.value]
        return out


def _clean(text: str) -> str:
    # NFC: an accent typed as a combining mark prints as the precomposed letter, which every
    # font here has; control characters (a stray tab, a NUL) are dropped, not drawn as boxes.
    text = unicodedata.normalize("NFC", text)
    return "".join(c for c in text if unicodedata.category(c) != "Cc" or c == "\n")


def _card(brand: str | None, last4: str | None) -> str | None:
    if not brand and not last4:
        return None
    name = {"amex": "American Express", "mastercard": "Mastercard", "visa": "Visa"}.get(
        (brand or "").lower(), (brand or "Card").title()
    )
    return f"{name} •••• {last4}" if last4 else name


def content_of(doc: ReceiptDocument) -> ReceiptContent:
    fmt = Formatter(doc.locale, doc.timezone)
    merchant = _clean(doc.merchant_name)
    paid_on = fmt.date(doc.issued_at)
    details = [Row("Receipt number", doc.number), Row("Date paid", paid_on)]
    card = _card(doc.card_brand, doc.card_last4)
    if card:
        details.append(Row("Payment method", card))
    if doc.customer_email:
        details.append(Row("Billed to", _clean(doc.customer_email)))
    amount = fmt.amount(doc.amount, doc.currency)
    summary = [Row("Amount paid", amount, strong=not doc.refunds)]
    for refund in doc.refunds:
        pending = "" if refund.status == RefundStatus.SUCCEEDED else " (pending)"
        summary.append(
            Row(
                f"Refund, {fmt.date(refund.created_at)}{pending}",
                fmt.amount(-refund.amount, doc.currency),
                muted=True,
            )
        )
    if doc.refunds:
        summary.append(Row("Net paid", fmt.amount(doc.amount - doc.refunded, doc.currency), True))
    mark = None
    if doc.refunded >= doc.amount:
        mark = RefundMark.REFUNDED
    elif doc.refunded > 0:
        mark = RefundMark.PARTIALLY_REFUNDED
    lines = tuple(
        _clean(line).strip() for line in doc.merchant_address.splitlines() if line.strip()
    )
    contact = _clean(doc.merchant_contact).strip()
    return ReceiptContent(
        title=f"Receipt from {merchant}",
        merchant_name=merchant,
        merchant_lines=(*lines, contact) if contact else lines,
        amount_paid=amount,
        paid_on=paid_on,
        mark=mark,
        details=tuple(details),
        lines=(Row(_clean(doc.description or "Payment"), amount),),
        summary=tuple(summary),
        footer=(
            f"Questions about this receipt? Contact {merchant}"
            + (f" at {contact}." if contact else ".")
        ),
    )
