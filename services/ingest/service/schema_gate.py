"""The schema pre-check before the 202: a submission the ledger's schema in force refuses is answered
with the rule that failed and nothing is stored. The rules live in the ledger (one rule engine); this
gate decides when to ask it, so the write path pays nothing while no schema is in force.

- Ingest learns the version in force from the ledger every `refresh_seconds` (and from every check's
  answer). While it is 0 no submission is checked: no RPC at all. A schema applied since the last
  refresh is enforced by the ledger when it posts (status FAILED with the rule's code) — as it always is.
- While a schema is in force, each group of concurrent submits (see GroupCommit) is checked with ONE
  call, bounded by `timeout_seconds`.
- When the ledger cannot be asked (down, or slower than the deadline) submissions are ACCEPTED
  unchecked: money keeps moving through a dependency's outage, and nothing is lost on the rules'
  side, because the ledger checks every posting again under the version in force then (a refused one
  ends FAILED with the rule's code). Refusing payments (503) because a pre-check is unavailable would
  turn a ledger API outage into a payments outage while the worker path still works. After a failure
  the gate stops asking until a refresh reaches the ledger again, so during an outage at most one
  group per refresh waits out the deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from services.ingest.domain.model import TransferSubmission
from services.ingest.service.ports import SchemaChecker, SchemaRefusal, SchemaVerdicts

log = logging.getLogger(__name__)


class SchemaGate:
    def __init__(self, checker: SchemaChecker, *, timeout_seconds: float = 0.5, refresh_seconds: float = 1.0) -> None:
        self._checker = checker
        self.timeout_seconds = timeout_seconds
        self.refresh_seconds = refresh_seconds
        # None until the ledger first answers: then submissions are checked (the answer tells the version).
        self.version: int | None = None
        self.reachable = True

    async def refusals(self, submissions: Sequence[TransferSubmission]) -> list[SchemaRefusal | None]:
        """Per submission, the rule the schema in force refuses it by, or None (allowed, or not checked:
        no schema, or the ledger cannot be asked)."""
        if self.version == 0 or not self.reachable or not submissions:
            return [None] * len(submissions)
        verdicts = await self._ask(submissions)
        if verdicts is None:
            return [None] * len(submissions)
        return verdicts.refusals

    async def refresh(self) -> None:
        """Learns the version in force (and that the ledger answers again after a failure)."""
        await self._ask(())

    async def _ask(self, submissions: Sequence[TransferSubmission]) -> SchemaVerdicts | None:
        try:
            verdicts = await self._checker.check(submissions, self.timeout_seconds)
            if len(verdicts.refusals) != len(submissions):
                raise ValueError(f"{len(verdicts.refusals)} verdicts for {len(submissions)} transfers")
        except Exception as error:  # whatever the failure, it must not refuse a payment
            if self.reachable:
                log.warning(
                    "schema pre-check unavailable; accepting unchecked (the ledger enforces when posting)",
                    extra={"fields": {"error": str(error) or type(error).__name__}},
                )
            self.reachable = False
            return None
        if not self.reachable:
            log.info("schema pre-check available again", extra={"fields": {"version": verdicts.version}})
        self.reachable = True
        self.version = verdicts.version
        return verdicts
