"""The Envoy config, docker-compose.yml and Kubernetes manifests are well-formed and agree."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from services.devstack.envoy import envoy_binary, render_config

REPO = Path(__file__).resolve().parents[2]


def test_envoy_accepts_the_rendered_gateway_config(tmp_path: Path) -> None:
    config = tmp_path / "envoy.yaml"
    config.write_text(
        render_config(
            http_port=3000,
            admin_port=9901,
            ingest="127.0.0.1:50051",
            ledger="127.0.0.1:50052",
            reconciliation="127.0.0.1:50053",
        )
    )
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_every_part_with_real_images() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in (
        "postgres",
        "redis",
        "sqs",
        "envoy",
        "ingest",
        "ledger",
        "ledger-worker",
        "reconciliation",
        "otel-collector",
        "jaeger",
    ):
        assert name in services, name
    assert services["envoy"]["ports"] == ["3000:3000"]
    for name in ("ingest", "ledger", "ledger-worker", "reconciliation"):
        env = services[name]["environment"]
        assert env["PAYRECON_DATABASE_URL"].startswith("postgresql://")
        assert env["PAYRECON_SQS_ENDPOINT_URL"].startswith("http://sqs:")


def test_kubernetes_manifests_parse_and_probe_grpc_health() -> None:
    documents = [
        d for p in sorted((REPO / "deploy" / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d
    ]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    for name in ("ingest", "ledger", "ledger-worker", "reconciliation", "gateway"):
        assert ("Deployment", name) in kinds, name
    for doc in documents:
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] in ("ingest", "ledger", "reconciliation"):
            container = doc["spec"]["template"]["spec"]["containers"][0]
            assert "grpc" in container["readinessProbe"], doc["metadata"]["name"]


def test_compose_gateway_config_is_the_rendered_template() -> None:
    rendered = render_config(
        http_port=3000,
        admin_port=9901,
        ingest="ingest:50051",
        ledger="ledger:50052",
        reconciliation="reconciliation:50053",
        listen_host="0.0.0.0",
        descriptor=Path("/etc/envoy/descriptor.pb"),
    )
    committed = (REPO / "deploy" / "envoy" / "envoy-compose.yaml").read_text()
    assert committed.split("\n", 1)[1] == rendered, "re-render deploy/envoy/envoy-compose.yaml"
