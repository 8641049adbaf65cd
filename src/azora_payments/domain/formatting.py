"""How a receipt writes amounts and dates for its reader: CLDR (Babel) for RECEIPT_LOCALE, dates
in RECEIPT_TIMEZONE. The PDF, the e-mails and the console use this one formatter."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from zoneinfo import ZoneInfo

from babel.dates import format_date

from azora_payments.domain.money import format_amount

__all__ = ["Formatter"]


@dataclass(frozen=True)
class Formatter:
    locale: str = "en"
    timezone: str = "UTC"

    @cached_property
    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def _babel_locale(self) -> str:
        return self.locale.replace("-", "_")

    def amount(self, amount: int, currency: str) -> str:
        """`Formatter("en").amount(2500, "eur")` -> "€25.00"; in `fr`, "25,00 €"."""
        return format_amount(amount, currency, locale=self._babel_locale)

    def date(self, moment: datetime) -> str:
        """The calendar day of `moment` in the receipt's time zone: "December 1, 2026"."""
        return format_date(self._local(moment), format="long", locale=self._babel_locale)

    def _local(self, moment: datetime) -> datetime:
        aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
        return aware.astimezone(self._zone)
