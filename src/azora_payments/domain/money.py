"""Money: currencies, their exponents, Stripe's minimum charges and formatting.

The one place that knows how many minor units a currency has. Amounts are always integers in
the currency's minor unit (what Stripe calls the "smallest currency unit"); never floats.
"""

from __future__ import annotations

from dataclasses import dataclass

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

SYMBOLS = {
    "usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "inr": "₹", "krw": "₩", "cad": "CA$",
    "aud": "A$", "chf": "CHF ", "nzd": "NZ$", "sgd": "S$", "hkd": "HK$", "mxn": "MX$",
    "brl": "R$",
}  # fmt: skip


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


def format_amount(amount: int, currency: str, *, symbol: bool = True) -> str:
    """`format_amount(2000, "usd")` -> "$20.00"; `format_amount(1500, "bhd")` -> "BHD 1.500"."""
    currency = currency.lower()
    places = exponent(currency)
    sign = "-" if amount < 0 else ""
    units, minor = divmod(abs(amount), 10**places) if places else (abs(amount), 0)
    number = f"{units:,}" + (f".{minor:0{places}d}" if places else "")
    prefix = SYMBOLS.get(currency) if symbol else None
    if prefix is None:
        return f"{sign}{currency.upper()} {number}"
    return f"{sign}{prefix}{number}"
