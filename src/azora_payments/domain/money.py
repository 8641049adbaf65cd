"""Money: currencies, their exponents, Stripe's minimum charges and formatting.

The one place that knows how many minor units a currency has. Amounts are always integers in
the currency's minor unit (what Stripe calls the "smallest currency unit"); never floats.
`format_amount` writes an amount as CLDR does for a locale (Babel): the PDF, the e-mails and
the console all use it.
"""

from __future__ import annotations

import copy
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from babel import Locale
from babel.numbers import NumberPattern

# Stripe's zero-decimal currencies: the amount is already in whole units.
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf vnd vuv xaf xof xpf".split())
# Stripe's three-decimal currencies: amounts must end in 0 (Stripe rounds to hundredths).
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())
TWO_DECIMAL = frozenset(
    (
        "usd eur gbp cad aud chf inr nzd sgd hkd sek nok dkk pln czk huf ron bgn mxn brl zar aed "
        "ils thb myr php idr twd cny try sar qar egp ngn kes pkr lkr bdt cop pen uah"
    ).split()
)

# Stripe's published minimum charge amounts, in minor units
# (https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts).
MINIMUM_CHARGE = {
    "usd": 50, "aed": 200, "aud": 50, "bgn": 100, "brl": 50, "cad": 50, "chf": 50, "czk": 1500,
    "dkk": 250, "eur": 50, "gbp": 30, "hkd": 400, "huf": 17500, "inr": 50, "jpy": 50, "mxn": 1000,
    "myr": 200, "nok": 300, "nzd": 50, "pln": 200, "ron": 200, "sek": 300, "sgd": 50, "thb": 1000,
}  # fmt: skip

# Stripe's limit for a single charge is 8 digits in the minor unit.
MAXIMUM_AMOUNT = 99_999_999

__all__ = [
    "MAXIMUM_AMOUNT",
    "InvalidAmount",
    "Money",
    "check_charge_amount",
    "exponent",
    "format_amount",
    "is_supported_currency_code",
    "minimum_charge",
]


class InvalidAmount(ValueError):
    """An amount that Stripe would refuse for its currency; the message says why."""


def is_supported_currency_code(code: str) -> bool:
    return code in ZERO_DECIMAL or code in THREE_DECIMAL or code in TWO_DECIMAL


def exponent(currency: str) -> int:
    currency = currency.lower()
    if currency in ZERO_DECIMAL:
        return 0
    if currency in THREE_DECIMAL:
        return 3
    if currency in TWO_DECIMAL:
        return 2
    raise KeyError(currency)


def minimum_charge(currency: str) -> int:
    return MINIMUM_CHARGE.get(currency.lower(), 1)


def check_charge_amount(amount: int, currency: str) -> None:
    """Raise InvalidAmount when Stripe would refuse to charge `amount` in `currency`."""
    currency = currency.lower()
    minimum = minimum_charge(currency)
    if amount < minimum:
        raise InvalidAmount(
            f"must be at least {minimum} ({format_amount(minimum, currency)}) for {currency}"
        )
    if amount > MAXIMUM_AMOUNT:
        raise InvalidAmount(f"must be at most {MAXIMUM_AMOUNT}")
    if currency in THREE_DECIMAL and amount % 10:
        raise InvalidAmount(f"must end in 0 for {currency} (a three-decimal currency)")


@dataclass(frozen=True, slots=True)
class Money:
    amount: int
    currency: str

    def __str__(self) -> str:
        return format_amount(self.amount, self.currency)


def format_amount(amount: int, currency: str, *, locale: str = "en") -> str:
    """The amount as CLDR writes it in `locale`: `format_amount(2500, "eur")` -> "€25.00",
    `format_amount(2500, "eur", locale="fr")` -> "25,00 €" (with CLDR's no-break spaces),
    `format_amount(1000, "kwd")` -> "KWD 1.000".

    The number of decimals is Stripe's for the currency (`exponent`), which is what the amount
    was charged in, even where CLDR's own currency data differs.
    """
    places = exponent(currency)
    value = Decimal(amount).scaleb(-places)
    pattern, loc = _currency_pattern(locale, places)
    text: str = pattern.apply(value, loc, currency=currency.upper(), currency_digits=False)
    return _currency_spacing(text, loc.currency_symbols.get(currency.upper(), currency.upper()))


@lru_cache(maxsize=64)
def _currency_pattern(locale: str, places: int) -> tuple[NumberPattern, Locale]:
    """The locale's currency pattern with exactly `places` decimals."""
    loc = Locale.parse(locale.replace("-", "_"))
    pattern = copy.copy(loc.currency_formats["standard"])
    assert isinstance(pattern, NumberPattern)
    pattern.frac_prec = (places, places)
    return pattern, loc


def _currency_spacing(text: str, symbol: str) -> str:
    """CLDR's currencySpacing, which Babel leaves out: a symbol that ends (or starts) with a
    letter is kept apart from the digits by a no-break space ("KWD 1.000", not "KWD1.000").
    Every CLDR locale uses root's rule: match `[[:^S:]&[:^Z:]]` beside `[:digit:]`."""
    at = text.find(symbol)
    if not symbol or at < 0:
        return text
    end = at + len(symbol)
    if end < len(text) and text[end].isdigit() and _spaced(symbol[-1]):
        text = f"{text[:end]}\u00a0{text[end:]}"
    if at > 0 and text[at - 1].isdigit() and _spaced(symbol[0]):
        text = f"{text[:at]}\u00a0{text[at:]}"
    return text


def _spaced(char: str) -> bool:
    return unicodedata.category(char)[0] not in "SZ"
