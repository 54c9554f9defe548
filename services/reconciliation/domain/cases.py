"""Discrepancies as cases: what a run found, how a case moves along its lifecycle, and how a new run's
findings update the cases already open. Pure: the service loads, decides here, and saves.

A case is OPEN → ACKNOWLEDGED → RESOLVED, each step with an actor, a reason and a time. A finding is
identified by its fingerprint (kind + the records involved), so the same break found by a later run
updates its case instead of opening another; a case whose break is gone from the data (a late
ledger posting matched the line) is resolved by the system; a resolved case whose break comes back
is reopened — late data contradicted the resolution.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from services.kernel.errors import DomainError, ValidationError

SYSTEM_ACTOR = "system"


class CaseStatus(StrEnum):
    OPEN = "OPEN"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    RESOLVED = "RESOLVED"


class CaseAction(StrEnum):
    ACKNOWLEDGE = "ACKNOWLEDGE"
    RESOLVE = "RESOLVE"
    POST_ADJUSTMENT = "POST_ADJUSTMENT"


class CaseEventKind(StrEnum):
    OPENED = "OPENED"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    RESOLVED = "RESOLVED"
    REOPENED = "REOPENED"
    ADJUSTMENT_POSTED = "ADJUSTMENT_POSTED"


SEVERITY = {
    "MISSING_IN_LEDGER": "HIGH",
    "MISSING_IN_STATEMENT": "HIGH",
    "AMOUNT_MISMATCH": "HIGH",
    "CURRENCY_MISMATCH": "HIGH",
    "DATE_OUT_OF_TOLERANCE": "LOW",
    "DUPLICATE": "MEDIUM",
    "AMBIGUOUS": "MEDIUM",
    "UNBALANCED_TRANSFER": "CRITICAL",
    "BALANCE_DRIFT": "CRITICAL",
    "ACCEPTED_NOT_POSTED": "HIGH",
}


class CaseTransitionRefused(DomainError):
    """The case cannot take this action in its current status (e.g. acknowledging a resolved case)."""


class EncodedEvidence(Mapping[str, object]):
    """Evidence kept as its JSON text: a large run holds a hundred thousand findings, and their evidence
    as dictionaries would weigh several times more. Read as a mapping, it is decoded on demand."""

    __slots__ = ("text",)

    def __init__(self, evidence: Mapping[str, object]) -> None:
        self.text = _ENCODE(evidence)

    def _decoded(self) -> dict[str, object]:
        decoded: dict[str, object] = json.loads(self.text)
        return decoded

    def __getitem__(self, key: str) -> object:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())


_ENCODE = json.JSONEncoder(default=str).encode


def evidence_json(evidence: Mapping[str, object]) -> str:
    """The evidence as JSON text, encoded once."""
    return evidence.text if isinstance(evidence, EncodedEvidence) else _ENCODE(evidence)


# Slots: a large run holds a hundred thousand findings and their evidence at once.
@dataclass(frozen=True, slots=True)
class StoredRecordsEvidence:
    """Evidence that names the records on both sides by id, for the store to render from the rows it
    holds (the same document `matching_run.findings_of` builds from records): a large run's hundred
    thousand breaks are never read into Python and written back."""

    rule: str
    statement_line_ids: tuple[int, ...]
    entry_ids: tuple[int, ...]
    debit_normal: bool
    days_apart: int | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """A break a run found, with its evidence: the records on both sides."""

    kind: str
    message: str
    statement_line_ids: tuple[str, ...] = ()
    transfer_ids: tuple[str, ...] = ()
    amount_minor: int | None = None  # the amount in question (the difference, for a mismatch)
    currency: str = ""
    evidence: Mapping[str, object] | StoredRecordsEvidence = field(default_factory=dict, hash=False, compare=False)
    _fingerprint: str = field(default="", init=False, repr=False, hash=False, compare=False)

    @property
    def severity(self) -> str:
        return SEVERITY.get(self.kind, "MEDIUM")

    @property
    def fingerprint(self) -> str:
        """Same kind, same records: the same break, whichever run found it (computed once)."""
        if not self._fingerprint:
            canonical = "|".join(
                [self.kind, ",".join(sorted(self.statement_line_ids)), ",".join(sorted(self.transfer_ids))]
            )
            if not self.statement_line_ids and not self.transfer_ids:
                canonical += "|" + self.message  # account-level findings (balance drift) differ by what they say
            object.__setattr__(self, "_fingerprint", hashlib.sha256(canonical.encode()).hexdigest()[:32])
        return self._fingerprint


@dataclass(frozen=True)
class CaseState:
    """What a run needs to know of an existing case."""

    id: str
    fingerprint: str
    status: CaseStatus
    resolved_by_system: bool = False


@dataclass(frozen=True)
class CasePlan:
    open: list[Finding]  # new cases
    reopen: list[tuple[str, Finding]]  # (case id, finding): resolved, and the break is back
    still_open: list[tuple[str, Finding]]  # (case id, finding): unchanged, evidence refreshed
    auto_resolve: list[str]  # case ids whose break the data no longer shows


def plan_cases(findings: Iterable[Finding], existing: Mapping[str, CaseState], in_scope: Iterable[str]) -> CasePlan:
    """How a run's `findings` change the cases. `existing` maps fingerprint → case; `in_scope` are the
    fingerprints of cases the run could have found again (same account, same window): those it did not
    find are resolved by the system."""
    plan = CasePlan([], [], [], [])
    found: set[str] = set()
    for finding in findings:
        fingerprint = finding.fingerprint
        if fingerprint in found:
            continue
        found.add(fingerprint)
        case = existing.get(fingerprint)
        if case is None:
            plan.open.append(finding)
        elif case.status is CaseStatus.RESOLVED:
            plan.reopen.append((case.id, finding))
        else:
            plan.still_open.append((case.id, finding))
    for fingerprint in in_scope:
        case = existing.get(fingerprint)
        if case is not None and fingerprint not in found and case.status is not CaseStatus.RESOLVED:
            plan.auto_resolve.append(case.id)
    return plan


def next_status(current: CaseStatus, action: CaseAction) -> CaseStatus:
    """The status after `action`. Raises CaseTransitionRefused when the lifecycle does not allow it."""
    if current is CaseStatus.RESOLVED:
        raise CaseTransitionRefused(
            f"the case is already {current.value}", field="action", code="RECON_CASE_ALREADY_RESOLVED"
        )
    if action is CaseAction.ACKNOWLEDGE:
        if current is CaseStatus.ACKNOWLEDGED:
            raise CaseTransitionRefused(
                "the case is already ACKNOWLEDGED", field="action", code="RECON_CASE_ALREADY_ACKNOWLEDGED"
            )
        return CaseStatus.ACKNOWLEDGED
    return CaseStatus.RESOLVED


def parse_action(action: str, reason: str) -> CaseAction:
    """Raises ValidationError for an unknown action, or a missing or oversized reason."""
    try:
        parsed = CaseAction(action.strip().upper())
    except ValueError:
        raise ValidationError(
            f"action must be one of {', '.join(a.value for a in CaseAction)}", field="action", code="INVALID_ACTION"
        ) from None
    if not reason.strip():
        raise ValidationError("reason is required: say why, for the audit trail", field="reason", code="MISSING_FIELD")
    if len(reason) > 1000:
        raise ValidationError("reason must be at most 1000 characters", field="reason", code="INVALID_REASON")
    return parsed
