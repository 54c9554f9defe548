"""CPU seconds of each process of a running stack, from /proc/<pid>/stat (utime + stime, every thread
included), so a measured run can say what each accepted transfer cost every process.

A process counts with its descendants (a service that forks workers is one row). PostgreSQL counts
as the backends serving the stack's own database (pg_stat_activity), when they are processes of this
machine; a server shared with other work is not charged for what others make it do."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from services.devstack.stack import Stack

TICKS = os.sysconf("SC_CLK_TCK")
POSTGRES = "PostgreSQL backends"
GENERATOR = "load generator"


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process (all its threads), or None when it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS  # fields 14 and 15 of proc(5)


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def with_descendants(pids: Iterable[int]) -> set[int]:
    children = _children_by_parent()
    found: set[int] = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


async def postgres_backends(database_url: str) -> set[int]:
    """The server processes serving `database_url`'s database, other than this query's own; empty
    when they are not processes of this machine (a remote or containerised server)."""
    conn = await asyncpg.connect(database_url)
    try:
        pids = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return {r["pid"] for r in pids if cpu_seconds(r["pid"]) is not None}


def stack_processes(stack: Stack) -> dict[str, set[int]]:
    """Process name → pids (with descendants) of what the stack started."""
    roots: dict[str, list[int]] = {name: [child.process.pid] for name, child in stack.children.items()}
    if stack.envoy is not None:
        roots["envoy"] = [stack.envoy.child.process.pid]
    if stack.sqs is not None:
        roots["SQS server"] = [stack.sqs.child.process.pid]
    return {name: with_descendants(pids) for name, pids in roots.items()}


@dataclass(frozen=True)
class CpuSnapshot:
    seconds: dict[str, dict[int, float]]  # process name → pid → CPU seconds so far


def snapshot(processes: Mapping[str, set[int]]) -> CpuSnapshot:
    taken: dict[str, dict[int, float]] = {}
    for name, pids in processes.items():
        taken[name] = {pid: s for pid in pids if (s := cpu_seconds(pid)) is not None}
    return CpuSnapshot(taken)


@dataclass(frozen=True)
class CpuUse:
    seconds: dict[str, float]  # process name → CPU seconds spent between two snapshots
    vanished: list[str]  # names with a process that ended meanwhile (its share is missing)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def spent(before: CpuSnapshot, after: CpuSnapshot) -> CpuUse:
    """CPU between two snapshots. A process that appeared in between counts from zero."""
    seconds: dict[str, float] = {}
    vanished: list[str] = []
    for name in {**before.seconds, **after.seconds}:
        old, new = before.seconds.get(name, {}), after.seconds.get(name, {})
        seconds[name] = sum(s - old.get(pid, 0.0) for pid, s in new.items())
        if old.keys() - new.keys():
            vanished.append(name)
    return CpuUse(seconds, sorted(vanished))


class CpuMeter:
    """Snapshots of the stack's processes and its database's backends, re-listed at each snapshot so
    processes and pooled connections opened during the run are counted."""

    def __init__(self, stack: Stack, extra: Callable[[], Mapping[str, set[int]]] | None = None) -> None:
        self._stack = stack
        self._extra = extra

    async def processes(self) -> dict[str, set[int]]:
        found = stack_processes(self._stack)
        backends = await postgres_backends(self._stack.env["PAYRECON_DATABASE_URL"])
        if backends:
            found[POSTGRES] = backends
        if self._extra is not None:
            found.update(self._extra())
        return found

    async def snapshot(self, also: Mapping[str, set[int]] | None = None) -> CpuSnapshot:
        """`also`: processes listed at the previous snapshot, so one that is gone now still shows."""
        found = await self.processes()
        for name, pids in (also or {}).items():
            found[name] = found.get(name, set()) | pids
        return snapshot(found)


def cpu_table(uses: Mapping[str, tuple[CpuUse, int]]) -> str:
    """A markdown table: ms of CPU per accepted transfer, one column per measured run
    (run name → (CPU use, transfers accepted))."""
    names = sorted({n for use, _ in uses.values() for n in use.seconds}, key=process_order)
    head = "| process | " + " | ".join(uses) + " |\n|---|" + "---|" * len(uses) + "\n"
    rows = []
    for name in names:
        cells = []
        for use, accepted in uses.values():
            value = use.seconds.get(name)
            cells.append("" if value is None else f"{1000 * value / max(accepted, 1):.2f}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |\n")
    totals = " | ".join(f"**{1000 * use.total / max(accepted, 1):.2f}**" for use, accepted in uses.values())
    cpu = " | ".join(f"{use.total:.1f} s" for use, _ in uses.values())
    count = " | ".join(f"{accepted:,}" for _, accepted in uses.values())
    return head + "".join(rows) + f"| **all** | {totals} |\n| CPU seconds | {cpu} |\n| accepted | {count} |\n"


def process_order(name: str) -> tuple[int, str]:
    order = ["envoy", "ingest", "ledger", "ledger-worker", "reconciliation", "SQS server", POSTGRES, GENERATOR]
    base = name.split("-")[0] if name.startswith("ingest") else name
    return (order.index(base) if base in order else len(order), name)
