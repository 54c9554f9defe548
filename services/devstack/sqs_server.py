"""A local SQS-compatible server: LocalStack (`localstack-core`) in a venv of its own, under the user cache.

LocalStack pins libraries of its own, so it never shares the project's venv. Its current release needs
Python 3.13; where none exists, 4.9.2 — the last release whose SQS provider loads on 3.11/3.12 — is
built with the running Python. moto's server is the last resort, used only when neither installs:
it slows down as a backlog builds up, so it is for functional use only.
`PAYRECON_SQS_SERVER` (auto | localstack | localstack-py311 | moto) forces one choice, with no fallback.
"""

from __future__ import annotations

import fcntl
import glob
import json
import logging
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from services.devstack.processes import Child, free_port, spawn, wait_until

log = logging.getLogger(__name__)

LOCALSTACK_VERSION = "2026.3.0"
# The last release that runs on Python 3.11/3.12: 4.14.0 declares >=3.10, but its SQS provider does not load.
LOCALSTACK_PY311_VERSION = "4.9.2"
LOCALSTACK_PY311_PYTHONS = ((3, 11), (3, 12))
# 4.9.2 starts through this script, which backports a fix for deleting FIFO messages after a
# visibility extension (see the script).
LOCALSTACK_PY311_START = Path(__file__).with_name("localstack_fifo_fix.py")
# Without these pins LocalStack breaks at start (cbor2 6, pyOpenSSL 26, cryptography 45); without
# service_identity it finds no component plugins.
LOCALSTACK_CONSTRAINTS = "cbor2<6\npyopenssl<25\ncryptography<45\n"
MOTO_REQUIREMENT = "moto[server]>=5.0,<6"

SQS_SERVER_SETTING = "PAYRECON_SQS_SERVER"
SqsServerChoice = Literal["auto", "localstack", "localstack-py311", "moto"]
SQS_SERVER_CHOICES: tuple[SqsServerChoice, ...] = ("auto", "localstack", "localstack-py311", "moto")
ServerKind = Literal["localstack", "moto"]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "payrecon"


def sqs_server_choice(environ: Mapping[str, str] | None = None) -> SqsServerChoice:
    """`PAYRECON_SQS_SERVER`, default auto; any other value stops the start with the variable's name."""
    raw = (os.environ if environ is None else environ).get(SQS_SERVER_SETTING, "").strip() or "auto"
    for choice in SQS_SERVER_CHOICES:
        if raw == choice:
            return choice
    raise ValueError(f"{SQS_SERVER_SETTING} must be one of {', '.join(SQS_SERVER_CHOICES)}, got {raw!r}")


@dataclass(frozen=True)
class ServerBuild:
    """One way to get an SQS server: which server, installed with which Python, into which cache venv."""

    kind: ServerKind
    python: str
    venv_name: str
    requirements: tuple[str, ...]
    constraints: str | None
    # What the venv's Python runs to start LocalStack (moto starts from its own script).
    start_args: tuple[str, ...] = ()


def localstack_build(python313: str) -> ServerBuild:
    return ServerBuild(
        "localstack",
        python313,
        f"localstack-{LOCALSTACK_VERSION}",
        (f"localstack-core[base-runtime]=={LOCALSTACK_VERSION}", "service_identity"),
        LOCALSTACK_CONSTRAINTS,
        ("-m", "localstack.runtime.main"),
    )


def localstack_py311_build(python: str, version: tuple[int, int]) -> ServerBuild:
    # The interpreter is in the name: a venv belongs to the Python that made it.
    return ServerBuild(
        "localstack",
        python,
        f"localstack-{LOCALSTACK_PY311_VERSION}-py{version[0]}.{version[1]}",
        (f"localstack-core[base-runtime]=={LOCALSTACK_PY311_VERSION}", "service_identity"),
        LOCALSTACK_CONSTRAINTS,
        (str(LOCALSTACK_PY311_START),),
    )


def moto_build(python: str) -> ServerBuild:
    return ServerBuild("moto", python, "moto-server", (MOTO_REQUIREMENT,), None)


def server_builds(
    choice: SqsServerChoice, python313: str | None, python: str, version: tuple[int, int]
) -> list[ServerBuild]:
    """The builds to try, best first. `python`/`version` is the running interpreter. auto: LocalStack on
    Python 3.13, then LocalStack 4.9.2 on the running 3.11/3.12, then moto; a forced choice is that
    build alone, and a ValueError when this machine cannot make it."""
    py311_capable = version in LOCALSTACK_PY311_PYTHONS
    if choice == "localstack":
        if python313 is None:
            raise ValueError(f"{SQS_SERVER_SETTING}=localstack needs a Python 3.13 (python3.13 on PATH or pyenv)")
        return [localstack_build(python313)]
    if choice == "localstack-py311":
        if not py311_capable:
            raise ValueError(
                f"{SQS_SERVER_SETTING}=localstack-py311 runs LocalStack {LOCALSTACK_PY311_VERSION} with the "
                f"running Python, which must be 3.11 or 3.12, not {version[0]}.{version[1]}"
            )
        return [localstack_py311_build(python, version)]
    if choice == "moto":
        return [moto_build(python)]
    builds = [localstack_build(python313)] if python313 else []
    if py311_capable:
        builds.append(localstack_py311_build(python, version))
    builds.append(moto_build(python))
    return builds


