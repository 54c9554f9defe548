"""The parser port pauses the cyclic garbage collector while it parses, and always puts it back."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from services.reconciliation.adapters import statement_parser
from services.reconciliation.adapters.statement_parser import FileStatementParser
from services.reconciliation.domain.statements import StatementFileError, StatementFormat

CSV = b"Date,Amount\n2024-03-01,1.00\n"
MAPPING = {"date": "Date", "amount": "Amount", "account": "A", "currency": "EUR"}


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_collector_is_paused_during_a_parse_and_enabled_after_it() -> None:
    seen: list[bool] = []
    original = statement_parser.parse_statement

    def spying(*args: object, **kwargs: object) -> object:
        seen.append(gc.isenabled())
        return original(*args, **kwargs)

    gc.enable()
    statement_parser.parse_statement = spying
    try:
        FileStatementParser().parse(CSV, StatementFormat.CSV, MAPPING)
    finally:
        statement_parser.parse_statement = original
    assert seen == [False]
    assert gc.isenabled()


def test_collector_comes_back_after_a_refused_file_and_stays_off_when_it_was_off() -> None:
    gc.enable()
    with pytest.raises(StatementFileError):
        FileStatementParser().parse(b"Date,Amount\n2024-03-01,x\n", StatementFormat.CSV, MAPPING)
    assert gc.isenabled()

    gc.disable()
    FileStatementParser().parse(CSV, StatementFormat.CSV, MAPPING)
    assert not gc.isenabled()


def test_overlapping_parses_enable_the_collector_when_the_last_one_ends() -> None:
    gc.enable()
    first_inside, release_first = threading.Event(), threading.Event()
    original = statement_parser.parse_statement

    def slow(*args: object, **kwargs: object) -> object:
        if threading.current_thread().name == "first":
            first_inside.set()
            release_first.wait(5)
        return original(*args, **kwargs)

    statement_parser.parse_statement = slow
    try:
        first = threading.Thread(
            target=FileStatementParser().parse, args=(CSV, StatementFormat.CSV, MAPPING), name="first"
        )
        first.start()
        assert first_inside.wait(5)
        FileStatementParser().parse(CSV, StatementFormat.CSV, MAPPING)  # starts and ends inside the first
        assert not gc.isenabled()
        release_first.set()
        first.join(5)
    finally:
        statement_parser.parse_statement = original
    assert gc.isenabled()
