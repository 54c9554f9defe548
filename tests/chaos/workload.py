"""Careful clients under chaos: transfers (re-sent duplicates, concurrent requests with one key) and
holds (posted, partly posted, voided, or post and void raced). Every call is retried with the same
idempotency key on a 5xx, a timeout or a broken connection, as a careful client would; every answer
is recorded, so the ledger can be checked afterwards against what the clients were told."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
from google.protobuf import struct_pb2
from payrecon.ingest.v1 import ingest_pb2, ingest_pb2_grpc

from services.kernel.grpc_errors import machine_code_of

TOKEN = "demo-token-for-testing"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CURRENCIES = {"USD": 2, "EUR": 2, "JPY": 0}  # currency → decimals
# gRPC statuses a careful client retries with the same key (Envoy answers their REST forms with 5xx).
RETRYABLE_GRPC = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
GRPC_OPTIONS = [
    # Reconnect within a second once a killed replica is back (gRPC's default backoff grows to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


@dataclass(frozen=True)
class TransferBody:
    source: str
    destination: str
    amount_minor: int
    currency: str

    def amount_json(self, as_number: bool) -> object:
        """Major units: the seed's JSON number, or a decimal string."""
        decimals = CURRENCIES[self.currency]
        if decimals == 0:
            return self.amount_minor if as_number else str(self.amount_minor)
        text = f"{self.amount_minor // 10**decimals}.{self.amount_minor % 10**decimals:0{decimals}d}"
        return float(text) if as_number else text


@dataclass
class TransferIntent:
    """One idempotency key and everything sent and answered under it."""

    key: str
    sent_at: float  # monotonic: when its first request went out
    bodies: list[TransferBody] = field(default_factory=list)
    accepted: TransferBody | None = None  # the body answered 202
    accepted_at: float | None = None  # monotonic: when the client had its (first) 202
    message_ids: set[str] = field(default_factory=set)


@dataclass
class HoldIntent:
    key: str
    body: TransferBody
    action: str  # post | post-partial | void | race
    created: bool = False
    # What the client was told finally: (status, posted minor units), from the call that won.
    told: tuple[str, int] | None = None


@dataclass
class Answer:
    kind: str  # accepted | reused | resolved | ok | retry | refused
    status: int | str  # HTTP status or gRPC code name
    body: dict[str, Any] = field(default_factory=dict)
    replayed: bool = False

    @property
    def label(self) -> str:
        code = self.body.get("code")
        return f"{self.status} {code}" if code else str(self.status)


@dataclass
class Record:
    transfers: dict[str, TransferIntent] = field(default_factory=dict)
    holds: dict[str, HoldIntent] = field(default_factory=dict)
    # Answers a careful client must never get (a 4xx to a well-formed request, two message ids for
    # one key, two bodies accepted under one key, both sides of a hold race winning...).
    anomalies: list[str] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    calls: int = 0
    unanswered: int = 0  # calls still failing when the clients stopped retrying
    concurrent_same_key: int = 0
    conflicting_same_key: int = 0
    duplicates_resent: int = 0

    @property
    def accepted(self) -> dict[str, TransferIntent]:
        return {k: t for k, t in self.transfers.items() if t.accepted is not None}


