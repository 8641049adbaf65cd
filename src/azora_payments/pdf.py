"""Receipt PDFs: a printable A4 page drawn with fpdf2 from plain values (no database here).

The PDF's core fonts cover Latin-1 only: an amount whose currency symbol falls outside it
(€, ₹, ₩…) is written with the currency code instead ("EUR 25.00"), and any other character
outside Latin-1 in free text becomes "?". No font is fetched or bundled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from azora_payments.domain.money import format_amount

__all__ = ["ReceiptDocument", "RefundLine", "pdf_amount", "render_receipt"]

_ENCODING = "latin-1"


@dataclass(frozen=True, slots=True)
class RefundLine:
    amount: int
    created_at: datetime
    status: str


@dataclass(frozen=True, slots=True)
class ReceiptDocument:
    number: str
    issued_at: datetime
    merchant_name: str
    merchant_address: str
    customer_email: str | None
    description: str | None
    amount: int
    currency: str
    card_brand: str | None
    card_last4: str | None
    refunds: Sequence[RefundLine] = field(default_factory=tuple)

    @property
    def refunded(self) -> int:
        return sum(r.amount for r in self.refunds if r.status in ("succeeded", "pending"))


def _fits(text: str) -> bool:
    try:
        text.encode(_ENCODING)
    except UnicodeEncodeError:
        return False
    return True


def _safe(text: str) -> str:
    return text.encode(_ENCODING, errors="replace").decode(_ENCODING)


def pdf_amount(amount: int, currency: str) -> str:
    """The amount as `format_amount` writes it, or with the currency code when the core font
    lacks its symbol."""
    text = format_amount(amount, currency)
    return text if _fits(text) else format_amount(amount, currency, symbol=False)


def render_receipt(doc: ReceiptDocument) -> bytes:
    pdf = FPDF(format="A4", unit="mm")
    pdf.set_title(_safe(f"Receipt {doc.number}"))
    pdf.set_author(_safe(doc.merchant_name))
    pdf.set_creator("Azora Payments")
    pdf.set_auto_page_break(auto=True, margin=20)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin

    def line(text: str, *, size: int = 10, style: str = "", height: float = 6) -> None:
        pdf.set_font("Helvetica", style=style, size=size)
        pdf.multi_cell(width, height, _safe(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def row(label: str, value: str, *, style: str = "") -> None:
        pdf.set_font("Helvetica", style=style, size=11)
        pdf.cell(width * 0.65, 8, _safe(label), new_x=XPos.RIGHT, new_y=YPos.TOP)
        pdf.cell(width * 0.35, 8, value, align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    line(doc.merchant_name, size=18, style="B", height=9)
    for address_line in doc.merchant_address.splitlines() or [""]:
        if address_line.strip():
            line(address_line.strip())
    pdf.ln(6)
    line("Receipt", size=14, style="B", height=8)
    line(f"Receipt number: {doc.number}")
    line(f"Date issued: {doc.issued_at.strftime('%d %B %Y')}")
    if doc.customer_email:
        line(f"Billed to: {doc.customer_email}")
    if doc.card_brand or doc.card_last4:
        brand = (doc.card_brand or "card").capitalize()
        line(f"Paid with: {brand} ending in {doc.card_last4 or '????'}")
    pdf.ln(6)
    row("Description", "Amount", style="B")
    pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + width, pdf.get_y())
    row(doc.description or "Payment", pdf_amount(doc.amount, doc.currency))
    row("Total paid", pdf_amount(doc.amount, doc.currency), style="B")
    if doc.refunds:
        pdf.ln(4)
        line("Refunds", size=12, style="B", height=8)
        for refund in doc.refunds:
            when = refund.created_at.strftime("%d %B %Y")
            label = f"Refund on {when}" + (
                "" if refund.status == "succeeded" else f" ({refund.status})"
            )
            row(label, pdf_amount(-refund.amount, doc.currency))
        pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + width, pdf.get_y())
        row("Net amount", pdf_amount(doc.amount - doc.refunded, doc.currency), style="B")
    pdf.ln(10)
    line(f"Thank you for your payment to {doc.merchant_name}.", size=9)
    return bytes(pdf.output())
