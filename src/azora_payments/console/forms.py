"""Reading what operators type: amounts in the currency's major unit ("12.50") into minor units,
dates, and the payment search, with messages that say what to fix."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation

from azora_payments.db.repositories.payments import HistoryFilter
from azora_payments.domain import money
from azora_payments.domain.statuses import PaymentStatus

STATUSES = (
    PaymentStatus.SUCCEEDED,
    PaymentStatus.FAILED,
    PaymentStatus.REQUIRES_ACTION,
    PaymentStatus.PROCESSING,
    PaymentStatus.REQUIRES_PAYMENT_METHOD,
    PaymentStatus.CANCELED,
)
PAY_ID = re.compile(r"^pay_[0-9a-z]{26}$")
INTENT_ID = re.compile(r"^pi_[A-Za-z0-9_]{1,250}$")
AMOUNT = re.compile(r"^\d{1,12}(?:\.\d{1,3})?$")


class FormError(ValueError):
    """What the operator typed cannot be used; the message says why."""


def parse_amount(text: str, currency: str) -> int:
    """'12.50' eur -> 1250; '500' jpy -> 500. Never through a float."""
    cleaned = text.replace(",", "").replace(" ", "")
    if not AMOUNT.match(cleaned):
        raise FormError(f"“{text}” is not an amount like 12.50")
    places = money.exponent(currency)
    value = Decimal(cleaned)
    minor = value.scaleb(places)
    if minor != minor.to_integral_value():
        raise FormError(f"{currency.upper()} has {places} decimal places")
    try:
        return int(minor)
    except (InvalidOperation, ValueError):  # pragma: no cover - the pattern rules these out
        raise FormError(f"“{text}” is not an amount") from None


def major(amount: int, currency: str) -> str:
    """The inverse of `parse_amount`, for a form's default value: 1250 eur -> '12.50'."""
    places = money.exponent(currency)
    return str(Decimal(amount).scaleb(-places)) if places else str(amount)


def _day(text: str, field_name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise FormError(f"{field_name}: give a date like 2026-12-01") from None


@dataclass
class Search:
    """The payment search as typed, and what it means."""

    q: str = ""
    status: str = ""
    currency: str = ""
    amount_min: str = ""
    amount_max: str = ""
    date_from: str = ""
    date_to: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def exact_id(self) -> str | None:
        return self.q if PAY_ID.match(self.q) else None

    def query_string(self, **extra: str) -> str:
        from urllib.parse import urlencode

        values = {
            "q": self.q,
            "status": self.status,
            "currency": self.currency,
            "amount_min": self.amount_min,
            "amount_max": self.amount_max,
            "date_from": self.date_from,
            "date_to": self.date_to,
            **extra,
        }
        return urlencode({k: v for k, v in values.items() if v})

    def history_filter(self, currencies: list[str]) -> HistoryFilter | None:
        """The filter, or None when the form has errors (listed in `errors`)."""
        q = self.q
        intent = q if INTENT_ID.match(q) else None
        user = q if q and intent is None and not q.startswith("pay_") else None
        if q.startswith("pay_") and not PAY_ID.match(q):
            self.errors.append("A payment id is pay_ followed by 26 letters and digits.")
        status = self.status or None
        if status is not None and status not in STATUSES:
            self.errors.append("Choose a status from the list.")
        currency = self.currency.lower() or None
        if currency is not None and currency not in currencies:
            self.errors.append(f"{self.currency} is not one of our currencies.")
            currency = None
        bounds: list[int | None] = []
        for text, label in ((self.amount_min, "From amount"), (self.amount_max, "To amount")):
            if not text:
                bounds.append(None)
            elif currency is None:
                self.errors.append(f"{label}: choose a currency to search by amount.")
                bounds.append(None)
            else:
                try:
                    bounds.append(parse_amount(text, currency))
                except FormError as exc:
                    self.errors.append(f"{label}: {exc}")
                    bounds.append(None)
        start = end = None
        try:
            if self.date_from:
                start = datetime.combine(
                    _day(self.date_from, "From date"), datetime.min.time(), UTC
                )
            if self.date_to:
                day = _day(self.date_to, "To date")
                end = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
        except FormError as exc:
            self.errors.append(str(exc))
        if self.errors:
            return None
        return HistoryFilter(
            user_id=user,
            status=status,
            created_gte=start,
            created_lt=end,
            stripe_payment_intent_id=intent,
            currency=currency,
            amount_gte=bounds[0],
            amount_lte=bounds[1],
        )
