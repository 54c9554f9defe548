"""A local SQS-compatible server: LocalStack (`localstack-core`) in its own Python 3.13 venv.

LocalStack needs Python 3.13 and pins libraries of its own, so it lives in a separate venv under the
user cache (built once, reused). Where no Python 3.13 exists, moto's server is the fallback; it
slows down as a backlog builds up, so it is for functional use only.
"""

from __future__ import annotations

import fcntl
import glob
import logging
import os
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from services.devstack.processes import Child, free_port, spawn, wait_until

log = logging.getLogger(__name__)

LOCALSTACK_VERSION = "2026.3.0"
# Without these pins LocalStack 2026.3 breaks at start (cbor2 6, pyOpenSSL 26, cryptography 45).
LOCALSTACK_CONSTRAINTS = "cbor2<6\npyopenssl<25\ncryptography<45\n"
MOTO_REQUIREMENT = "moto[server]>=5.0,<6"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "payrecon"


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


def _pip_install(venv: Path, python: str, requirements: list[str], constraints: str | None) -> None:
    marker = venv / ".payrecon-ready"
    if marker.exists():
        return
    venv.parent.mkdir(parents=True, exist_ok=True)
    # Several test runs or stacks may start at once on one machine: one builds, the others wait for it.
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            _build_venv(venv, python, requirements, constraints)


def _build_venv(venv: Path, python: str, requirements: list[str], constraints: str | None) -> None:
    marker = venv / ".payrecon-ready"
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    print(f"payrecon: building SQS server environment in {venv} (once) ...", file=sys.stderr, flush=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    args = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if constraints:
        constraint_file = venv / "constraints.txt"
        constraint_file.write_text(constraints)
        args += ["-c", str(constraint_file)]
    result = subprocess.run([*args, *requirements], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"installing the SQS server failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    marker.write_text("ok\n")


def ensure_server_env() -> tuple[str, Path]:
    """('localstack' | 'moto', venv path), building the venv when missing."""
    python313 = find_python313()
    if python313:
        venv = cache_dir() / f"localstack-{LOCALSTACK_VERSION}"
        _pip_install(
            venv,
            python313,
            [f"localstack-core[base-runtime]=={LOCALSTACK_VERSION}", "service_identity"],
            LOCALSTACK_CONSTRAINTS,
        )
        return "localstack", venv
    log.warning("no Python 3.13 found: falling back to moto's SQS server (slow under a backlog)")
    venv = cache_dir() / "moto-server"
    _pip_install(venv, sys.executable, [MOTO_REQUIREMENT], None)
    return "moto", venv


def _answers(url: str) -> bool:
    # Any HTTP answer from the server's root means it is listening and serving.
    try:
        with urllib.request.urlopen(url + "/_localstack/health", timeout=1) as response:
            return bool(response.status < 500)
    except urllib.error.HTTPError as error:
        return error.code < 500


@dataclass
class SqsServer:
    child: Child
    port: int
    kind: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, state_dir: Path, port: int | None = None) -> SqsServer:
        kind, venv = ensure_server_env()
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
            argv = [python, "-m", "localstack.runtime.main"]
        else:
            argv = [str(venv / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
        child = spawn(f"sqs-{kind}", argv, log_dir=state_dir, env=env)
        server = cls(child, port, kind)
        wait_until(
            lambda: _answers(server.url), timeout=90, what=f"SQS server ({kind})", process=child.process, log=child.log
        )
        return server

    def stop(self) -> None:
        self.child.stop()
