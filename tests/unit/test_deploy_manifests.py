"""docker-compose.yml and deploy/ checked without a Docker engine: the compose-spec schema, pinned
images, every payrecon container's environment against the code's configuration, ports, dependency
order, health checks, the Prometheus and Grafana wiring."""

from __future__ import annotations

import ast
import base64
import json
import re
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from services.kernel.config import CommonSettings, Env
from services.kernel.config import port_of as kernel_port_of
from tests.unit.manifests import OVERLAYS, find, one, render

REPO = Path(__file__).resolve().parents[2]
CONFIG_PREFIXES = ("PAYRECON_", "INGEST_", "LEDGER_", "RECON_")
METRICS_PORT = 9464


# --- what the code reads -------------------------------------------------------------------------


@cache
def variables_read_by_the_code() -> dict[str, bool]:
    """Every PAYRECON_/INGEST_/LEDGER_/RECON_ variable services/ reads -> whether it is required (read
    with Env.text and no default). Found in the source: Env's text/optional/integer/flag calls and
    os.environ / os.getenv look-ups with a literal name."""
    found: dict[str, bool] = {}
    for path in (REPO / "services").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            name, required = _variable_read_by(node)
            if name and name.startswith(CONFIG_PREFIXES):
                found[name] = found.get(name, False) or required
    return found


def _variable_read_by(node: ast.AST) -> tuple[str | None, bool]:
    if isinstance(node, ast.Subscript) and _is_environ(node.value):
        return _literal(node.slice), True
    if not (isinstance(node, ast.Call) and node.args):
        return None, False
    name = _literal(node.args[0])
    func = node.func
    if isinstance(func, ast.Attribute):
        if func.attr in {"text", "optional", "integer", "flag"}:
            required = func.attr == "text" and len(node.args) == 1 and not node.keywords
            return name, required
        if func.attr == "get" and _is_environ(func.value):
            return name, False
        if func.attr == "getenv":
            return name, False
    return None, False


