"""Money: exponents, Stripe's minimum and maximum charges, three-decimal rules, formatting."""

from __future__ import annotations

import pytest

from azora_payments.domain.money import (
    MAXIMUM_AMOUNT,
    InvalidAmount,
    Money,
    check_charge_amount,
    exponent,
    format_amount,
    is_supported_currency_code,
    minimum_charge,
)


@pytest.mark.parametrize(
    ("currency", "places"),
    [("jpy", 0), ("krw", 0), ("vnd", 0), ("xof", 0), ("JPY", 0), ("usd", 2), ("EUR", 2),
     ("gbp", 2), ("inr", 2), ("bhd", 3), ("kwd", 3), ("jod", 3), ("omr", 3), ("tnd", 3)],
)  # fmt: skip
def test_exponents(currency: str, places: int) -> None:
    assert exponent(currency) == places


def test_unknown_currency_has_no_exponent() -> None:
    assert not is_supported_currency_code("xyz")
    assert is_supported_currency_code("usd")
    assert not is_supported_currency_code("USD")  # codes are stored lower case
    with pytest.raises(KeyError):
        exponent("xyz")


@pytest.mark.parametrize(
    ("currency", "minimum"),
    [("usd", 50), ("eur", 50), ("gbp", 30), ("jpy", 50), ("GBP", 30), ("hkd", 400),
     ("bhd", 1), ("krw", 1), ("xyz", 1)],
)  # fmt: skip
def test_minimum_charge(currency: str, minimum: int) -> None:
    assert minimum_charge(currency) == minimum


@pytest.mark.parametrize(
    ("amount", "currency"),
    [(50, "usd"), (30, "gbp"), (50, "jpy"), (1, "krw"), (10, "bhd"), (1500, "KWD"),
     (MAXIMUM_AMOUNT, "usd"), (99_999_990, "bhd")],
)  # fmt: skip
def test_chargeable_amounts(amount: int, currency: str) -> None:
    check_charge_amount(amount, currency)


@pytest.mark.parametrize(
    ("amount", "currency", "why"),
    [
        (49, "usd", "at least 50 ($0.50) for usd"),
        (29, "gbp", "at least 30 (£0.30) for gbp"),
        (49, "jpy", "at least 50 (¥50) for jpy"),
        (0, "krw", "at least 1"),
        (-100, "usd", "at least 50"),
        (MAXIMUM_AMOUNT + 1, "usd", "at most 99999999"),
        (1505, "bhd", "must end in 0 for bhd"),
        (1, "kwd", "must end in 0 for kwd"),
    ],
)
def test_unchargeable_amounts(amount: int, currency: str, why: str) -> None:
    with pytest.raises(
        InvalidAmount, match=why.replace("$", r"\$").replace("(", r"\(").replace(")", r"\)")
    ):
        check_charge_amount(amount, currency)


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (2000, "usd", "$20.00"),
        (5, "usd", "$0.05"),
        (123456789, "usd", "$1,234,567.89"),
        (500, "jpy", "¥500"),
        (1234567, "JPY", "¥1,234,567"),
        (1500, "bhd", "BHD\u00a01.500"),
        (5, "kwd", "KWD\u00a00.005"),
        (999, "eur", "€9.99"),
        (2000, "chf", "CHF\u00a020.00"),
        (2000, "sek", "SEK\u00a020.00"),
        (100, "krw", "₩100"),
        (-2000, "usd", "-$20.00"),
        (-1500, "bhd", "-BHD\u00a01.500"),
        (-1, "jpy", "-¥1"),
        (0, "gbp", "£0.00"),
    ],
)
def test_formatting(amount: int, currency: str, text: str) -> None:
    assert format_amount(amount, currency) == text


# CLDR's currency formats for a zero-, a two- and a three-decimal currency in three locales
# (no-break spaces as CLDR writes them: U+00A0, and U+202F as French groups digits).
@pytest.mark.parametrize(
    ("locale", "jpy", "eur", "inr", "kwd"),
    [
        ("en", "¥500", "€25.00", "₹1,234.50", "KWD\u00a01.000"),
        ("fr", "500\u00a0JPY", "25,00\u00a0€", "1\u202f234,50\u00a0₹", "1,000\u00a0KWD"),
        ("de", "500\u00a0¥", "25,00\u00a0€", "1.234,50\u00a0₹", "1,000\u00a0KWD"),
        ("ja", "￥500", "€25.00", "₹1,234.50", "KWD\u00a01.000"),
    ],
)
def test_formatting_in_locales(locale: str, jpy: str, eur: str, inr: str, kwd: str) -> None:
    assert format_amount(500, "jpy", locale=locale) == jpy
    assert format_amount(2500, "eur", locale=locale) == eur
    assert format_amount(123450, "inr", locale=locale) == inr
    assert format_amount(1000, "kwd", locale=locale) == kwd
    assert format_amount(0, "kwd", locale=locale).count("0") == 4


def test_money_str_and_unknown_currencies() -> None:
    assert str(Money(500, "jpy")) == "¥500"
    assert Money(1, "usd") == Money(1, "usd")
    with pytest.raises(KeyError):
        format_amount(100, "xyz")
    # A symbol written after the number with letters is kept apart too (CLDR's spacing).
    assert format_amount(2000, "chf", locale="de_CH") == "CHF\u00a020.00"
    assert format_amount(2000, "usd", locale="nl") == "US$\u00a020,00"
