"""SIGTERM drains: 1,000 transfers go through Envoy while the ledger worker, an ingest process and the
ledger are each stopped the way a supervisor stops them (SIGTERM, with work in hand) and started
again. Each says NOT_SERVING before it stops, finishes what it has in hand and exits 0 within its
grace periods; a request refused meanwhile gets a retryable 503, never a 202 that is then lost; every
accepted transfer is COMPLETED and posted exactly once, and the balances add up to what was accepted.

The redrive of stuck requests is switched off here (an hour): no safety net re-publishes what a drain
might drop, so the drain alone must lose nothing."""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

import httpx
import pytest

from services.devstack.stack import Stack
from tests.chaos.faults import Drained, restart, sigterm
from tests.chaos.verdict import verify_ledger_cli, wait_until_settled
from tests.e2e.test_ingest_guarantees import fetch
from tests.e2e.test_rest_flow import AUTH, seed_body

pytestmark = pytest.mark.e2e

TRANSFERS = 1_000
CLIENTS = 16
PAUSE_SECONDS = 0.2  # between one client's requests: the load lasts long enough to span every drain
# After how many requests sent each process gets its SIGTERM, one after the other; each is frozen
# (SIGSTOP) a moment before, so that it has work in hand when the SIGTERM reaches it: the worker
# batches its long polls were answered with, ingest the calls Envoy queued on its connections.
STOPS = {150: "ledger-worker", 400: "ingest", 650: "ledger"}
FROZEN_SECONDS = 1.5


@pytest.fixture(scope="module")
def drain_stack(two_ingest_stack: Stack) -> Stack:
    """The e2e package's stack (tests/e2e/conftest.py): two ingest processes behind Envoy (one keeps
    serving while the other drains), and no redrive to hide a lost message. Every process stopped
    here is started again before the test ends, for the other modules sharing it."""
    return two_ingest_stack


@dataclass
class Load:
    run: str
    accounts: list[str]
    amounts: dict[str, int] = field(default_factory=dict)  # key → cents
    routes: dict[str, tuple[str, str]] = field(default_factory=dict)  # key → (source, destination)
    accepted: dict[str, str] = field(default_factory=dict)  # key → messageId of its first 202
    refusals: Counter[str] = field(default_factory=Counter)  # answers other than 202, by status and code
    samples: dict[str, str] = field(default_factory=dict)  # one body of each kind of refusal
    sent = 0

    def body(self, key: str) -> dict[str, object]:
        source, destination = self.routes[key]
        cents = self.amounts[key]
        return seed_body(key, source, destination, f"{cents // 100}.{cents % 100:02d}")


async def submit_until_accepted(client: httpx.AsyncClient, load: Load, key: str) -> None:
    """A careful client: the same request again, same key, until it is accepted."""
    for _ in range(100):
        try:
            response = await client.post("/api/v1/transactions", json=load.body(key))
        except httpx.TransportError as error:
            load.refusals[type(error).__name__] += 1
        else:
            if response.status_code == 202:
                first = load.accepted.setdefault(key, response.json()["messageId"])
                assert first == response.json()["messageId"], key
                return
            code = response.json().get("code", "") if "json" in response.headers.get("content-type", "") else ""
            refusal = f"{response.status_code} {code}".strip()
            load.refusals[refusal] += 1
            load.samples.setdefault(refusal, response.text[:300])
        await asyncio.sleep(0.2)
    raise AssertionError(f"{key} never accepted: {load.refusals}")


async def run_load(stack: Stack, load: Load, keys: list[str], stops: list[Drained]) -> None:
    """CLIENTS concurrent clients through Envoy; meanwhile, in a thread, each process of STOPS gets
    its SIGTERM once that many requests have gone out, and is started again once it exited (as a
    supervisor would; the next SIGTERM does not wait for it). Returns once every restarted process
    reports SERVING again."""
    queue = list(reversed(keys))
    reached = {threshold: threading.Event() for threshold in STOPS}
    done = threading.Event()
    restarts: list[threading.Thread] = []

    def stop_and_restart() -> None:
        try:
            for threshold, name in STOPS.items():
                while not reached[threshold].wait(0.1):
                    if done.is_set():
                        return
                stops.append(sigterm(stack, name, frozen_seconds=FROZEN_SECONDS))
                restarts.append(threading.Thread(target=restart, args=(stack, name)))
                restarts[-1].start()
        finally:
            for thread in restarts:
                thread.join()

    async def client_loop(client: httpx.AsyncClient) -> None:
        while queue:
            key = queue.pop()
            load.sent += 1
            for threshold, event in reached.items():
                if load.sent >= threshold:
                    event.set()
            await submit_until_accepted(client, load, key)
            await asyncio.sleep(PAUSE_SECONDS)

    faults = asyncio.create_task(asyncio.to_thread(stop_and_restart))
    limits = httpx.Limits(max_connections=CLIENTS)
    try:
        async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=30, limits=limits) as client:
            await asyncio.gather(*(client_loop(client) for _ in range(CLIENTS)))
    finally:
        done.set()
        await faults


