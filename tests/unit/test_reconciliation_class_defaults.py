"""Reconciliation defaults from the ledger's schema, against fakes: which rules a run uses (the account's
saved rules, else its class's, else the built-in ones; unusable class rules fall back and say why, the
schema asked for once per version) and which ledger account a statement without accountId goes to."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pytest

from services.kernel.errors import ValidationError
from services.reconciliation.domain.class_defaults import BUILT_IN, choose_rules, read_schema_defaults
from services.reconciliation.domain.matching_rules import MatchingRules
from services.reconciliation.domain.statements import ParsedFile, Statement, StatementFormat
from services.reconciliation.service.ports import LedgerAccount, LedgerBalance
from services.reconciliation.service.reconcile import ReconciliationService

DOCUMENT: dict[str, Any] = {
    "accountClasses": {
        "bank": {
            "type": "ASSET",
            "indexedMetadata": ["iban"],
            "reconciliation": {"rules": {"date_tolerance_days": 3}, "statementAccount": {"metadataField": "iban"}},
        },
        "card": {
            "type": "ASSET",
            "indexedMetadata": ["iban"],
            "reconciliation": {
                "rules": {"date_tolerance_days": "three"},
                "statementAccount": {"metadataField": "iban"},
            },
        },
        "wallet": {"type": "LIABILITY", "indexedMetadata": ["iban"]},
    }
}


class FakeLedger:
    def __init__(self, document: Mapping[str, Any] | None, accounts: Mapping[str, tuple[str, dict[str, str]]]) -> None:
        self.document = document
        self.accounts = accounts  # id → (class, metadata)
        self.schema_calls: list[int] = []

    async def balance_as_of(self, account_id: str, as_of: datetime) -> LedgerBalance | None:
        if account_id not in self.accounts:
            return None
        return LedgerBalance(0, "EUR", True, 0, self.accounts[account_id][0], 3 if self.document else 0)

    async def schema(self, version: int) -> tuple[int, Mapping[str, Any]] | None:
        self.schema_calls.append(version)
        return (3, self.document) if self.document is not None else None

    async def accounts_with_metadata(self, field: str, value: str, limit: int) -> list[LedgerAccount]:
        found = [LedgerAccount(i, cls) for i, (cls, meta) in sorted(self.accounts.items()) if meta.get(field) == value]
        return found[:limit]

    async def post_adjustment(self, *args: Any) -> str:
        raise AssertionError("not in these tests")


class SavedRules:
    def __init__(self, saved: Mapping[str, tuple[int, dict[str, Any]]] | None = None) -> None:
        self.saved = saved or {}

    async def rules(self, account_id: str) -> tuple[int, dict[str, Any], datetime | None, str]:
        version, rules = self.saved.get(account_id, (0, {}))
        return version, rules, None, ""


ACCOUNTS = {
    "bank:operating": ("bank", {"iban": "DE89370400440532013000"}),
    "card:acquirer": ("card", {"iban": "FR7630006000011234567890189"}),
    "wallet:w1": ("wallet", {"iban": "NL91ABNA0417164300"}),
    "bank:twin-a": ("bank", {"iban": "GB29NWBK60161331926819"}),
    "bank:twin-b": ("bank", {"iban": "GB29NWBK60161331926819"}),
    "bank:other": ("bank", {"iban": "BE68539007547034"}),
}


def service(saved: Mapping[str, tuple[int, dict[str, Any]]] | None = None, document: Any = DOCUMENT) -> Any:
    ledger = FakeLedger(document, ACCOUNTS)
    return ReconciliationService(store=SavedRules(saved), ledger=ledger), ledger  # type: ignore[arg-type]


def parsed(*accounts: str) -> ParsedFile:
    return ParsedFile(StatementFormat.CAMT053, tuple(Statement(a, "EUR", ()) for a in accounts))


async def test_a_class_s_rules_apply_when_the_account_saved_none_and_the_schema_is_asked_once() -> None:
    recon, ledger = service()
    first = await recon.rules_in_force("bank:operating", None)
    again = await recon.rules_in_force("bank:operating", None)
    assert first.source == again.source == "schema v3, class bank"
    assert first.rules.date_tolerance_days == 3 != MatchingRules().date_tolerance_days
    assert ledger.schema_calls == [3]  # cached per version: runs do not ask again


async def test_the_rules_shown_for_an_account_are_those_a_run_would_use() -> None:
    recon, _ = service()
    version, rules, _, _, source = await recon.matching_rules("bank:operating")
    assert (version, rules["date_tolerance_days"], source) == (0, 3, "schema v3, class bank")


async def test_the_account_s_saved_rules_win_over_its_class() -> None:
    recon, ledger = service({"bank:operating": (2, {"date_tolerance_days": 0})})
    in_force = await recon.rules_in_force("bank:operating", None)
    assert (in_force.source, in_force.rules.date_tolerance_days, in_force.rules.version) == ("account rules v2", 0, 2)
    assert ledger.schema_calls == []


async def test_invalid_class_rules_fall_back_to_the_built_in_ones_and_say_why() -> None:
    recon, _ = service()
    in_force = await recon.rules_in_force("card:acquirer", None)
    assert in_force.rules == MatchingRules()
    assert in_force.source.startswith(f"{BUILT_IN} (schema v3, class card: its rules are invalid")
    assert "date_tolerance_days" in in_force.source


@pytest.mark.parametrize(
    ("account", "document"), [("wallet:w1", DOCUMENT), ("bank:operating", None), ("not-in-the-ledger", DOCUMENT)]
)
async def test_no_class_rules_means_the_built_in_ones(account: str, document: Any) -> None:
    recon, _ = service(document=document)
    assert (await recon.rules_in_force(account, None)).source == BUILT_IN


def test_a_broken_block_is_read_without_raising() -> None:
    document = {"accountClasses": {"x": {"reconciliation": {"rules": [1], "statementAccount": "iban"}}, "y": 3}}
    defaults = read_schema_defaults(7, document)
    assert defaults.classes["x"].rules is None and "mapping" in defaults.classes["x"].problem
    assert defaults.statement_fields == {}
    assert choose_rules(0, {}, defaults, "x").source.startswith("built-in (schema v7, class x")


async def test_a_statement_is_routed_to_the_account_whose_class_declares_its_field() -> None:
    recon, _ = service()
    assert await recon.route_statement(parsed("DE89370400440532013000")) == "bank:operating"
    # Two statements of the same bank account in one file: one import.
    assert await recon.route_statement(parsed("BE68539007547034", "BE68539007547034")) == "bank:other"


@pytest.mark.parametrize(
    ("accounts", "code", "named"),
    [
        (("XX00UNKNOWN",), "STATEMENT_ACCOUNT_UNKNOWN", "XX00UNKNOWN"),
        # A wallet holds the IBAN, but the wallet class routes no statements by it.
        (("NL91ABNA0417164300",), "STATEMENT_ACCOUNT_UNKNOWN", "NL91ABNA0417164300"),
        (("GB29NWBK60161331926819",), "STATEMENT_ACCOUNT_AMBIGUOUS", "bank:twin-a, bank:twin-b"),
        (("DE89370400440532013000", "BE68539007547034"), "STATEMENT_ACCOUNTS_MIXED", "bank:other"),
        (("",), "MISSING_FIELD", "names no account"),
    ],
)
async def test_a_statement_that_cannot_be_routed_is_refused_with_a_stable_code(
    accounts: tuple[str, ...], code: str, named: str
) -> None:
    recon, _ = service()
    with pytest.raises(ValidationError) as refused:
        await recon.route_statement(parsed(*accounts))
    assert refused.value.code == code
    assert named in refused.value.message


async def test_without_a_schema_declaring_statement_accounts_the_account_id_is_required() -> None:
    recon, _ = service(document=None)
    with pytest.raises(ValidationError) as refused:
        await recon.route_statement(parsed("DE89370400440532013000"))
    assert refused.value.code == "MISSING_FIELD" and "statementAccount" in refused.value.message
