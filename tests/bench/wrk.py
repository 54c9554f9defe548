"""wrk, the keep-alive HTTP load generator, for closed-loop figures at 8 / 32 / 128 connections.

Found on PATH, or fetched once from the Debian archive with `apt-get download` and unpacked with
`dpkg -x` into ~/.cache/payrecon/wrk (no root needed, nothing installed system-wide). Where neither
works, `find_wrk` answers None and the bench falls back to its own Python generator, saying so."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path.home() / ".cache" / "payrecon" / "wrk"
# wrk depends on "libluajit-5.1-2 | libluajit2-5.1-2": whichever the archive has.
PACKAGES = (("wrk",), ("libluajit2-5.1-2", "libluajit-5.1-2"))


@dataclass(frozen=True)
class Wrk:
    binary: str
    env: dict[str, str]
    source: str  # where it came from, for the results

    def version(self) -> str:
        result = subprocess.run([self.binary, "-v"], capture_output=True, text=True, env=self.env, check=False)
        first = (result.stdout or result.stderr).strip().splitlines()
        return first[0] if first else "wrk"


def _unpacked() -> Wrk | None:
    binary = CACHE / "root" / "usr" / "bin" / "wrk"
    if not binary.exists():
        return None
    libs = [str(p) for p in (CACHE / "root" / "usr" / "lib").glob("*-linux-gnu")]
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join([*libs, os.environ.get("LD_LIBRARY_PATH", "")])}
    wrk = Wrk(str(binary), env, f"Debian package unpacked in {CACHE}")
    probe = subprocess.run([wrk.binary, "-v"], capture_output=True, env=env, check=False)
    return wrk if b"wrk" in probe.stdout + probe.stderr else None


def _download(names: tuple[str, ...], into: Path) -> bool:
    for name in names:
        if subprocess.run(["apt-get", "download", name], cwd=into, capture_output=True, check=False).returncode == 0:
            return True
    return False


def find_wrk(log: bool = True) -> Wrk | None:
    found = shutil.which("wrk")
    if found:
        return Wrk(found, dict(os.environ), f"on PATH ({found})")
    unpacked = _unpacked()
    if unpacked is not None:
        return unpacked
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        return None
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as debs:
        fetched = all(_download(names, Path(debs)) for names in PACKAGES)
        if not fetched and os.geteuid() == 0:
            # A fresh machine may have no package lists yet.
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
            fetched = all(_download(names, Path(debs)) for names in PACKAGES)
        if not fetched:
            if log:
                print("wrk: apt-get download failed; falling back to the Python generator", flush=True)
            return None
        for deb in Path(debs).glob("*.deb"):
            subprocess.run(["dpkg", "-x", str(deb), str(CACHE / "root")], check=True)
    return _unpacked()


# Each request: the seed's body (amount as a JSON number) with a fresh idempotency key, accounts
# spread over ACCOUNTS sources so the ledger's message groups share the work. Counts 202s and
# everything else per thread, and prints the summary as one JSON line.
SCRIPT = """
local threads = {}
local run = "%(run)s"
local accounts = %(accounts)d

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  n = 0
  accepted = 0
  other = 0
  prefix = run .. "-" .. tid .. "-"
  wrk.method = "POST"
  wrk.path = "/api/v1/transactions"
  wrk.headers["Authorization"] = "Bearer demo-token-for-testing"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  n = n + 1
  local key = prefix .. n
  local source = (n * 31 + tid) %% accounts
  local body = '{"transaction":{"source_account_id":"' .. run .. '-' .. source ..
    '","destination_account_id":"' .. run .. '-' .. ((source * 7 + 1) %% accounts) ..
    '-in","amount":100.00},"idempotencyKey":"' .. key .. '"}'
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status == 202 then accepted = accepted + 1 else other = other + 1 end
end

function done(summary, latency, requests)
  local a, o = 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("accepted")
    o = o + t:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%%d,"duration_us":%%d,"accepted":%%d,"other":%%d,"connect":%%d,"read":%%d,' ..
    '"write":%%d,"timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d}\\n',
    summary.requests, summary.duration, a, o, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


@dataclass(frozen=True)
class WrkFigures:
    connections: int
    requests: int
    seconds: float
    accepted: int
    other_status: int
    socket_errors: int  # connect, read, write errors and timeouts
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def accepted_per_second(self) -> float:
        return self.accepted / self.seconds

    @property
    def errors(self) -> int:
        return self.other_status + self.socket_errors


def run_wrk(
    wrk: Wrk, base_url: str, *, connections: int, seconds: int, run: str, threads: int = 2, accounts: int = 500
) -> WrkFigures:
    """One closed-loop run: `connections` keep-alive connections, each sending its next request when
    the answer to the previous one arrives. Latency is wrk's, from send to the last byte of the answer."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(SCRIPT % {"run": run, "accounts": accounts})
    try:
        result = subprocess.run(
            [
                wrk.binary,
                "-t",
                str(min(threads, connections)),
                "-c",
                str(connections),
                "-d",
                f"{seconds}s",
                "--timeout",
                "10s",
                "-s",
                script.name,
                f"{base_url}/api/v1/transactions",
            ],
            capture_output=True,
            text=True,
            env=wrk.env,
            check=False,
        )
    finally:
        os.unlink(script.name)
    line = next((x for x in result.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    f = json.loads(line.removeprefix("WRK_JSON "))
    return WrkFigures(
        connections,
        f["requests"],
        f["duration_us"] / 1e6,
        f["accepted"],
        f["other"],
        f["connect"] + f["read"] + f["write"] + f["timeout"],
        f["p50_us"] / 1000,
        f["p90_us"] / 1000,
        f["p99_us"] / 1000,
        f["max_us"] / 1000,
    )
