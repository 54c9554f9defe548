"""Exact money: ISO 4217 currencies, decimal text ↔ integer minor units. Never floats.

A shared value object (not a business rule): every context speaks integer minor units plus a
currency on the wire and decimal strings at the REST edge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal, Inexact, InvalidOperation, Rounded

INT64_MAX = 2**63 - 1
# Minor units beyond this have no double of their own at every step: a JSON number is refused there.
DOUBLE_EXACT_MINOR_MAX = 2**53
# Every decimal of up to 15 significant digits survives text → double → shortest text (DBL_DIG).
DOUBLE_EXACT_DIGITS = 15

# ISO 4217 alphabetic code → minor-unit exponent (active codes; funds and metals left out).
CURRENCY_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(
        "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP BYN BZD "
        "CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD "
        "GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD "
        "MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP "
        "PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS "
        "TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VES WST XCD YER ZAR ZMW ZWL".split(),
        2,
    ),
    **dict.fromkeys("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF".split(), 0),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
    "CLF": 4,
    "UYW": 4,
}

_CURRENCY_SHAPE = re.compile(r"^[A-Z]{3}$")
_DECIMAL_TEXT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")


class MoneyError(ValueError):
    """An amount or currency that cannot be represented exactly. `code` is the stable machine code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def exponent_of(currency: str) -> int:
    if not _CURRENCY_SHAPE.match(currency):
        raise MoneyError("INVALID_CURRENCY", f"currency must be a 3-letter ISO 4217 code, got {currency!r}")
    try:
        return CURRENCY_EXPONENTS[currency]
    except KeyError:
        raise MoneyError("UNKNOWN_CURRENCY", f"unknown currency {currency!r}") from None


def decimal_from_number(value: float) -> Decimal:
    """A JSON number (parsed as a double) as its shortest decimal: 100.1 → Decimal('100.1'). That is
    what the caller wrote only when the double carries it exactly: see `minor_units_from_number`."""
    if value != value or value in (float("inf"), float("-inf")):
        raise MoneyError("INVALID_AMOUNT", "amount must be a finite number")
    return Decimal(repr(value))


def decimal_from_text(text: str) -> Decimal:
    """Decimal text as written, every digit kept (Decimal's constructor never rounds)."""
    stripped = text.strip()
    if not _DECIMAL_TEXT.match(stripped):
        raise MoneyError("INVALID_AMOUNT", f"amount must be a decimal number, got {text!r}")
    try:
        return Decimal(stripped)
    except InvalidOperation:
        raise MoneyError("INVALID_AMOUNT", f"amount must be a decimal number, got {text!r}") from None


# Beyond 10**19 minor units nothing fits int64: refused before any arithmetic on huge text.
_INT64_DIGITS = len(str(INT64_MAX))


def to_minor_units(amount: Decimal, currency: str) -> int:
    """Exact conversion; more decimals than the currency allows, or beyond int64, is an error."""
    exponent = exponent_of(currency)
    if not amount.is_finite():
        raise MoneyError("INVALID_AMOUNT", "amount must be a finite number")
    if amount and amount.adjusted() + exponent >= _INT64_DIGITS:
        raise MoneyError("AMOUNT_OUT_OF_RANGE", f"amount {amount} {currency} is too large")
    # Decimal's default context keeps 28 digits and would round longer amounts silently: this one
    # holds every digit of this amount and traps any rounding instead.
    exact = Context(
        prec=max(len(amount.as_tuple().digits), 1),
        Emax=MAX_EMAX,
        Emin=MIN_EMIN,
        traps=[InvalidOperation, Inexact, Rounded],
    )
    scaled = amount.scaleb(exponent, context=exact)
    if scaled != scaled.to_integral_value(context=exact):
        raise MoneyError(
            "AMOUNT_PRECISION",
            f"amount {amount} has more than {exponent} decimal places allowed for {currency}",
        )
    minor = int(scaled)
    if abs(minor) > INT64_MAX:
        raise MoneyError("AMOUNT_OUT_OF_RANGE", f"amount {amount} {currency} is too large")
    return minor


def _significant_digits(value: Decimal) -> int:
    digits = "".join(map(str, value.as_tuple().digits)).strip("0")
    return len(digits)


