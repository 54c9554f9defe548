"""Ingest carries a submission's transfer type (the ledger schema's code) to the ledger."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from payrecon.ledger.v1 import messages_pb2

from services.ingest.codecs import transfer_request_bytes
from services.ingest.domain.errors import InvalidSubmission
from services.ingest.domain.model import SubmitTransaction, validate_submission


def submit(code: str = "") -> SubmitTransaction:
    return SubmitTransaction("k1", "wallet:a", "merchant:b", "10.00", "USD", {"orderId": "o1"}, code=code)


def test_the_code_reaches_the_ledgers_transfer_request() -> None:
    submission = validate_submission(submit("PURCHASE"), default_currency="USD")
    request = messages_pb2.TransferRequest.FromString(transfer_request_bytes(submission, datetime.now(UTC)))
    assert request.code == "PURCHASE"


def test_a_request_without_a_code_fingerprints_as_before_and_a_code_changes_it() -> None:
    plain = validate_submission(submit(), default_currency="USD")
    # The fingerprint of this body before transfer types existed (stored for requests accepted then).
    assert plain.fingerprint() == "3ceab94e525c621bf00f926336253e7ce6d3e05f648b2905f23a50c40cb781c4"
    typed = validate_submission(submit("PURCHASE"), default_currency="USD")
    assert typed.fingerprint() != plain.fingerprint()


def test_a_malformed_code_is_refused() -> None:
    with pytest.raises(InvalidSubmission) as refused:
        validate_submission(submit("no spaces"), default_currency="USD")
    assert refused.value.code == "INVALID_TRANSFER_TYPE" and refused.value.field == "transaction.code"
