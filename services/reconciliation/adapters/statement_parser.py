"""The statement parser port, implemented by the format parsers in adapters/formats."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from services.reconciliation.adapters.formats.csv_mapping import CsvMapping
from services.reconciliation.adapters.formats.detect import parse_statement
from services.reconciliation.domain.statements import ParsedFile, StatementFormat


class FileStatementParser:
    def parse(self, content: bytes, fmt: StatementFormat | None, csv_mapping: Mapping[str, Any] | None) -> ParsedFile:
        """Raises StatementFileError, and ValueError for a CSV mapping that makes no sense."""
        mapping = CsvMapping.from_dict(csv_mapping) if csv_mapping is not None else None
        with _cyclic_collector_paused():
            return parse_statement(content, fmt, csv_mapping=mapping)


_pause_lock = threading.Lock()
_pauses = 0
_collector_was_enabled = False


@contextmanager
def _cyclic_collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while statements are parsed, back as it was after the last
    parse in progress ends.

    A large statement is a million lines, none of them in a reference cycle, yet each one counts
    towards the collector's thresholds: collection after collection walks every line read so far
    (a quarter of a million-row CSV's parse time). Reference counting still frees everything as
    usual; only cycles wait for the end of the parse. Parses run in worker threads, so the pause is
    counted: it ends when the last one does.
    """
    global _pauses, _collector_was_enabled
    with _pause_lock:
        if _pauses == 0:
            _collector_was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _collector_was_enabled:
                gc.enable()