async def statuses_of(stack: Stack, keys: list[str]) -> dict[str, str]:
    """Each key's status, as a client polling it is told."""
    gate = asyncio.Semaphore(32)
    async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=30) as client:

        async def status(key: str) -> str:
            async with gate:
                response = await client.get(f"/api/v1/transactions/status/{key}")
            assert response.status_code == 200, response.text
            return str(response.json()["status"])

        return dict(zip(keys, await asyncio.gather(*(status(key) for key in keys)), strict=True))


def test_sigterm_during_a_thousand_transfers_loses_nothing_and_posts_nothing_twice(drain_stack: Stack) -> None:
    stack = drain_stack
    run = uuid.uuid4().hex[:8]
    rng = random.Random(run)
    load = Load(run, [f"drain-{run}-{i}" for i in range(6)])
    keys = [f"drain-{run}-{n:04d}" for n in range(TRANSFERS)]
    for key in keys:
        load.routes[key] = tuple(rng.sample(load.accounts, 2))  # type: ignore[assignment]
        load.amounts[key] = rng.randint(1, 99_999)

    stops: list[Drained] = []
    asyncio.run(run_load(stack, load, keys, stops))

    # Each process drained: NOT_SERVING first, its work finished within the grace periods, exit 0.
    assert [d.name for d in stops] == list(STOPS.values())
    for drained in stops:
        assert drained.clean, (drained.name, drained.exit_code, drained.seconds, drained.statuses, drained.log[-3000:])

    # Refused while a process drained: only ever a retryable 503 (the same request, sent again, is
    # then accepted), never an error that says the request was wrong or failed.
    assert set(load.refusals) <= {"503", "503 SERVICE_UNAVAILABLE", "503 UNAVAILABLE"}, load.samples
    assert sorted(load.accepted) == keys

    # Every accepted request reaches COMPLETED: ingest's own record of each (the message id it
    # answered), and what a client polling a sample of them is told.
    asyncio.run(wait_until_settled(stack.env["PAYRECON_DATABASE_URL"], limit_seconds=90))
    requests = fetch(
        stack,
        "SELECT idempotency_key, status, message_id FROM ingest.requests WHERE idempotency_key LIKE $1",
        f"drain-{run}-%",
    )
    assert Counter(r["status"] for r in requests) == {"COMPLETED": TRANSFERS}
    assert {r["idempotency_key"]: str(r["message_id"]) for r in requests} == load.accepted
    sample = rng.sample(keys, 100)
    assert asyncio.run(statuses_of(stack, sample)) == dict.fromkeys(sample, "COMPLETED")

    # The ledger holds each accepted transfer exactly once, as one debit and one credit.
    posted = fetch(
        stack,
        "SELECT t.id, t.status, t.debit_account_id, t.credit_account_id, t.amount_minor,"
        " (SELECT count(*) FROM ledger.entries e WHERE e.transfer_id = t.id) AS entries"
        " FROM ledger.transfers t WHERE t.id LIKE $1",
        f"drain-{run}-%",
    )
    assert sorted(r["id"] for r in posted) == keys  # no key missing, none twice
    assert {(r["status"], r["entries"]) for r in posted} == {("POSTED", 2)}
    assert {r["id"]: (r["debit_account_id"], r["credit_account_id"]) for r in posted} == load.routes
    assert {r["id"]: r["amount_minor"] for r in posted} == load.amounts

    # Balances: Σ of what was accepted, per account.
    expected = dict.fromkeys(load.accounts, 0)
    for key in keys:
        source, destination = load.routes[key]
        expected[source] -= load.amounts[key]
        expected[destination] += load.amounts[key]
    with httpx.Client(base_url=stack.base_url, headers=AUTH, timeout=10) as client:
        balances = {
            account: Decimal(client.get(f"/api/v1/accounts/{account}/balance").json()["balance"])
            for account in load.accounts
        }
    assert balances == {account: Decimal(cents) / 100 for account, cents in expected.items()}

    ok, output = verify_ledger_cli(stack.env)
    assert ok, output
