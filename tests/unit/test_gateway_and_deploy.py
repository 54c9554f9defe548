"""The Envoy config, docker-compose.yml and Kubernetes manifests are well-formed and agree."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.devstack.envoy import COMPOSE_OTLP_ENDPOINT, envoy_binary, render_config
from tests.unit.manifests import OVERLAYS, find, one, render

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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_manifests_parse_and_probe_grpc_health(overlay: str) -> None:
    documents = render(overlay)
    for name in ("ingest", "ledger", "ledger-worker", "reconciliation", "gateway"):
        assert find(documents, "Deployment", name), name
    for name in ("ingest", "ledger", "ledger-worker", "reconciliation"):
        container = one(documents, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        assert "grpc" in container["readinessProbe"], name


def test_compose_gateway_config_is_the_rendered_template() -> None:
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
    committed = (REPO / "deploy" / "envoy" / "envoy-compose.yaml").read_text()
    assert committed.split("\n", 1)[1] == rendered, "re-render deploy/envoy/envoy-compose.yaml"


def test_the_gateway_exports_spans_where_the_services_do() -> None:
    """docker-compose and Kubernetes give the services PAYRECON_OTLP_ENDPOINT; the gateway they run
    (the compose rendering) traces every request and sends its spans to that same collector."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    config = one(render("prod"), "ConfigMap", "payrecon-env")
    for name in ("ingest", "ledger", "ledger-worker", "reconciliation"):
        assert compose["services"][name]["environment"]["PAYRECON_OTLP_ENDPOINT"] == COMPOSE_OTLP_ENDPOINT, name
    assert config["data"]["PAYRECON_OTLP_ENDPOINT"] == COMPOSE_OTLP_ENDPOINT
    gateway = yaml.safe_load((REPO / "deploy" / "envoy" / "envoy-compose.yaml").read_text())
    (listener,) = gateway["static_resources"]["listeners"]
    tracing = listener["filter_chains"][0]["filters"][0]["typed_config"]["tracing"]
    assert tracing["provider"]["name"] == "envoy.tracers.opentelemetry"
    assert tracing["provider"]["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] == "otlp"
    assert _endpoints(_cluster(gateway, "otlp")) == ["otel-collector:4317"]


def test_without_an_otlp_endpoint_the_gateway_has_no_tracer() -> None:
    config = yaml.safe_load(
        render_config(
            http_port=3000,
            admin_port=9901,
            ingest="127.0.0.1:50051",
            ledger="127.0.0.1:50052",
            reconciliation="127.0.0.1:50053",
        )
    )
    (listener,) = config["static_resources"]["listeners"]
    assert "provider" not in listener["filter_chains"][0]["filters"][0]["typed_config"]["tracing"]
    assert "otlp" not in {c["name"] for c in config["static_resources"]["clusters"]}


def _annotated_and_internal_grpc_paths() -> tuple[set[str], set[str]]:
    from google.api import annotations_pb2
    from payrecon.ingest.v1 import ingest_pb2
    from payrecon.ledger.v1 import ledger_pb2
    from payrecon.reconciliation.v1 import reconciliation_pb2

    annotated, internal = set(), set()
    for module in (ingest_pb2, ledger_pb2, reconciliation_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                rule = method.GetOptions().Extensions[annotations_pb2.http]
                (annotated if rule.ListFields() else internal).add(path)
    return annotated, internal


def test_the_gateway_routes_exactly_the_annotated_rpcs() -> None:
    """One exact gRPC route per google.api.http-annotated RPC; nothing else reaches a service."""
    config = yaml.safe_load(
        render_config(
            http_port=3000,
            admin_port=9901,
            ingest="127.0.0.1:50051",
            ledger="127.0.0.1:50052",
            reconciliation="127.0.0.1:50053",
        )
    )
    (listener,) = config["static_resources"]["listeners"]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (host,) = manager["route_config"]["virtual_hosts"]
    routed: dict[str, str] = {}
    *service_routes, fallback = host["routes"]
    for route in service_routes:
        assert set(route["match"]) == {"path", "grpc"}, f"not an exact gRPC route: {route['match']}"
        routed[route["match"]["path"]] = route["route"]["cluster"]
    assert fallback["match"] == {"prefix": "/"}
    assert fallback["direct_response"]["status"] == 404
    annotated, internal = _annotated_and_internal_grpc_paths()
    assert internal, "expected at least one internal RPC (LedgerService.PostTransfers)"
    assert set(routed) == annotated
    assert not set(routed) & internal
    for path, cluster in routed.items():
        assert path.startswith(f"/payrecon.{cluster}.v1."), (path, cluster)
    (transcoder,) = [f for f in manager["http_filters"] if f["name"].endswith("grpc_json_transcoder")]
    assert not transcoder["typed_config"].get("auto_mapping"), "auto_mapping would give internal RPCs a REST form"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_gateway_serves_the_compose_rendering(overlay: str) -> None:
    """The gateway pods mount the payrecon-gateway ConfigMap (deploy/envoy/envoy-compose.yaml) and the
    payrecon-gateway-descriptor one (gateway/descriptor.pb) together at /etc/envoy; its Services must be
    the upstreams that rendering names."""
    documents = render(overlay)
    pod = one(documents, "Deployment", "gateway")["spec"]["template"]["spec"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/etc/envoy"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    sources = [source["configMap"]["name"] for source in volume["projected"]["sources"]]
    config, descriptor = (next(d for d in documents if d["metadata"]["name"] == name) for name in sources)
    assert config["data"]["envoy.yaml"] == (REPO / "deploy" / "envoy" / "envoy-compose.yaml").read_text()
    assert (
        base64.b64decode(descriptor["binaryData"]["descriptor.pb"]) == (REPO / "gateway" / "descriptor.pb").read_bytes()
    )
    rendering = yaml.safe_load(config["data"]["envoy.yaml"])
    assert "/etc/envoy/descriptor.pb" in yaml.safe_dump(rendering)
    services = {d["metadata"]["name"]: d["spec"]["ports"][0]["port"] for d in find(documents, "Service")}
    for cluster in rendering["static_resources"]["clusters"]:
        address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        upstream = address["socket_address"]
        assert services.get(upstream["address"]) == upstream["port_value"], cluster["name"]


def _cluster(config: dict[str, Any], name: str) -> dict[str, Any]:
    (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == name]
    return cluster


def _endpoints(cluster: dict[str, Any]) -> list[str]:
    return [
        f"{e['endpoint']['address']['socket_address']['address']}:{e['endpoint']['address']['socket_address']['port_value']}"
        for group in cluster["load_assignment"]["endpoints"]
        for e in group["lb_endpoints"]
    ]


def test_every_ingest_process_is_an_endpoint_of_the_gateway_cluster(tmp_path: Path) -> None:
    """INGEST_PROCESSES in the local stack: one endpoint per process, requests balanced over them."""
    processes = ["127.0.0.1:50051", "127.0.0.1:50061", "127.0.0.1:50071"]
    rendered = render_config(
        http_port=3000, admin_port=9901, ingest=processes, ledger="127.0.0.1:50052", reconciliation="127.0.0.1:50053"
    )
    config = yaml.safe_load(rendered)
    ingest = _cluster(config, "ingest")
    assert _endpoints(ingest) == processes
    assert ingest["lb_policy"] == "LEAST_REQUEST"
    assert _endpoints(_cluster(config, "ledger")) == ["127.0.0.1:50052"]
    (host,) = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"
    ]["virtual_hosts"]
    # Retried elsewhere: failures that prove the request never reached a service, and a call the
    # server cancelled — what gRPC answers to the calls it had received but not started when it
    # begins to drain (tests/e2e/test_sigterm_drain.py saw them as 499s); every write is
    # idempotent by its key, so a retry of one cut short answers the original outcome.
    assert host["retry_policy"]["retry_on"] == "connect-failure,refused-stream,cancelled"
    file = tmp_path / "envoy.yaml"
    file.write_text(rendered)
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(file)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_ingest_processes_as_replicas_the_gateway_resolves() -> None:
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    assert services["ingest"]["deploy"]["replicas"] == "${INGEST_PROCESSES:-2}"
    assert "ports" not in services["ingest"] and "container_name" not in services["ingest"]  # replicas share none
    gateway = yaml.safe_load((REPO / "deploy" / "envoy" / "envoy-compose.yaml").read_text())
    ingest = _cluster(gateway, "ingest")
    # STRICT_DNS keeps every address the name resolves to: one endpoint per replica.
    assert ingest["type"] == "STRICT_DNS" and _endpoints(ingest) == ["ingest:50051"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_ingest_pods_are_each_an_endpoint_of_the_gateway(overlay: str) -> None:
    documents = render(overlay)
    service = one(documents, "Service", "ingest")
    assert service["spec"]["clusterIP"] == "None"  # headless: the name resolves to every ready pod
    config = one(documents, "ConfigMap", "payrecon-env")
    assert config["data"]["PAYRECON_INGEST_ADDRESS"] == "ingest:50051"  # what clients (reconciliation) dial
    (container,) = one(documents, "Deployment", "ingest")["spec"]["template"]["spec"]["containers"]
    assert {"name": "PAYRECON_INGEST_ADDRESS", "value": "0.0.0.0:50051"} in container["env"]  # what pods listen on
