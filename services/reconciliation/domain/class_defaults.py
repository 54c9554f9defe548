"""Reconciliation defaults that account classes declare in the ledger's schema, and which rules a run uses.

The ledger keeps an account class's `reconciliation` block as data and checks only its shape:

    reconciliation:
      rules: {date_tolerance_days: 3}          # a matching-rules document, as PUT .../matching-rules takes
      statementAccount: {metadataField: iban}  # statements naming this value reconcile with the account

Here the block is read as reconciliation understands it. Rules in force for an account, in order:
its own saved rules (`account rules vN`), else its class's `rules` in the schema version in force
(`schema vN, class C`), else the built-in defaults. A class's rules that this context cannot parse
never fail a run: the run uses the built-in defaults and its `rules_source` says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.reconciliation.domain.matching_rules import MatchingRules

BUILT_IN = "built-in"


@dataclass(frozen=True)
class ClassDefaults:
    """One class's defaults: its parsed rules (None when it declares none or they are unusable, `problem`
    then says why) and the metadata field its accounts are found by from a statement's account id."""

    rules: MatchingRules | None = None
    problem: str = ""
    statement_field: str | None = None


@dataclass(frozen=True)
class SchemaDefaults:
    """The defaults of every class of one schema version (versions never change once applied)."""

    version: int
    classes: Mapping[str, ClassDefaults] = field(default_factory=dict)

    @property
    def statement_fields(self) -> dict[str, frozenset[str]]:
        """metadata field → the classes that route statements by it."""
        found: dict[str, set[str]] = {}
        for name, defaults in self.classes.items():
            if defaults.statement_field:
                found.setdefault(defaults.statement_field, set()).add(name)
        return {f: frozenset(names) for f, names in found.items()}


@dataclass(frozen=True)
class RulesInForce:
    rules: MatchingRules
    source: str  # "account rules v2", "schema v3, class bank" or "built-in" (with why, when that is a fallback)


def parse_rules(document: Mapping[str, Any], version: int) -> MatchingRules:
    """A rules document as the matching-rules route takes it (a `version` key in it is ignored: the
    version is the caller's). Raises ValueError when the rules make no sense."""
    clean = {k: v for k, v in document.items() if k != "version"}
    return MatchingRules.from_dict({**clean, "version": max(version, 1)})


def read_schema_defaults(version: int, document: Mapping[str, Any]) -> SchemaDefaults:
    """Every class's defaults from a schema document; never raises (a broken block is a class without
    usable rules or without a statement field, told in `problem`)."""
    classes: dict[str, ClassDefaults] = {}
    raw_classes = document.get("accountClasses")
    for name, spec in (raw_classes if isinstance(raw_classes, Mapping) else {}).items():
        block = spec.get("reconciliation") if isinstance(spec, Mapping) else None
        if not isinstance(block, Mapping):
            continue
        rules: MatchingRules | None = None
        problem = ""
        raw_rules = block.get("rules")
        if raw_rules is not None:
            try:
                if not isinstance(raw_rules, Mapping):
                    raise ValueError("rules must be a mapping")
                rules = parse_rules(raw_rules, 1)
            except (TypeError, ValueError) as error:
                problem = f"its rules are invalid: {error}"
        statement_account = block.get("statementAccount")
        statement_field = statement_account.get("metadataField") if isinstance(statement_account, Mapping) else None
        classes[str(name)] = ClassDefaults(
            rules, problem, statement_field if isinstance(statement_field, str) and statement_field else None
        )
    return SchemaDefaults(version, classes)


def choose_rules(
    saved_version: int, saved: Mapping[str, Any], schema: SchemaDefaults | None, account_class: str
) -> RulesInForce:
    """The rules a run uses: the account's saved version wins, then its class's defaults in the schema in
    force, then the built-in defaults. Raises ValueError only for saved rules that no longer parse
    (they were checked when saved)."""
    if saved_version > 0:
        return RulesInForce(parse_rules(saved, saved_version), f"account rules v{saved_version}")
    defaults = schema.classes.get(account_class) if schema is not None and account_class else None
    if schema is not None and defaults is not None:
        where = f"schema v{schema.version}, class {account_class}"
        if defaults.rules is not None:
            return RulesInForce(defaults.rules, where)
        if defaults.problem:
            return RulesInForce(MatchingRules(), f"{BUILT_IN} ({where}: {defaults.problem})")
    return RulesInForce(MatchingRules(), BUILT_IN)