class Clients:
    """The load: `transfer_clients` + `hold_clients` loops until `duration` has passed."""

    def __init__(
        self,
        base_url: str,
        replica_address: str | None,
        run_id: str,
        *,
        transfer_clients: int,
        hold_clients: int,
        accounts_per_currency: int = 24,
        seed: int = 0,
        give_up_after: float = 60.0,
    ) -> None:
        self.base_url = base_url
        self.replica_address = replica_address
        self.run_id = run_id
        self.transfer_clients = transfer_clients
        self.hold_clients = hold_clients
        self.accounts = {
            currency: [f"{run_id}-{currency.lower()}-{i}" for i in range(accounts_per_currency)]
            for currency in CURRENCIES
        }
        self.rng = random.Random(seed)
        self.give_up_after = give_up_after
        self.record = Record()
        self._load_ends = 0.0
        self._give_up_at = 0.0

    # -- the load ------------------------------------------------------------------------------

    async def run(self, duration: float) -> None:
        self._load_ends = time.monotonic() + duration
        self._give_up_at = self._load_ends + self.give_up_after
        limits = httpx.Limits(max_connections=4 * (self.transfer_clients + self.hold_clients))
        async with (
            httpx.AsyncClient(base_url=self.base_url, headers=AUTH, timeout=15, limits=limits) as http,
            grpc.aio.insecure_channel(self.replica_address or "127.0.0.1:1", options=GRPC_OPTIONS) as channel,
        ):
            self._http = http
            self._replica = ingest_pb2_grpc.IngestServiceStub(channel) if self.replica_address else None
            await asyncio.gather(
                *(self._transfer_loop(i) for i in range(self.transfer_clients)),
                *(self._hold_loop(i) for i in range(self.hold_clients)),
            )

    def _body(self, currency: str | None = None) -> TransferBody:
        currency = currency or self.rng.choice(list(CURRENCIES))
        source, destination = self.rng.sample(self.accounts[currency], 2)
        return TransferBody(source, destination, self.rng.randint(1, 50_000), currency)

    async def _transfer_loop(self, client: int) -> None:
        n = 0
        while time.monotonic() < self._load_ends:
            n += 1
            key = f"{self.run_id}-t{client}-{n}"
            intent = self.record.transfers[key] = TransferIntent(key, time.monotonic())
            body = self._body()
            roll = self.rng.random()
            if roll < 0.10:  # concurrent requests with one key (one to the other replica when there is one)
                self.record.concurrent_same_key += 1
                intent.bodies.append(body)
                routes = ["rest", "grpc" if self._replica else "rest", *(["rest"] if roll < 0.03 else [])]
                answers = await asyncio.gather(*(self._submit(key, body, route) for route in routes))
                self._accepted_all(intent, body, answers)
            elif roll < 0.12:  # the same key for two different transfers, at once: exactly one may win
                self.record.conflicting_same_key += 1
                other = TransferBody(body.source, body.destination, body.amount_minor + 1, body.currency)
                intent.bodies += [body, other]
                pair = await asyncio.gather(self._submit(key, body, "rest"), self._submit(key, other, "rest"))
                winners = [b for b, a in zip((body, other), pair, strict=True) if a.kind == "accepted"]
                for a in pair:
                    if a.kind not in ("accepted", "reused", "retry"):
                        self._anomaly(key, f"conflicting same-key request answered {a.label}")
                if len(winners) > 1:
                    self._anomaly(key, "two different transfers accepted under one key")
                elif winners:
                    self._note_accepted(intent, winners[0], [a for a in pair if a.kind == "accepted"])
            else:
                intent.bodies.append(body)
                answer = await self._submit(key, body, "rest")
                self._accepted_all(intent, body, [answer])
                if intent.accepted and self.rng.random() < 0.15:  # a retry of something already answered
                    self.record.duplicates_resent += 1
                    route = "grpc" if self._replica and self.rng.random() < 0.3 else "rest"
                    again = await self._submit(key, body, route)
                    self._accepted_all(intent, body, [again])
                    if again.kind == "accepted" and not again.replayed:
                        self._anomaly(key, "a re-sent duplicate was not answered as a replay")

    def _accepted_all(self, intent: TransferIntent, body: TransferBody, answers: list[Answer]) -> None:
        for answer in answers:
            if answer.kind not in ("accepted", "retry"):
                self._anomaly(intent.key, f"a well-formed transfer answered {answer.label}")
        accepted = [a for a in answers if a.kind == "accepted"]
        if accepted:
            self._note_accepted(intent, body, accepted)

    def _note_accepted(self, intent: TransferIntent, body: TransferBody, answers: list[Answer]) -> None:
        intent.accepted = body
        intent.accepted_at = intent.accepted_at or time.monotonic()
        intent.message_ids.update(str(a.body.get("messageId") or a.body.get("message_id")) for a in answers)
        if len(intent.message_ids) > 1:
            self._anomaly(intent.key, f"one key answered with {len(intent.message_ids)} message ids")

    async def _hold_loop(self, client: int) -> None:
        n = 0
        while time.monotonic() < self._load_ends:
            n += 1
            key = f"{self.run_id}-h{client}-{n}"
            body = self._body("USD")
            action = self.rng.choices(["post", "post-partial", "void", "race"], weights=[40, 20, 25, 15])[0]
            hold = self.record.holds[key] = HoldIntent(key, body, action)
            payload = {
                "idempotencyKey": key,
                "sourceAccountId": body.source,
                "destinationAccountId": body.destination,
                "amount": body.amount_json(as_number=False),
                "currency": body.currency,
            }
            # Now and then the same hold is asked for twice at once: both must answer the one hold.
            copies = 2 if self.rng.random() < 0.1 else 1
            created = await asyncio.gather(*(self._call("POST", "/api/v1/holds", payload) for _ in range(copies)))
            for answer in created:
                if answer.kind not in ("ok", "retry"):
                    self._anomaly(key, f"creating a hold answered {answer.label}")
            if any(a.kind != "ok" for a in created):
                continue
            if len({(a.body.get("id"), a.body.get("amountMinor")) for a in created}) > 1:
                self._anomaly(key, "one hold key answered with two different holds")
            hold.created = True
            partial = max(1, body.amount_minor // 3)
            post_body: dict[str, Any] = (
                {"amount": f"{partial // 100}.{partial % 100:02d}"} if action == "post-partial" else {}
            )
            settle_calls: dict[str, list[tuple[str, dict[str, Any]]]] = {
                "post": [("post", {})],
                "post-partial": [("post", post_body)],
                "void": [("void", {})],
                "race": [("post", {}), ("void", {})],
            }
            calls = settle_calls[action]
            answers = await asyncio.gather(
                *(self._call("POST", f"/api/v1/holds/{key}/{verb}", payload) for verb, payload in calls)
            )
            winners = [a for a in answers if a.kind == "ok"]
            for answer in answers:
                if answer.kind == "resolved" and action != "race":
                    self._anomaly(key, f"a hold's only {action} answered {answer.label}")
                elif answer.kind not in ("ok", "resolved", "retry"):
                    self._anomaly(key, f"settling a hold answered {answer.label}")
            if len(winners) > 1:
                self._anomaly(key, "both the post and the void of one hold succeeded")
            elif winners:
                told = winners[0].body
                hold.told = (str(told.get("status")), int(told.get("postedAmountMinor") or 0))

    # -- one call, retried until it has a final answer -------------------------------------------

    async def _submit(self, key: str, body: TransferBody, route: str) -> Answer:
        if route == "grpc":
            return await self._until_final(lambda: self._submit_grpc_once(key, body))
        payload = {
            "transaction": {
                "source_account_id": body.source,
                "destination_account_id": body.destination,
                "amount": body.amount_json(as_number=self.rng.random() < 0.5),
                "currency": body.currency,
            },
            "idempotencyKey": key,
        }
        return await self._until_final(lambda: self._rest_once("POST", "/api/v1/transactions", payload))

    async def _call(self, method: str, path: str, payload: dict[str, Any]) -> Answer:
        return await self._until_final(lambda: self._rest_once(method, path, payload))

    async def _until_final(self, once: Any) -> Answer:
        backoff = 0.1
        while True:
            self.record.calls += 1
            answer: Answer = await once()
            self.record.answers[answer.label] += 1
            if answer.kind != "retry":
                return answer
            if time.monotonic() > self._give_up_at:
                self.record.unanswered += 1
                return answer
            await asyncio.sleep(backoff * (0.5 + self.rng.random()))
            backoff = min(2.0, backoff * 2)

    async def _rest_once(self, method: str, path: str, payload: dict[str, Any]) -> Answer:
        try:
            response = await self._http.request(method, path, json=payload)
        except httpx.TransportError as error:
            return Answer("retry", type(error).__name__)
        try:
            body = response.json()
        except ValueError:
            body = {"text": response.text[:200]}
        status = response.status_code
        if status == 202:
            return Answer("accepted", status, body, response.headers.get("idempotent-replayed") == "true")
        if status in (200, 201):
            return Answer("ok", status, body)
        if status >= 500 or status == 429:
            return Answer("retry", status, body)
        if status == 409 and body.get("code") == "IDEMPOTENCY_KEY_REUSED":
            return Answer("reused", status, body)
        if status == 409 and body.get("code") == "LEDGER_HOLD_ALREADY_RESOLVED":
            return Answer("resolved", status, body)
        return Answer("refused", status, body)

    async def _submit_grpc_once(self, key: str, body: TransferBody) -> Answer:
        assert self._replica is not None
        amount = body.amount_json(as_number=False)
        request = ingest_pb2.SubmitTransactionRequest(
            idempotency_key=key,
            transaction=ingest_pb2.TransactionInput(
                source_account_id=body.source,
                destination_account_id=body.destination,
                amount=struct_pb2.Value(string_value=str(amount)),
                currency=body.currency,
            ),
        )
        try:
            response = await self._replica.SubmitTransaction(
                request, metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=15
            )
        except grpc.aio.AioRpcError as error:
            code = error.code()
            if code in RETRYABLE_GRPC:
                return Answer("retry", code.name)
            machine_code = machine_code_of(error) or ""
            kind = "reused" if machine_code == "IDEMPOTENCY_KEY_REUSED" else "refused"
            return Answer(kind, code.name, {"code": machine_code})
        return Answer("accepted", "OK", {"messageId": response.message_id}, response.replayed)

    def _anomaly(self, key: str, what: str) -> None:
        self.record.anomalies.append(f"{key}: {what}")
