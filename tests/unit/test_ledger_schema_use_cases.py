"""The ledger enforces the schema in force on every posting path, against the in-memory unit of work."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.kernel.errors import NotFound, ValidationError
from services.kernel.money import Money
from services.ledger.domain import events
from services.ledger.domain.model import AccountType, TransferInstruction, TransferStatus
from services.ledger.domain.schema import (
    AccountRef,
    Posting,
    PostingKind,
    SchemaInvalid,
    SchemaStrandsAccounts,
    SchemaVersionConflict,
    SchemaViolation,
)
from services.ledger.service.ledger import LedgerService, NewAccount, NewHold
from tests.unit.fakes.ledger import FakeLedgerUnitOfWork
from tests.unit.test_ledger_schema import satisfies, schema_documents

MARKETPLACE = (Path(__file__).parents[2] / "deploy" / "schema" / "marketplace.schema.yaml").read_text()


def t(tid: str, debit: str, credit: str, minor: int, code: str = "", **metadata: str) -> TransferInstruction:
    return TransferInstruction(tid, debit, credit, Money(minor, "USD"), dict(metadata), code=code)


async def market() -> tuple[LedgerService, FakeLedgerUnitOfWork]:
    """A ledger under the marketplace schema, with a bank account, a merchant and a funded wallet."""
    uow = FakeLedgerUnitOfWork()
    ledger = LedgerService(uow)
    plan = await ledger.apply_schema(MARKETPLACE, applied_by="ops")
    assert plan.applied is not None and plan.applied.version == 1
    await ledger.create_account(NewAccount("bank:operating", "USD", "", False, None, {}))
    await ledger.create_account(NewAccount("merchant:shop", "USD", "", False, None, {"country": "FR"}))
    (topped,) = await ledger.post_transfers([t("top", "bank:operating", "wallet:alice", 10_000, "TOPUP")])
    assert isinstance(topped, events.TransferPosted)
    return ledger, uow


async def test_with_no_schema_anything_goes_as_before() -> None:
    ledger = LedgerService(FakeLedgerUnitOfWork())
    (told,) = await ledger.post_transfers([t("a", "x", "y", 100)])
    assert isinstance(told, events.TransferPosted)
    assert await ledger.schema() is None


async def test_accounts_a_transfer_opens_take_their_class() -> None:
    _, uow = await market()
    wallet = uow.state.accounts["wallet:alice"]
    assert (wallet.account_class, wallet.type, wallet.allow_overdraft) == ("wallet", AccountType.LIABILITY, False)
    assert uow.state.accounts["bank:operating"].type is AccountType.ASSET
    assert uow.state.accounts["merchant:shop"].account_class == "merchant"


async def test_the_worker_tells_a_refused_transfer_with_the_rule_and_stores_nothing() -> None:
    ledger, uow = await market()
    accounts_before = set(uow.state.accounts)
    await ledger.apply_messages(
        [
            (
                "m1",
                [
                    t("p2p", "wallet:alice", "wallet:bob", 500, "PURCHASE", orderId="o1"),
                    t("nometa", "wallet:alice", "merchant:shop", 500, "PURCHASE"),
                    t("ok", "wallet:alice", "merchant:shop", 500, "PURCHASE", orderId="o2"),
                    t("notype", "wallet:alice", "merchant:shop", 500),
                ],
            )
        ]
    )
    told = {e.transfer_id: e for e in uow.state.events}
    assert isinstance(told["p2p"], events.TransferRejected)
    assert told["p2p"].code == "SCHEMA_TRANSFER_TYPE_FORBIDS_CREDIT"
    assert isinstance(told["nometa"], events.TransferRejected) and told["nometa"].code == "SCHEMA_METADATA_INVALID"
    assert isinstance(told["notype"], events.TransferRejected)
    assert told["notype"].code == "SCHEMA_TRANSFER_TYPE_REQUIRED"
    assert isinstance(told["ok"], events.TransferPosted)
    assert {"p2p", "nometa", "notype"}.isdisjoint(uow.state.transfers)  # the ids stay free
    assert set(uow.state.accounts) == accounts_before  # wallet:bob was not opened
    assert uow.balance("merchant:shop") == 500 and uow.balance("wallet:alice") == 9_500


async def test_the_batch_api_answers_each_refusal_in_place() -> None:
    ledger, _ = await market()
    told = await ledger.post_transfers(
        [
            t("buy", "wallet:alice", "merchant:shop", 1_000, "PURCHASE", orderId="o1"),
            t("nobank", "bank:other", "wallet:alice", 500, "TOPUP"),
            t("fee", "merchant:shop", "fees:platform", 50, "FEE"),
            t("big", "bank:operating", "wallet:alice", 2_000_000, "TOPUP"),
            t("broke", "merchant:shop", "fees:platform", 5_000, "FEE"),
        ]
    )
    assert [type(e).__name__ for e in told] == [
        "TransferPosted",
        "TransferRejected",
        "TransferPosted",
        "TransferRejected",
        "TransferRejected",
    ]
    assert [getattr(e, "code", None) for e in (told[1], told[3], told[4])] == [
        "SCHEMA_ACCOUNT_AUTO_CREATE_FORBIDDEN",
        "SCHEMA_AMOUNT_ABOVE_MAXIMUM",
        "LEDGER_INSUFFICIENT_FUNDS",  # the class forbids overdraft: the merchant holds 9.50
    ]


async def test_holds_follow_their_type() -> None:
    ledger, uow = await market()
    with pytest.raises(SchemaViolation) as refused:
        await ledger.create_hold(
            NewHold("h-fee", "merchant:shop", "fees:platform", "0.50", "USD", None, {}, code="FEE")
        )
    assert refused.value.code == "SCHEMA_HOLDS_NOT_ALLOWED"
    assert "h-fee" not in uow.state.transfers
    held = await ledger.create_hold(
        NewHold("h-buy", "wallet:alice", "merchant:shop", "20.00", "USD", None, {"orderId": "o3"}, code="PURCHASE")
    )
    assert held.status is TransferStatus.PENDING and held.instruction.code == "PURCHASE"
    posted = await ledger.post_hold("h-buy", "15.00")
    assert posted.status is TransferStatus.POSTED and uow.balance("merchant:shop") == 1_500


async def test_a_hold_is_posted_under_the_version_in_force_and_always_voidable() -> None:
    ledger, uow = await market()
    for key in ("h1", "h2"):
        await ledger.create_hold(
            NewHold(key, "wallet:alice", "merchant:shop", "20.00", "USD", None, {"orderId": key}, code="PURCHASE")
        )
    capped = MARKETPLACE.replace(
        "    holds: true                     # authorise now, capture later\n",
        "    holds: true\n    limits: {USD: {min: 1, max: 1000}}\n",
    )
    assert (await ledger.apply_schema(capped, applied_by="ops", expected_version=1)).applied is not None
    with pytest.raises(SchemaViolation) as refused:
        await ledger.post_hold("h1", None)
    assert refused.value.code == "SCHEMA_AMOUNT_ABOVE_MAXIMUM"
    assert uow.state.transfers["h1"].status is TransferStatus.PENDING
    assert (await ledger.post_hold("h1", "10.00")).status is TransferStatus.POSTED
    assert (await ledger.void_hold("h2")).status is TransferStatus.VOIDED


async def test_reversals_follow_their_type() -> None:
    ledger, uow = await market()
    await ledger.post_transfers(
        [
            t("buy", "wallet:alice", "merchant:shop", 1_000, "PURCHASE", orderId="o9"),
            t("fee", "merchant:shop", "fees:platform", 50, "FEE"),
        ]
    )
    with pytest.raises(SchemaViolation) as refused:
        await ledger.reverse("fee", "fee-back", "mistake")
    assert refused.value.code == "SCHEMA_REVERSALS_NOT_ALLOWED"
    assert "fee-back" not in uow.state.transfers
    await ledger.post_transfers([t("buy2", "wallet:alice", "merchant:shop", 1_000, "PURCHASE", orderId="o10")])
    reversal = await ledger.reverse("buy2", "buy2-back", "refund")
    assert reversal.record.instruction.code == "PURCHASE" and uow.balance("wallet:alice") == 9_000


async def test_accounts_opened_by_hand_must_fit_their_class() -> None:
    ledger, _ = await market()
    for new, code in [
        (NewAccount("merchant:x", "USD", "", False, None, {}), "SCHEMA_ACCOUNT_METADATA_INVALID"),
        (NewAccount("merchant:x", "USD", "ASSET", False, None, {"country": "FR"}), "SCHEMA_ACCOUNT_TYPE_MISMATCH"),
        (NewAccount("merchant:x", "USD", "", True, None, {"country": "FR"}), "SCHEMA_OVERDRAFT_NOT_ALLOWED"),
        (NewAccount("merchant:x", "JPY", "", False, None, {"country": "FR"}), "SCHEMA_CURRENCY_NOT_ALLOWED"),
        (NewAccount("shop-x", "USD", "", False, None, {}), "SCHEMA_ACCOUNT_CLASS_UNKNOWN"),
    ]:
        with pytest.raises(SchemaViolation) as refused:
            await ledger.create_account(new)
        assert refused.value.code == code, new


async def test_a_version_that_strands_accounts_is_refused_with_them_and_changes_nothing() -> None:
    uow = FakeLedgerUnitOfWork()
    ledger = LedgerService(uow)
    await ledger.post_transfers([t("seed", "demo-1", "demo-2", 100)])  # opened with no schema
    with pytest.raises(SchemaStrandsAccounts) as refused:
        await ledger.apply_schema(MARKETPLACE, applied_by="ops")
    assert [v[0] for v in refused.value.violations] == ["accounts/demo-1", "accounts/demo-2"]
    assert uow.state.schemas == []
    preview = await ledger.apply_schema(MARKETPLACE, applied_by="ops", dry_run=True)
    assert [s.id for s in preview.stranded] == ["demo-1", "demo-2"] and preview.applied is None
    assert uow.state.schemas == []


async def test_versions_are_kept_listed_and_guarded_by_the_expected_version() -> None:
    ledger, uow = await market()
    again = await ledger.apply_schema(MARKETPLACE, applied_by="ops")
    assert again.applied is None and again.changes == []  # the same document: no new version
    with pytest.raises(SchemaVersionConflict):
        await ledger.apply_schema(MARKETPLACE.replace("min: 100,", "min: 200,"), applied_by="ops", expected_version=0)
    second = await ledger.apply_schema(
        MARKETPLACE.replace("min: 100,", "min: 200,"), applied_by="alice", expected_version=1
    )
    assert second.applied is not None and second.applied.version == 2
    assert [c.describe() for c in second.changes] == ["~ transfer type TOPUP (limits)"]
    history = await ledger.schema_history()
    assert [(a.version, a.applied_by) for a in history] == [(1, "ops"), (2, "alice")]
    assert (await ledger.schema(1)) == history[0]
    with pytest.raises(NotFound):
        await ledger.schema(7)
    # The new version applies to new postings only: the earlier top-up is untouched.
    (small,) = await ledger.post_transfers([t("top2", "bank:operating", "wallet:alice", 150, "TOPUP")])
    assert isinstance(small, events.TransferRejected) and small.code == "SCHEMA_AMOUNT_BELOW_MINIMUM"
    assert uow.state.transfers["top"].status is TransferStatus.POSTED


async def test_a_bad_document_changes_nothing() -> None:
    ledger, uow = await market()
    with pytest.raises(SchemaInvalid):
        await ledger.apply_schema(
            "accountClasses: {}\ntransferTypes: {X: {debit: [nope], credit: [nope]}}", applied_by="ops"
        )
    assert len(uow.state.schemas) == 1


# -- property: through the use cases, every transfer posted satisfies the version in force then ------


def account_ids(doc: dict[str, Any]) -> list[str]:
    """Ids of each class of `doc` (its patterns filled in), and one that matches none."""
    ids = ["nowhere:1"]
    for spec in doc["accountClasses"].values():
        pattern = spec["idPattern"]
        ids += [pattern.replace("{id}", f"u{n}").replace("{a}", f"a{n}").replace("{b}", "b") for n in (1, 2)]
    return sorted(set(ids))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema_documents(), schema_documents(), st.data())
async def test_every_transfer_posted_satisfied_the_version_in_force_when_it_was_posted(
    first: dict[str, Any], second: dict[str, Any], data: st.DataObject
) -> None:
    ids = sorted(set(account_ids(first)) | set(account_ids(second)))
    codes = ["", "T9", *first["transferTypes"], *second["transferTypes"]]
    moves = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from(ids),
                st.sampled_from(ids),
                st.sampled_from(codes),
                st.integers(1, 3000),
                st.sampled_from(["USD", "USD", "EUR"]),
                st.sampled_from([{}, {"ref": "r1"}, {"ref": "r2"}, {"ref": "x"}]),
                st.sampled_from([False, False, False, True]),
            ),
            min_size=4,
            max_size=24,
        )
    )
    uow = FakeLedgerUnitOfWork()
    ledger = LedgerService(uow)
    await ledger.apply_schema(json.dumps(first), applied_by="prop")
    opened = data.draw(st.lists(st.sampled_from(ids), unique=True, max_size=len(ids)))
    for account_id in opened:  # some accounts exist (under their class) before any transfer
        try:
            await ledger.create_account(NewAccount(account_id, "USD", "", False, None, {}))
        except SchemaViolation:
            pass
    for i, (debit, credit, code, minor, currency, metadata, hold) in enumerate(moves):
        if i == len(moves) // 2:  # a new version midway, unless it strands an account opened since
            try:
                await ledger.apply_schema(json.dumps(second), applied_by="prop")
            except SchemaStrandsAccounts:
                pass
        in_force = uow.state.schemas[-1].document
        before = {a.id: a.account_class for a in uow.state.accounts.values()}
        if debit == credit:
            continue
        transfer = TransferInstruction(
            f"t{i}", debit, credit, Money(minor, currency), metadata, pending=hold, code=code
        )
        (told,) = await ledger.post_transfers([transfer])
        posting = Posting(
            PostingKind.HOLD if hold else PostingKind.TRANSFER,
            code,
            AccountRef(debit, before.get(debit), debit in before),
            AccountRef(credit, before.get(credit), credit in before),
            minor,
            currency,
            metadata,
        )
        if isinstance(told, events.TransferRejected) and told.code.startswith("SCHEMA_"):
            assert f"t{i}" not in uow.state.transfers and set(uow.state.accounts) == set(before)
        else:
            # Allowed by the schema; posted, or refused by the ledger's own rules (funds, currency).
            assert satisfies(dict(in_force), posting), (in_force, posting, told)
            assert not isinstance(told, events.TransferRejected) or told.code.startswith("LEDGER_"), told


def test_a_json_document_keeps_its_whole_numbers_and_refuses_rounded_ones() -> None:
    from services.kernel.errors import ValidationError
    from services.ledger.api.servicer import _whole_numbers

    assert _whole_numbers({"limits": {"USD": {"min": 100.0, "max": 2.0**53}}, "ratio": 0.5, "xs": [1.0]}) == {
        "limits": {"USD": {"min": 100, "max": 2**53}},
        "ratio": 0.5,
        "xs": [1],
    }
    with pytest.raises(ValidationError, match="documentText"):
        _whole_numbers({"limits": {"USD": {"max": 2.0**60}}})


async def test_checking_transfers_tells_each_ones_rule_and_stores_nothing() -> None:
    ledger, uow = await market()
    transfers_before, accounts_before = dict(uow.state.transfers), set(uow.state.accounts)
    version, verdicts = await ledger.check_transfers(
        [
            t("p2p", "wallet:alice", "wallet:bob", 500, "PURCHASE", orderId="o1"),
            t("nometa", "wallet:alice", "merchant:shop", 500, "PURCHASE"),
            t("ok", "wallet:alice", "merchant:shop", 500, "PURCHASE", orderId="o2"),
            t("malformed", "wallet:alice", "wallet:alice", 500, "PURCHASE", orderId="o3"),  # the posting's to refuse
        ]
    )
    assert version == 1
    assert [v.code if v else None for v in verdicts] == [
        "SCHEMA_TRANSFER_TYPE_FORBIDS_CREDIT",
        "SCHEMA_METADATA_INVALID",
        None,
        None,
    ]
    assert (uow.state.transfers, set(uow.state.accounts)) == (transfers_before, accounts_before)


async def test_with_no_schema_a_check_only_tells_version_zero() -> None:
    ledger = LedgerService(FakeLedgerUnitOfWork())
    assert await ledger.check_transfers([]) == (0, [])
    assert await ledger.check_transfers([t("a", "x", "y", 100, "ANY")]) == (0, [None])


async def test_history_and_accounts_filter_on_indexed_metadata_only() -> None:
    ledger, uow = await market()
    assert uow.indexed == (frozenset({"country", "iban"}), frozenset({"orderId"}))
    await ledger.create_account(NewAccount("merchant:de", "USD", "", False, None, {"country": "DE"}))
    await ledger.post_transfers(
        [t(f"buy{n}", "wallet:alice", "merchant:shop", 100, "PURCHASE", orderId=f"o{n % 2}") for n in range(5)]
    )
    _, page, cursor = await ledger.history("merchant:shop", limit=2, cursor="", metadata=["orderId:o0"])
    _, rest, end = await ledger.history("merchant:shop", limit=2, cursor=cursor, metadata=["orderId:o0"])
    assert [e.transfer_id for e in page + rest] == ["buy4", "buy2", "buy0"] and end == ""
    accounts, _ = await ledger.accounts(limit=10, cursor="", metadata=["country:FR"])
    assert [a.id for a in accounts] == ["merchant:shop"]
    for bad, code in (
        (["userId:u1"], "METADATA_FIELD_NOT_INDEXED"),
        (["orderId"], "INVALID_METADATA_FILTER"),
    ):
        with pytest.raises(ValidationError) as refused:
            await ledger.history("merchant:shop", limit=2, cursor="", metadata=bad)
        assert refused.value.code == code
    with pytest.raises(ValidationError) as not_for_accounts:
        await ledger.accounts(limit=10, cursor="", metadata=["orderId:o1"])  # a transfer field, not an account one
    assert not_for_accounts.value.code == "METADATA_FIELD_NOT_INDEXED"


async def test_with_no_schema_no_metadata_field_is_indexed() -> None:
    ledger = LedgerService(FakeLedgerUnitOfWork())
    with pytest.raises(ValidationError) as refused:
        await ledger.accounts(limit=10, cursor="", metadata=["country:FR"])
    assert refused.value.code == "METADATA_FIELD_NOT_INDEXED"


async def test_a_balance_tells_the_account_s_class_and_the_schema_version_in_force() -> None:
    """Reconciliation takes a class's default matching rules from this, with no call of its own."""
    ledger, _ = await market()
    now = await ledger.balance("bank:operating")
    then = await ledger.balance("bank:operating", datetime.now(UTC))
    assert (now.account_class, now.schema_version) == (then.account_class, then.schema_version) == ("bank", 1)
    bare = LedgerService(FakeLedgerUnitOfWork())
    await bare.post_transfers([t("a", "x", "y", 100)])
    assert ((await bare.balance("x")).account_class, (await bare.balance("x")).schema_version) == ("", 0)
