import os
import subprocess
import sys

import pytest

from services.ingest.domain.errors import InvalidSubmission
from services.ingest.domain.model import SubmitTransaction, message_group_for, validate_submission


def command(**overrides: object) -> SubmitTransaction:
    values: dict[str, object] = {
        "idempotency_key": "unique-key-12345",
        "source_account_id": "account-123",
        "destination_account_id": "account-456",
        "amount": 100.00,
        "currency": "",
    }
    values.update(overrides)
    return SubmitTransaction(**values)  # type: ignore[arg-type]


def test_the_seed_request_is_valid_with_the_default_currency() -> None:
    submission = validate_submission(command(), default_currency="USD")
    assert submission.amount.minor_units == 10000
    assert submission.amount.currency == "USD"


@pytest.mark.parametrize(
    ("overrides", "code", "field"),
    [
        ({"amount": None}, "MISSING_FIELD", "transaction.amount"),
        ({"amount": 0}, "INVALID_AMOUNT", "transaction.amount"),
        ({"amount": -5.0}, "INVALID_AMOUNT", "transaction.amount"),
        ({"amount": 1.001}, "AMOUNT_PRECISION", "transaction.amount"),
        ({"amount": "12abc"}, "INVALID_AMOUNT", "transaction.amount"),
        ({"amount": True}, "INVALID_AMOUNT", "transaction.amount"),
        ({"amount": 1e20}, "AMOUNT_OUT_OF_RANGE", "transaction.amount"),
        ({"currency": "XYZ"}, "UNKNOWN_CURRENCY", "transaction.currency"),
        ({"destination_account_id": "account-123"}, "SAME_ACCOUNT", "transaction.destination_account_id"),
        ({"source_account_id": ""}, "MISSING_FIELD", "transaction.source_account_id"),
        ({"source_account_id": "bad id!"}, "INVALID_ACCOUNT_ID", "transaction.source_account_id"),
        ({"idempotency_key": ""}, "MISSING_FIELD", "idempotencyKey"),
        ({"idempotency_key": "k" * 256}, "INVALID_IDEMPOTENCY_KEY", "idempotencyKey"),
        ({"has_transaction": False}, "MISSING_FIELD", "transaction"),
    ],
)
def test_each_rule_has_its_code_and_field(overrides: dict[str, object], code: str, field: str) -> None:
    with pytest.raises(InvalidSubmission) as error:
        validate_submission(command(**overrides), default_currency="USD")
    assert error.value.code == code
    assert error.value.field == field
    assert field.split(".")[-1] in error.value.message


def test_amount_as_decimal_string() -> None:
    assert validate_submission(command(amount="0.10"), default_currency="USD").amount.minor_units == 10


def test_fingerprint_depends_on_content_not_on_key() -> None:
    a = validate_submission(command(), default_currency="USD")
    b = validate_submission(command(idempotency_key="other"), default_currency="USD")
    c = validate_submission(command(amount=100.01), default_currency="USD")
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    # 100 and "100.00" are the same amount, so the same request.
    d = validate_submission(command(amount="100.00"), default_currency="USD")
    assert a.fingerprint() == d.fingerprint()


def test_message_group_is_stable_across_processes_and_bounded() -> None:
    # Every ingest process must send an account to the same group, whatever its hash seed.
    script = "from services.ingest.domain.model import message_group_for; print(message_group_for('account-123', 16))"
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert out.stdout.strip() == message_group_for("account-123", 16) == "accounts-0011"
    groups = {message_group_for(f"acct-{i}", 16) for i in range(500)}
    assert len(groups) == 16