def _is_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def _literal(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def test_the_scanner_finds_the_configuration_the_code_reads() -> None:
    read = variables_read_by_the_code()
    assert read["PAYRECON_DATABASE_URL"] is True  # Env.text without a default: required
    assert read["PAYRECON_REDIS_URL"] is False
    assert {"INGEST_IDEMPOTENCY_TTL_SECONDS", "LEDGER_WORKER_RECEIVERS", "RECON_LEDGER_TOKEN"} <= set(read)
    assert "LEDGER_INSUFFICIENT_FUNDS" not in read  # an error code, not configuration


# --- docker-compose.yml --------------------------------------------------------------------------

_TEMPLATE = re.compile(r"\$(?:(?P<escaped>\$)|(?P<named>[_a-zA-Z][_a-zA-Z0-9]*)|\{(?P<braced>[^}]*)\}|(?P<invalid>))")
_BRACED = re.compile(r"^(?P<name>[_a-zA-Z][_a-zA-Z0-9]*)(?:(?P<op>:-|-|:\?|\?)(?P<arg>.*))?$", re.DOTALL)


def interpolate(value: Any, environ: Mapping[str, str]) -> Any:
    """Compose's variable interpolation, as `docker compose config` applies it before validating:
    `$$` is a literal `$`; `$NAME`, `${NAME}`, `${NAME:-default}`, `${NAME-default}`; anything else
    after a `$` is an error (so is a required `${NAME:?message}` that is unset)."""
    if isinstance(value, dict):
        return {key: interpolate(item, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, environ) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return environ.get(match["named"], "")
        braced = _BRACED.match(match["braced"] or "") if match["braced"] is not None else None
        if braced is None:
            raise ValueError(f"invalid interpolation in {value!r}")
        name, op, arg = braced["name"], braced["op"], braced["arg"]
        current = environ.get(name)
        if (op in (":-", ":?") and not current) or (op in ("-", "?") and current is None):
            if op.endswith("?"):
                raise ValueError(f"{name} is required: {arg}")
            return arg or ""
        return current or ""

    return _TEMPLATE.sub(substitute, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    raw = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    # What Compose sees with no variables set: every ${NAME:-default} at its default.
    return {key: value for key, value in interpolate(raw, {}).items() if not key.startswith("x-")}


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def compose_schema() -> dict[str, Any]:
    """The compose-spec JSON schema as vendored (with its licence) by check-jsonschema."""
    text = (resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def test_compose_file_matches_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)


def test_the_schema_check_catches_a_misspelt_key(compose: dict[str, Any]) -> None:
    """The schema is strict about keys: the check above would see a typo."""
    schema = compose_schema()
    broken = {
        **compose,
        "services": {**compose["services"], "redis": {**compose["services"]["redis"], "helthcheck": {}}},
    }
    assert list(jsonschema.validators.validator_for(schema)(schema).iter_errors(broken))


def test_interpolation_rejects_a_bare_dollar() -> None:
    with pytest.raises(ValueError):
        interpolate("for i in $(seq 3); do :; done", {})
    assert interpolate("$$(seq 3) ${A:-2} ${B-x} $C", {"B": "", "C": "c"}) == "$(seq 3) 2  c"


# Exact versions: major.minor.patch (an optional leading v, an optional -suffix such as -alpine or
# -bookworm), or a digest. PostgreSQL numbers its releases major.minor since 10: 17.6 is one release.
_EXACT_TAG = re.compile(r"^v?\d+\.\d+\.\d+(?:-[a-z0-9.]+)?$")
_TWO_PART_RELEASES = {"postgres": re.compile(r"^\d{2,}\.\d+(?:-[a-z0-9.]+)?$")}


def is_pinned(image: str) -> bool:
    if re.search(r"@sha256:[0-9a-f]{64}$", image):
        return True
    name, _, tag = image.rpartition(":")
    exact = _TWO_PART_RELEASES.get(name, _EXACT_TAG)
    return bool(name) and "/" not in tag and bool(exact.match(tag))


def test_every_image_is_pinned_to_an_exact_version(services: dict[str, dict[str, Any]]) -> None:
    assert not is_pinned("envoyproxy/envoy:v1.36-latest") and not is_pinned("redis:7-alpine")
    assert not is_pinned("postgres:17") and not is_pinned("grafana/grafana") and not is_pinned("redis:7.4")
    unpinned = {name: s["image"] for name, s in services.items() if not is_pinned(s["image"])}
    assert not unpinned, unpinned


def test_the_payrecon_image_runs_as_a_fixed_non_root_user_on_a_pinned_base() -> None:
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", base), base
    assert re.findall(r"^FROM (\S+)", dockerfile, re.M) == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    (uid,) = re.findall(r"^ARG UID=(\d+)$", dockerfile, re.M)
    assert int(uid) >= 10000
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert users == ["${UID}:${UID}"]  # numeric: Kubernetes' runAsNonRoot can verify it
    assert k8s_run_as_user() == int(uid)


def payrecon_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if s["image"].startswith("payrecon:")}


def long_running(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Services that stay up: everything but the one-shot steps others wait for."""
    one_shots = {
        dependency
        for s in services.values()
        for dependency, how in (s.get("depends_on") or {}).items()
        if how["condition"] == "service_completed_successfully"
    }
    return {name: s for name, s in services.items() if name not in one_shots}


def _payrecon_command(service: dict[str, Any]) -> list[str]:
    """The payrecon subcommand a container runs, also through `sh -c "... payrecon X ..."`."""
    if service.get("entrypoint"):
        (script,) = service["command"]
        (words,) = re.findall(r"payrecon ([a-z-]+(?: [a-z-]+)?)", script)
        return str(words).split()
    return list(service["command"])


def settings_loader(command: list[str]) -> Callable[[Env], object]:
    """The settings the code loads at the start of `payrecon <command>`."""
    from services.ingest.config import IngestSettings
    from services.ledger.config import LedgerSettings
    from services.reconciliation.config import ReconciliationSettings

    loaders: dict[tuple[str, ...], Callable[[Env], object]] = {
        ("serve", "ingest"): IngestSettings.from_env,
        ("serve", "ledger"): LedgerSettings.from_env,
        ("serve", "reconciliation"): ReconciliationSettings.from_env,
        ("worker",): LedgerSettings.from_env,
        ("migrate",): CommonSettings.from_env,
        ("create-queues",): LedgerSettings.from_env,  # the ledger's settings name every queue
    }
    return loaders[tuple(command[:2]) if command[0] == "serve" else (command[0],)]


def test_every_payrecon_variable_in_compose_is_one_the_code_reads(services: dict[str, dict[str, Any]]) -> None:
    read = variables_read_by_the_code()
    for name, service in payrecon_services(services).items():
        unknown = {v for v in service["environment"] if v.startswith(CONFIG_PREFIXES) and v not in read}
        assert not unknown, f"{name} sets variables no code reads: {sorted(unknown)}"


def test_every_payrecon_container_loads_its_configuration(services: dict[str, dict[str, Any]]) -> None:
    """The code's own settings classes accept each container's environment: every required variable
    is set and every value is well-formed (addresses, integers, currencies, tokens)."""
    required = {name for name, needed in variables_read_by_the_code().items() if needed}
    for name, service in payrecon_services(services).items():
        env = {key: str(value) for key, value in service["environment"].items()}
        assert required <= set(env), f"{name} lacks {sorted(required - set(env))}"
        settings_loader(_payrecon_command(service))(Env(env))


def test_the_listen_and_dial_addresses_agree(services: dict[str, dict[str, Any]]) -> None:
    """Each server listens on 0.0.0.0 at the port its clients dial by the service's name."""
    client_view = services["ledger-worker"]["environment"]  # the worker overrides no server's address
    for service, variable in (
        ("ingest", "PAYRECON_INGEST_ADDRESS"),
        ("ledger", "PAYRECON_LEDGER_ADDRESS"),
        ("reconciliation", "PAYRECON_RECONCILIATION_ADDRESS"),
    ):
        dialled = client_view[variable]
        assert dialled == f"{service}:{kernel_port_of(dialled)}", (service, dialled)
        listen = services[service]["environment"][variable]
        assert listen == f"0.0.0.0:{kernel_port_of(dialled)}", (service, listen)


def test_long_running_payrecon_processes_serve_metrics_prometheus_scrapes(
    services: dict[str, dict[str, Any]],
) -> None:
    scrape = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets: set[str] = set()
    for job in scrape["scrape_configs"]:
        for static in job.get("static_configs", []):
            targets |= set(static["targets"])
        for dns in job.get("dns_sd_configs", []):
            targets |= {f"{name}:{dns['port']}" for name in dns["names"]}
    for name, service in payrecon_services(long_running(services)).items():
        assert service["environment"]["PAYRECON_METRICS_ADDRESS"] == f"0.0.0.0:{METRICS_PORT}", name
        assert f"{name}:{METRICS_PORT}" in targets, name
    collector = yaml.safe_load((REPO / "deploy" / "otel-collector.yaml").read_text())
    exporter = collector["exporters"]["prometheus"]["endpoint"]
    assert "prometheus" in collector["service"]["pipelines"]["metrics"]["exporters"]
    assert f"otel-collector:{kernel_port_of(exporter)}" in targets


def test_host_ports_are_unique(services: dict[str, dict[str, Any]]) -> None:
    published = [
        str(port).rsplit(":", 1)[0].rsplit(":", 1)[-1] for s in services.values() for port in s.get("ports", [])
    ]
    assert len(published) == len(set(published)), published
    assert {"3000", "16686", "9090", "3001"} <= set(published)


def test_dependencies_name_services_and_order_the_start(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dependency, how in (service.get("depends_on") or {}).items():
            assert dependency in services, (name, dependency)
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], (name, dependency)
    # Migrations and queues before every payrecon process that serves or consumes.
    for name, service in payrecon_services(long_running(services)).items():
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
        assert service["depends_on"]["create-queues"]["condition"] == "service_completed_successfully", name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "sqs" in services["create-queues"]["depends_on"]
    for upstream in ("ingest", "ledger", "reconciliation"):
        assert services["envoy"]["depends_on"][upstream]["condition"] == "service_healthy"
    _assert_acyclic({name: set(s.get("depends_on") or {}) for name, s in services.items()})


def _assert_acyclic(graph: dict[str, set[str]]) -> None:
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"dependency cycle: {' -> '.join((*path, node))}"
        if node not in done:
            for after in graph[node]:
                visit(after, (*path, node))
            done.add(node)

    for node in graph:
        visit(node, ())


# Images with no shell or client to run a check with; what stands in for it is said in the compose file.
NO_HEALTH_CHECK_POSSIBLE = {"sqs", "otel-collector"}


def test_long_running_services_have_health_checks(services: dict[str, dict[str, Any]]) -> None:
    missing = {name for name, s in long_running(services).items() if "healthcheck" not in s}
    assert missing == NO_HEALTH_CHECK_POSSIBLE


def grpc_health_names() -> dict[str, str]:
    from services.ingest.api.errors import SERVICE_NAME as INGEST
    from services.ledger.api.errors import SERVICE_NAME as LEDGER
    from services.reconciliation.api.errors import SERVICE_NAME as RECONCILIATION

    return {
        "ingest": INGEST,
        "ledger": LEDGER,
        "reconciliation": RECONCILIATION,
        "ledger-worker": "payrecon.ledger.v1.LedgerWorker",  # the lead's convention for the worker
    }


def test_payrecon_health_checks_ask_each_process_for_its_service(services: dict[str, dict[str, Any]]) -> None:
    from services.cli import main

    listen_variable = {
        "ingest": "PAYRECON_INGEST_ADDRESS",
        "ledger": "PAYRECON_LEDGER_ADDRESS",
        "reconciliation": "PAYRECON_RECONCILIATION_ADDRESS",
        "ledger-worker": "LEDGER_WORKER_ADDRESS",
    }
    for name, service in payrecon_services(long_running(services)).items():
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "payrecon", "health"], name
        address, flag, asked = test[3:]
        port = kernel_port_of(service["environment"][listen_variable[name]])
        assert (address, flag, asked) == (f"127.0.0.1:{port}", "--service", grpc_health_names()[name]), name
        with pytest.raises(SystemExit) as parsed:  # the CLI accepts the arguments (--help after them exits 0)
            main([*test[2:], "--help"])
        assert parsed.value.code == 0


# --- Grafana -------------------------------------------------------------------------------------


def _mount_source(service: dict[str, Any], target: str) -> str:
    for volume in service["volumes"]:
        source, mounted, *_ = volume.split(":")
        if mounted == target:
            return str(source)
    raise AssertionError(f"nothing mounted at {target}")


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard(
    services: dict[str, dict[str, Any]],
) -> None:
    grafana = services["grafana"]
    provisioning = REPO / _mount_source(grafana, "/etc/grafana/provisioning")
    assert provisioning == REPO / "deploy" / "grafana" / "provisioning"
    datasources = [
        d for f in (provisioning / "datasources").glob("*.yaml") for d in yaml.safe_load(f.read_text())["datasources"]
    ]
    (prometheus,) = [d for d in datasources if d["uid"] == "prometheus"]
    assert prometheus["type"] == "prometheus"
    assert prometheus["url"] == "http://prometheus:9090" and "prometheus" in services
    providers = [
        p for f in (provisioning / "dashboards").glob("*.yaml") for p in yaml.safe_load(f.read_text())["providers"]
    ]
    (provider,) = providers
    dashboards = REPO / _mount_source(grafana, provider["options"]["path"])
    assert dashboards == REPO / "deploy" / "grafana" / "dashboards"


def test_the_dashboard_uses_the_provisioned_datasource() -> None:
    dashboard = REPO / "deploy" / "grafana" / "dashboards" / "payrecon.json"
    if not dashboard.exists():
        pytest.skip("deploy/grafana/dashboards/payrecon.json is written on the metrics branch")
    uids = {d["uid"] for d in _datasource_refs(json.loads(dashboard.read_text())) if isinstance(d, dict) and "uid" in d}
    assert uids <= {"prometheus", "${datasource}", "${DS_PROMETHEUS}", "-- Grafana --"}, uids


def _datasource_refs(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            else:
                yield from _datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _datasource_refs(item)


# --- deploy/k8s: kustomize base + overlays ------------------------------------------------------

# Kubernetes releases the rendered manifests are validated against: the oldest with everything they
# use (native gRPC probes GA in 1.27, matchLabelKeys in topology spread, autoscaling/v2) still served,
# and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.30.0", "1.37.0")
CRD_KINDS = {"ScaledObject", "TriggerAuthentication"}
# What the operator puts in the Secret `payrecon-config` in production (the base only references it).
PROD_SECRET_KEYS = (
    "PAYRECON_DATABASE_URL",
    "PAYRECON_REDIS_URL",
    "PAYRECON_API_TOKENS",
    "RECON_LEDGER_TOKEN",
    "INGEST_LEDGER_TOKEN",
)
PAYRECON_DEPLOYMENTS = {
    "ingest": "ingest",
    "ledger": "ledger",
    "ledger-worker": "worker",
    "reconciliation": "reconciliation",
}
LISTEN_VARIABLE = {
    "ingest": "PAYRECON_INGEST_ADDRESS",
    "ledger": "PAYRECON_LEDGER_ADDRESS",
    "reconciliation": "PAYRECON_RECONCILIATION_ADDRESS",
    "ledger-worker": "LEDGER_WORKER_ADDRESS",
}


def k8s_run_as_user() -> int:
    """The UID deploy/k8s runs the payrecon pods as (every pod's the same: checked below)."""
    deployment = next(yaml.safe_load_all((REPO / "deploy" / "k8s" / "base" / "ingest.yaml").read_text()))
    return int(deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"])


Documents = tuple[dict[str, Any], ...]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def rendered(overlay: str) -> Documents:
    return render(overlay)


def test_every_built_in_resource_matches_the_kubernetes_schemas(rendered: Documents) -> None:
    """Strict: an unknown or misplaced field fails too, as `kubectl apply` refuses it."""
    import kubernetes_validate

    kinds = set()
    for document in rendered:
        if document["kind"] in CRD_KINDS:
            continue
        kinds.add(document["kind"])
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                raise AssertionError(
                    f"{document['kind']}/{document['metadata']['name']} on {version}: {error}"
                ) from None
    assert {"Deployment", "Service", "ConfigMap", "Job", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds


def test_the_schema_check_catches_a_misplaced_field(rendered: Documents) -> None:
    import kubernetes_validate

    deployment = one(rendered, "Deployment", "ingest")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


def validate_crd(document: dict[str, Any]) -> None:
    """KEDA's resources against models generated from KEDA's CRD schemas (cloudcoil-models-keda): the
    types must parse, and nothing may be dropped on the way (an unknown field would be)."""
    from cloudcoil.models.keda import v1alpha1 as keda

    assert document["apiVersion"] == "keda.sh/v1alpha1"
    model = getattr(keda, document["kind"]).model_validate(document)
    parsed = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    assert parsed == document, f"{document['kind']} fields the CRD does not know or types it coerced"


def test_keda_resources_match_their_crd_schemas(rendered: Documents, overlay: str) -> None:
    crds = [d for d in rendered if d["kind"] in CRD_KINDS]
    assert bool(crds) == (overlay == "prod")  # dev clusters run without KEDA
    for document in crds:
        validate_crd(document)
    if crds:
        scaled = one(rendered, "ScaledObject", "ledger-worker")
        with pytest.raises(AssertionError):
            validate_crd({**scaled, "spec": {**scaled["spec"], "pollingInteral": 5}})


def pod_specs(rendered: Documents) -> dict[str, dict[str, Any]]:
    return {
        f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["spec"]
        for d in rendered
        if d["kind"] in ("Deployment", "Job")
    }


def test_every_container_has_requests_limits_and_a_locked_down_security_context(rendered: Documents) -> None:
    for name, pod in pod_specs(rendered).items():
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] > 0, name
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        if "envoy" not in {c["name"] for c in pod["containers"]}:
            assert security["runAsUser"] == k8s_run_as_user(), name  # the image's own UID (deploy/Dockerfile)
            # The identity an operator binds to the IAM role for SQS.
            assert find(rendered, "ServiceAccount", pod["serviceAccountName"]), name
        tmp_volumes = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            where = f"{name} {container['name']}"
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert set(resources[bound]) == {"cpu", "memory"}, where
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp["name"] in tmp_volumes, where


def _container(rendered: Documents, deployment: str) -> dict[str, Any]:
    containers = one(rendered, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    (container,) = [c for c in containers if c["name"] == PAYRECON_DEPLOYMENTS[deployment]]
    return container


def test_payrecon_pods_probe_grpc_health_natively(rendered: Documents) -> None:
    """Startup and liveness ask the server as a whole (""); readiness asks the service's own name,
    which goes NOT_SERVING while a dependency is down or the pod drains."""
    for deployment in PAYRECON_DEPLOYMENTS:
        container = _container(rendered, deployment)
        listen = {e["name"]: e["value"] for e in container["env"]}[LISTEN_VARIABLE[deployment]]
        port = kernel_port_of(listen)
        assert listen == f"0.0.0.0:{port}", deployment
        assert {"containerPort": port, "name": "grpc"} in container["ports"], deployment
        for probe, service in (
            ("startupProbe", ""),
            ("livenessProbe", ""),
            ("readinessProbe", grpc_health_names()[deployment]),
        ):
            assert container[probe]["grpc"] == {"port": port, "service": service}, (deployment, probe)


def test_payrecon_pods_wait_for_the_migrations_job(rendered: Documents) -> None:
    from services.cli import main

    for deployment in PAYRECON_DEPLOYMENTS:
        pod = one(rendered, "Deployment", deployment)["spec"]["template"]["spec"]
        (wait,) = pod["initContainers"]
        assert wait["args"][:2] == ["migrate", "--wait"] and float(wait["args"][2]) >= 60, deployment
        assert wait["image"] == _container(rendered, deployment)["image"], deployment  # the same migrations
    (job,) = find(rendered, "Job")
    pod = job["spec"]["template"]["spec"]
    # Queues first, then the migrations the pods wait for: queues exist once any pod starts.
    assert [c["args"] for c in pod["initContainers"]] == [["create-queues"]]
    assert [c["args"] for c in pod["containers"]] == [["migrate"]]
    assert pod["restartPolicy"] == "OnFailure"
    for args in (wait["args"], ["create-queues"], ["migrate"]):
        with pytest.raises(SystemExit) as parsed:
            main([*args, "--help"])
        assert parsed.value.code == 0


def pod_environment(rendered: Documents, overlay: str, container: dict[str, Any]) -> dict[str, str]:
    """What a container's process sees: its envFrom ConfigMap and Secret, then its own env."""
    env: dict[str, str] = {}
    for source in container["envFrom"]:
        if "configMapRef" in source:
            (config,) = [
                d for d in find(rendered, "ConfigMap") if d["metadata"]["name"] == source["configMapRef"]["name"]
            ]
            env.update(config["data"])
        else:
            secrets = [d for d in find(rendered, "Secret") if d["metadata"]["name"] == source["secretRef"]["name"]]
            if overlay == "prod":
                assert not secrets, "production secrets are never committed"
                env.update({key: _placeholder(key) for key in PROD_SECRET_KEYS})
            else:
                (secret,) = secrets
                env.update({k: base64.b64decode(v).decode() for k, v in secret["data"].items()})
    env.update({e["name"]: e["value"] for e in container.get("env", [])})
    return env


def _placeholder(key: str) -> str:
    from services.kernel.config import hash_token

    return {
        "PAYRECON_DATABASE_URL": "postgresql://payrecon:secret@db.example:5432/payrecon",
        "PAYRECON_REDIS_URL": "rediss://cache.example:6379/0",
        "PAYRECON_API_TOKENS": (
            f"client:{hash_token('t')}:*;reconciliation:{hash_token('r')}:ledger:internal;"
            f"ingest:{hash_token('i')}:ledger:internal"
        ),
        "RECON_LEDGER_TOKEN": "r",
        "INGEST_LEDGER_TOKEN": "i",
    }[key]


def test_every_payrecon_container_loads_its_configuration_in_kubernetes(rendered: Documents, overlay: str) -> None:
    """ConfigMap + Secret (dev: the generated one; prod: the keys the operator must set) + the
    container's env make a configuration the code accepts, and name nothing the code does not read."""
    read = variables_read_by_the_code()
    for name, pod in pod_specs(rendered).items():
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            if "envFrom" not in container:
                continue
            env = pod_environment(rendered, overlay, container)
            unknown = {v for v in env if v.startswith(CONFIG_PREFIXES) and v not in read}
            assert not unknown, f"{name} {container['name']} sets variables no code reads: {sorted(unknown)}"
            settings_loader(container["args"])(Env(env))


def test_spans_go_to_the_collector_alias_the_gateway_uses_too(rendered: Documents) -> None:
    endpoint = one(rendered, "ConfigMap", "payrecon-env")["data"]["PAYRECON_OTLP_ENDPOINT"]
    host, port = endpoint.removeprefix("http://").rsplit(":", 1)
    alias = one(rendered, "Service", host)
    assert alias["spec"]["type"] == "ExternalName"
    assert [p["port"] for p in alias["spec"]["ports"]] == [int(port)]


def test_metrics_are_scraped_from_every_payrecon_pod(rendered: Documents) -> None:
    config = one(rendered, "ConfigMap", "payrecon-env")["data"]
    assert config["PAYRECON_METRICS_ADDRESS"] == f"0.0.0.0:{METRICS_PORT}"
    for deployment in PAYRECON_DEPLOYMENTS:
        template = one(rendered, "Deployment", deployment)["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", deployment
        assert annotations["prometheus.io/port"] == str(METRICS_PORT), deployment
        assert {"containerPort": METRICS_PORT, "name": "metrics"} in _container(rendered, deployment)["ports"]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_services_autoscalers_and_budgets_point_at_real_pods(rendered: Documents, overlay: str) -> None:
    deployments = {d["metadata"]["name"]: d for d in find(rendered, "Deployment")}
    labels = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()}
    for service in find(rendered, "Service"):
        if service["spec"].get("type") == "ExternalName":
            continue  # an alias of something outside (the collector): no pods of ours
        (target,) = [n for n, pod in labels.items() if _selects(service["spec"]["selector"], pod)]
        names = {p["name"] for c in deployments[target]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names, (service["metadata"]["name"], port)
    budgets = {
        next(n for n, pod in labels.items() if _selects(b["spec"]["selector"]["matchLabels"], pod))
        for b in find(rendered, "PodDisruptionBudget")
    }
    assert budgets == set(deployments)
    scaled = {h["spec"]["scaleTargetRef"]["name"] for h in find(rendered, "HorizontalPodAutoscaler")}
    assert scaled == {"ingest", "ledger", "reconciliation"}
    for name in scaled:
        assert "replicas" not in deployments[name]["spec"], f"{name}: the autoscaler owns its replicas"
    if overlay == "prod":
        assert "replicas" not in deployments["ledger-worker"]["spec"], "KEDA owns the worker's replicas"


def test_clients_dial_services_that_reach_the_listening_port(rendered: Documents) -> None:
    config = one(rendered, "ConfigMap", "payrecon-env")["data"]
    for deployment in ("ingest", "ledger", "reconciliation"):
        dialled = config[LISTEN_VARIABLE[deployment]]
        service = one(rendered, "Service", dialled.rsplit(":", 1)[0])
        (port,) = [p for p in service["spec"]["ports"] if p["port"] == kernel_port_of(dialled)]
        container = _container(rendered, deployment)
        (target,) = [p["containerPort"] for p in container["ports"] if p["name"] == port["targetPort"]]
        listen = {e["name"]: e["value"] for e in container["env"]}[LISTEN_VARIABLE[deployment]]
        assert listen == f"0.0.0.0:{target}", deployment


def test_the_worker_scales_on_the_transfers_queue_it_consumes(rendered: Documents, overlay: str) -> None:
    if overlay == "dev":
        assert not find(rendered, "ScaledObject")
        return
    config = one(rendered, "ConfigMap", "payrecon-env")["data"]
    scaled = one(rendered, "ScaledObject", "ledger-worker")
    assert scaled["spec"]["scaleTargetRef"] == {"name": "ledger-worker"}
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "aws-sqs-queue"
    assert trigger["metadata"]["queueURL"].endswith("/" + config["PAYRECON_TRANSFERS_QUEUE"])
    assert trigger["metadata"]["awsRegion"] == config["PAYRECON_AWS_REGION"]
    authentication = one(rendered, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert authentication["spec"]["podIdentity"]["provider"] == "aws"
    assert scaled["spec"]["maxReplicaCount"] <= 16  # PAYRECON_MESSAGE_GROUPS: more receivers add nothing


def test_dev_runs_one_replica_of_everything_with_a_generated_secret(overlay: str, rendered: Documents) -> None:
    if overlay != "dev":
        pytest.skip("dev overlay only")
    for hpa in find(rendered, "HorizontalPodAutoscaler"):
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 1)
    assert one(rendered, "Deployment", "gateway")["spec"]["replicas"] == 1
    assert one(rendered, "ConfigMap", "payrecon-env")["data"]["PAYRECON_ENV"] == "development"
    assert find(rendered, "Secret", "payrecon-config")


def test_prod_pins_its_images_and_spreads_its_pods(overlay: str, rendered: Documents) -> None:
    if overlay != "prod":
        pytest.skip("prod overlay only")
    assert one(rendered, "ConfigMap", "payrecon-env")["data"]["PAYRECON_ENV"] == "production"
    images = set()
    for name, pod in pod_specs(rendered).items():
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            images.add(container["image"])
            assert is_pinned(container["image"]), (name, container["image"])
        if name.startswith("Deployment/"):
            keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
            assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, name
    (payrecon,) = [i for i in images if "envoy" not in i]
    (job,) = find(rendered, "Job")
    # One Job per release (its pod template is immutable): the name carries the image's tag.
    assert job["metadata"]["name"] == "payrecon-migrate-" + payrecon.rsplit(":", 1)[1].replace(".", "-")


def test_the_readme_lists_what_an_operator_sets() -> None:
    readme = (REPO / "README.md").read_text()
    deploy = readme[readme.index("## Deploy") :]
    for key in (
        *PROD_SECRET_KEYS,
        "payrecon-config",
        "queueURL",
        "KEDA",
        "PAYRECON_OTLP_ENDPOINT",
        "otel-collector",
        "newTag",
    ):
        assert key in deploy, key