def minor_units_from_number(value: float, currency: str) -> int:
    """A JSON number in exact minor units — only where the double it arrived as stands for exactly
    one amount of `currency`, so what the caller wrote is known.

    The gateway hands over the nearest double, not the text: 90071992547409.93 arrives as
    90071992547409.9375. Refused with AMOUNT_NOT_EXACT (send a decimal string instead): more than 15
    significant digits, more than 2**53 minor units, or a neighbouring amount (± one minor unit) that
    becomes the same double. Also raises what `to_minor_units` raises.
    """
    decimal = decimal_from_number(value)
    if _significant_digits(decimal) > DOUBLE_EXACT_DIGITS:
        raise _not_exact(decimal, currency)
    minor = to_minor_units(decimal, currency)
    if abs(minor) > DOUBLE_EXACT_MINOR_MAX:
        raise _not_exact(decimal, currency)
    exponent = exponent_of(currency)
    if value in (float(Decimal(minor - 1).scaleb(-exponent)), float(Decimal(minor + 1).scaleb(-exponent))):
        raise _not_exact(decimal, currency)
    return minor


def _not_exact(decimal: Decimal, currency: str) -> MoneyError:
    # The double's value is named as what arrived, not as what was meant: it may differ from the text.
    return MoneyError(
        "AMOUNT_NOT_EXACT",
        f"amount arrived as the JSON number {decimal}, which cannot carry an amount of {currency} exactly; "
        'send the amount as a decimal string, e.g. "1234.56"',
    )


# Plain decimals up to 14 integer digits stay below 10**18 in minor units (at most 4 decimals), inside int64.
_PLAIN_INTEGER_DIGITS = 14
_POWERS_OF_TEN: tuple[int, ...] = tuple(10**n for n in range(max(CURRENCY_EXPONENTS.values()) + 1))


def plain_decimal_to_minor_units(text: str, exponent: int) -> int | None:
    """`text` in minor units when it is an unsigned plain decimal (`1234`, `1234.5`, `1234.`) with at
    most `exponent` decimals and 14 integer digits; None for any other shape (a sign, blanks, more
    decimals, exponent notation), which `decimal_from_text` + `to_minor_units` then decide.

    The fast path of bulk statement imports: it answers exactly what the Decimal path answers for the
    texts it accepts, in a fraction of the time.
    """
    units, _, fraction = text.partition(".")
    if (
        0 < len(units) <= _PLAIN_INTEGER_DIGITS
        and len(fraction) <= exponent
        and units.isascii()
        and units.isdigit()
        and (not fraction or (fraction.isascii() and fraction.isdigit()))
    ):
        return int(units + fraction) * _POWERS_OF_TEN[exponent - len(fraction)]
    return None


def minor_units_from_json(raw: object, currency: str) -> int:
    """An amount as a JSON API received it — number or decimal string — in exact minor units.

    Raises MoneyError: INVALID_AMOUNT (not a number, bool, NaN), AMOUNT_PRECISION, AMOUNT_OUT_OF_RANGE,
    AMOUNT_NOT_EXACT (a JSON number its double cannot carry exactly), INVALID_CURRENCY,
    UNKNOWN_CURRENCY. Sign is not checked here.
    """
    if isinstance(raw, bool):
        raise MoneyError("INVALID_AMOUNT", "amount must be a number or a decimal string")
    if isinstance(raw, float):
        return minor_units_from_number(raw, currency)
    if isinstance(raw, Decimal):
        value = raw
    elif isinstance(raw, int):
        value = Decimal(raw)
    elif isinstance(raw, str):
        value = decimal_from_text(raw)
    else:
        raise MoneyError("INVALID_AMOUNT", "amount must be a number or a decimal string")
    return to_minor_units(value, currency)


def format_minor(minor_units: int, currency: str) -> str:
    """10000, USD → '100.00'; -5, JPY → '-5'."""
    exponent = exponent_of(currency)
    return str(Decimal(minor_units).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent)))


@dataclass(frozen=True, order=True)
class Money:
    minor_units: int
    currency: str

    def __str__(self) -> str:
        return f"{format_minor(self.minor_units, self.currency)} {self.currency}"
