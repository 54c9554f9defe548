"""The statement parser port, implemented by the format parsers in adapters/formats."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.kernel.runtime import cyclic_collector_paused
from services.reconciliation.adapters.formats.csv_mapping import CsvMapping
from services.reconciliation.adapters.formats.detect import parse_statement
from services.reconciliation.domain.statements import ParsedFile, StatementFormat


class FileStatementParser:
    def parse(self, content: bytes, fmt: StatementFormat | None, csv_mapping: Mapping[str, Any] | None) -> ParsedFile:
        """Raises StatementFileError, and ValueError for a CSV mapping that makes no sense."""
        mapping = CsvMapping.from_dict(csv_mapping) if csv_mapping is not None else None
        with cyclic_collector_paused():  # a million lines, none in a cycle
            return parse_statement(content, fmt, csv_mapping=mapping)
