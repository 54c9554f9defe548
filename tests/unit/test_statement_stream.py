"""The streamed statement import (ImportStatementStream) against a fake service: what it holds in
memory while the import runs."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from payrecon.reconciliation.v1 import reconciliation_pb2 as pb

from services.reconciliation.api.servicer import ReconciliationServicer
from services.reconciliation.service.reconcile import ImportCommand, ReconciliationService

PIECE = 1024 * 1024
PIECES = 16


class Measured(Exception):
    pass


class MeasuringService:
    """Notes the memory traced when the import starts, then stops it there."""

    def __init__(self, baseline: int) -> None:
        self.baseline = baseline
        self.held: list[int] = []
        self.commands: list[ImportCommand] = []

    async def import_statement(self, command: ImportCommand) -> Any:
        self.held.append(tracemalloc.get_traced_memory()[0] - self.baseline)
        self.commands.append(command)
        raise Measured


async def chunks() -> AsyncIterator[pb.ImportStatementChunk]:
    for i in range(PIECES):
        chunk = pb.ImportStatementChunk(data=bytes([65 + i]) * PIECE)
        if i == 0:
            chunk.account_id, chunk.format, chunk.file_name = "bank-eur", "CSV", "big.csv"
        yield chunk


async def test_a_streamed_file_is_held_once_while_it_is_imported() -> None:
    tracemalloc.start()
    try:
        service = MeasuringService(tracemalloc.get_traced_memory()[0])
        servicer = ReconciliationServicer(cast(ReconciliationService, service))
        with pytest.raises(Measured):
            await servicer.ImportStatementStream(chunks(), cast(Any, None))
    finally:
        tracemalloc.stop()
    (command,) = service.commands
    assert (command.account_id, command.file_name, len(command.content)) == ("bank-eur", "big.csv", PIECES * PIECE)
    assert command.content[:1] == b"A" and command.content[-1:] == bytes([65 + PIECES - 1])
    size = PIECES * PIECE
    # The joined file (and the command holding it), not the chunks it was joined from besides.
    assert service.held[0] < 1.25 * size, f"{service.held[0] / size:.2f}x the file's size held"
