from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.kernel.money import (
    INT64_MAX,
    MoneyError,
    decimal_from_number,
    decimal_from_text,
    exponent_of,
    format_minor,
    minor_units_from_json,
    plain_decimal_to_minor_units,
    to_minor_units,
)


@pytest.mark.parametrize(("currency", "exponent"), [("USD", 2), ("JPY", 0), ("KWD", 3), ("EUR", 2)])
def test_exponents(currency: str, exponent: int) -> None:
    assert exponent_of(currency) == exponent


def test_unknown_and_malformed_currencies_are_refused() -> None:
    with pytest.raises(MoneyError) as unknown:
        exponent_of("XYZ")
    assert unknown.value.code == "UNKNOWN_CURRENCY"
    with pytest.raises(MoneyError) as malformed:
        exponent_of("usd")
    assert malformed.value.code == "INVALID_CURRENCY"


def test_json_number_converts_exactly() -> None:
    # 100.1 is not exact as a double; the shortest repr is what the caller wrote.
    assert to_minor_units(decimal_from_number(100.1), "USD") == 10010
    assert to_minor_units(decimal_from_number(100.00), "USD") == 10000
    assert to_minor_units(decimal_from_number(0.29), "USD") == 29


def test_too_many_decimals_is_refused_not_rounded() -> None:
    with pytest.raises(MoneyError) as error:
        to_minor_units(Decimal("1.001"), "USD")
    assert error.value.code == "AMOUNT_PRECISION"
    with pytest.raises(MoneyError):
        to_minor_units(Decimal("1.5"), "JPY")


def test_beyond_int64_is_refused() -> None:
    with pytest.raises(MoneyError) as error:
        to_minor_units(decimal_from_number(1e20), "USD")
    assert error.value.code == "AMOUNT_OUT_OF_RANGE"


# A JSON number reaches the service as the nearest double (google.protobuf.Value.number_value), so
# what the caller wrote is known only where that double stands for exactly one amount.
@pytest.mark.parametrize(
    ("number", "why"),
    [
        pytest.param(
            90071992547409.93,
            "arrives as 90071992547409.9375, repr .94: one cent more, beyond 2**53 minor units",
            id="one-cent-off",
        ),
        pytest.param(90071992547409.94, "the very same double as the line above", id="its-twin"),
        pytest.param(
            90071992547409.91,
            "arrives as the double of 90071992547409.9: a short repr, yet .91 and .90 collide",
            id="short-repr-collision",
        ),
        pytest.param(1234567890123.4567, "17 significant digits", id="17-digits"),
        pytest.param(0.1234567890123456, "16 significant digits", id="16-digits-small"),
        pytest.param(9e15, "one digit and an exact double, but 9e17 minor units: beyond 2**53", id="beyond-2**53"),
    ],
)
def test_a_json_number_a_double_cannot_carry_exactly_is_refused(number: float, why: str) -> None:
    with pytest.raises(MoneyError) as error:
        minor_units_from_json(number, "USD")
    assert error.value.code == "AMOUNT_NOT_EXACT", why
    assert "decimal string" in error.value.message


def test_a_json_number_a_double_carries_exactly_is_accepted() -> None:
    assert minor_units_from_json(9007199254740.99, "USD") == 900719925474099  # 15 significant digits
    assert minor_units_from_json(50000000000000.0, "USD") == 5 * 10**15  # cents still a double apart here
    assert minor_units_from_json(9007199254740990.0, "JPY") == 2**53 - 2  # just under the edge
    assert minor_units_from_json(100.00, "USD") == 10000
    assert minor_units_from_json(0.29, "USD") == 29
    assert minor_units_from_json(-12.5, "USD") == -1250  # the sign is the caller's check


def test_number_range_and_precision_codes_still_come_first() -> None:
    with pytest.raises(MoneyError) as huge:
        minor_units_from_json(1e20, "USD")
    assert huge.value.code == "AMOUNT_OUT_OF_RANGE"
    with pytest.raises(MoneyError) as decimals:
        minor_units_from_json(1.001, "USD")
    assert decimals.value.code == "AMOUNT_PRECISION"