def find_python313() -> str | None:
    candidates = [
        shutil.which("python3.13"),
        "/usr/bin/python3.13",
        "/usr/local/bin/python3.13",
        *sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.13*/bin/python3.13")), reverse=True),
    ]
    for candidate in candidates:
        if not candidate or not Path(candidate).exists():
            continue
        try:
            out = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 13))"],
                capture_output=True,
                text=True,
                timeout=20,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == "True":
            return candidate
    return None


def _is_built(venv: Path) -> bool:
    # The marker is written last; without pyvenv.cfg beside it the venv is not one (two builds
    # interleaved before builds took the lock left exactly that): build again.
    return (venv / ".payrecon-ready").exists() and (venv / "pyvenv.cfg").exists()


def _pip_install(venv: Path, python: str, requirements: list[str], constraints: str | None) -> None:
    if _is_built(venv):
        return
    venv.parent.mkdir(parents=True, exist_ok=True)
    # Several test runs or stacks may start at once on one machine: one builds, the others wait for it.
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _is_built(venv):
            _build_venv(venv, python, requirements, constraints)


def _build_venv(venv: Path, python: str, requirements: list[str], constraints: str | None) -> None:
    """Raises RuntimeError when the venv or the install fails, so the next build can be tried."""
    marker = venv / ".payrecon-ready"
    if venv.exists():
        shutil.rmtree(venv)
    print(f"payrecon: building SQS server environment in {venv} (once) ...", file=sys.stderr, flush=True)
    made = subprocess.run([python, "-m", "venv", str(venv)], capture_output=True, text=True)
    if made.returncode != 0:
        raise RuntimeError(f"creating the venv {venv} failed:\n{made.stdout[-3000:]}\n{made.stderr[-3000:]}")
    args = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if constraints:
        constraint_file = venv / "constraints.txt"
        constraint_file.write_text(constraints)
        args += ["-c", str(constraint_file)]
    result = subprocess.run([*args, *requirements], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"installing the SQS server failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    marker.write_text("ok\n")


def ensure_server_env() -> tuple[ServerBuild, Path]:
    """(build, venv path) of the first build in `server_builds` that installs, building it when missing.
    Raises ValueError for a bad or impossible `PAYRECON_SQS_SERVER`, RuntimeError when nothing installs."""
    choice = sqs_server_choice()
    python313 = find_python313() if choice in ("auto", "localstack") else None
    builds = server_builds(choice, python313, sys.executable, (sys.version_info[0], sys.version_info[1]))
    failures: list[str] = []
    for build in builds:
        venv = cache_dir() / build.venv_name
        try:
            _pip_install(venv, build.python, list(build.requirements), build.constraints)
        except (RuntimeError, OSError) as error:
            log.warning("SQS server %s could not be installed: %s", build.venv_name, error)
            failures.append(f"{build.venv_name}: {error}")
            continue
        if build.kind == "moto":
            log.warning("SQS server: moto's, which slows down as a backlog builds up")
        return build, venv
    raise RuntimeError("no SQS server could be installed:\n" + "\n".join(failures))


def _ready(url: str, kind: ServerKind) -> bool:
    """moto: any HTTP answer below 500. LocalStack: its health endpoint says SQS is running — the server
    answers even when a provider failed to load (it then reports `sqs: error`)."""
    try:
        with urllib.request.urlopen(url + "/_localstack/health", timeout=1) as response:
            status: int = response.status
            body = response.read()
    except urllib.error.HTTPError as error:
        return kind == "moto" and error.code < 500
    if kind == "moto":
        return status < 500
    services = json.loads(body).get("services", {})
    return isinstance(services, dict) and services.get("sqs") in ("running", "available")


@dataclass
class SqsServer:
    child: Child
    port: int
    kind: ServerKind

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, state_dir: Path, port: int | None = None) -> SqsServer:
        build, venv = ensure_server_env()
        kind = build.kind
        log.info("SQS server: %s from %s", kind, venv)
        port = port or free_port()
        python = str(venv / "bin" / "python")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        if kind == "localstack":
            root = state_dir / f"localstack-{port}"
            (root / "tmp").mkdir(parents=True, exist_ok=True)
            env.update(
                SERVICES="sqs",
                EAGER_SERVICE_LOADING="1",
                GATEWAY_LISTEN=f"127.0.0.1:{port}",
                SQS_ENDPOINT_STRATEGY="path",
                LOCALSTACK_HOST=f"127.0.0.1:{port}",
                DNS_ADDRESS="0",
                SKIP_SSL_CERT_DOWNLOAD="1",
                DISABLE_EVENTS="1",
                PERSISTENCE="0",
                OVERRIDE_IN_DOCKER="0",
                FILESYSTEM_ROOT=str(root),
                TMPDIR=str(root / "tmp"),
                LS_LOG="warn",
                SQS_DISABLE_CLOUDWATCH_METRICS="1",
            )
            argv = [python, *build.start_args]
        else:
            argv = [str(venv / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
        child = spawn(f"sqs-{kind}", argv, log_dir=state_dir, env=env)
        server = cls(child, port, kind)
        wait_until(
            lambda: _ready(server.url, kind),
            timeout=90,
            what=f"SQS server ({kind})",
            process=child.process,
            log=child.log,
        )
        return server

    def stop(self) -> None:
        self.child.stop()