def test_the_same_amount_as_a_decimal_string_is_exact() -> None:
    assert minor_units_from_json("90071992547409.93", "USD") == 9007199254740993
    assert minor_units_from_json("92233720368547758.07", "USD") == INT64_MAX


@pytest.mark.parametrize(
    "text",
    [
        "100000000000.000000000000000001",  # 30 digits: the 28-digit default context rounds it to 100000000000
        "1.0000000000000000000000000001",  # 29 digits: would round to 1.00
        "0." + "0" * 40 + "1",
        "1." + "0" * 5000 + "1",
    ],
)
def test_a_long_decimal_string_is_refused_not_rounded(text: str) -> None:
    with pytest.raises(MoneyError) as error:
        minor_units_from_json(text, "USD")
    assert error.value.code == "AMOUNT_PRECISION"


@pytest.mark.parametrize("text", ["1" + "0" * 40 + ".00", "123456789012345678901234567890", "9" * 5000])
def test_a_huge_decimal_string_is_out_of_range(text: str) -> None:
    with pytest.raises(MoneyError) as error:
        minor_units_from_json(text, "USD")
    assert error.value.code == "AMOUNT_OUT_OF_RANGE"


def test_long_but_exact_decimal_strings_keep_every_digit() -> None:
    assert minor_units_from_json("12345678901234567.89" + "0" * 30, "USD") == 1234567890123456789
    assert minor_units_from_json("0." + "0" * 40, "USD") == 0


@pytest.mark.parametrize("text", ["abc", "1e5", "", "1.2.3", "--1", "NaN", "Infinity"])
def test_decimal_text_rejects_non_decimals(text: str) -> None:
    with pytest.raises(MoneyError):
        decimal_from_text(text)


def test_non_finite_numbers_are_refused() -> None:
    with pytest.raises(MoneyError):
        decimal_from_number(float("nan"))
    with pytest.raises(MoneyError):
        decimal_from_number(float("inf"))


@given(st.integers(min_value=-INT64_MAX, max_value=INT64_MAX), st.sampled_from(["USD", "JPY", "KWD", "CLF"]))
def test_format_and_parse_round_trip(minor: int, currency: str) -> None:
    assert to_minor_units(decimal_from_text(format_minor(minor, currency)), currency) == minor


def test_format_minor() -> None:
    assert format_minor(-10000, "USD") == "-100.00"
    assert format_minor(5, "USD") == "0.05"
    assert format_minor(100, "JPY") == "100"


# The fast path of bulk imports answers exactly what the Decimal path answers, or leaves the text to it.
_PLAIN_TEXTS = st.one_of(
    st.from_regex(r"\A[0-9]{1,16}(\.[0-9]{0,5})?\Z"),
    st.from_regex(r"\A[+-]?[0-9]{0,3}\.?[0-9]{0,3}\Z"),
    st.text(alphabet="0123456789.,+- e_\u0663\u00a0", max_size=8),
)


@given(_PLAIN_TEXTS, st.sampled_from(["USD", "JPY", "KWD", "CLF"]))
def test_plain_decimal_fast_path_agrees_with_the_decimal_path(text: str, currency: str) -> None:
    fast = plain_decimal_to_minor_units(text, exponent_of(currency))
    try:
        exact: int | None = to_minor_units(decimal_from_text(text), currency)
    except MoneyError:
        exact = None
    assert fast is None or fast == exact


@pytest.mark.parametrize(
    ("text", "exponent", "minor"),
    [("1234.5", 2, 123450), ("1234.", 2, 123400), ("7", 0, 7), ("0.001", 3, 1), ("00012.30", 2, 1230)],
)
def test_plain_decimal_fast_path(text: str, exponent: int, minor: int) -> None:
    assert plain_decimal_to_minor_units(text, exponent) == minor


@pytest.mark.parametrize(
    "text", ["-1.00", "+1.00", " 1.00", "1.001", "1e3", ".5", "1_000", "\u0663", "123456789012345"]
)
def test_plain_decimal_fast_path_declines_other_shapes(text: str) -> None:
    assert plain_decimal_to_minor_units(text, 2) is None
