"""`payrecon` command line: run a service, the worker, migrations, queue setup or the local stack."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager

from services.kernel.config import ConfigError

# Subcommands import what they need when they run: `payrecon health` is a container health check
# run every few seconds, and importing the services' stack (SQLAlchemy, the contexts) costs ~1 s of CPU.


def _serve(context: str) -> None:
    from services.kernel.logging import configure_logging
    from services.kernel.metrics import configure_metrics
    from services.kernel.runtime import serve_until_signalled
    from services.kernel.telemetry import configure_tracing, flush_traces

    run: Callable[[asyncio.Event], AbstractAsyncContextManager[object]]
    if context == "ingest":
        from services.ingest.app import running as ingest_running
        from services.ingest.config import IngestSettings

        ingest = IngestSettings.from_env()
        settings_common, run = ingest.common, lambda stop: ingest_running(ingest, stop)
    elif context == "ledger":
        from services.ledger.app import running as ledger_running
        from services.ledger.config import LedgerSettings

        ledger = LedgerSettings.from_env()
        settings_common, run = ledger.common, lambda stop: ledger_running(ledger, stop)
    elif context == "ledger-worker":
        from services.ledger.app import worker
        from services.ledger.config import LedgerSettings

        ledger = LedgerSettings.from_env()
        settings_common, run = ledger.common, lambda stop: worker(ledger, stop)
    else:
        from services.reconciliation.app import running as recon_running
        from services.reconciliation.config import ReconciliationSettings

        recon = ReconciliationSettings.from_env()
        settings_common, run = recon.common, lambda stop: recon_running(recon, stop)
    configure_logging(context, settings_common.log_level)
    configure_tracing(context, settings_common.otlp_endpoint)
    configure_metrics(context, settings_common.metrics_address, settings_common.otlp_endpoint)
    try:
        asyncio.run(serve_until_signalled(run))
    finally:
        flush_traces()


async def verify_ledger(environ: Mapping[str, str] | None = None) -> int:
    """`payrecon ledger verify`: 0 when the ledger adds up, 1 with the first broken record."""
    from services.kernel.config import Env
    from services.kernel.db import create_engine
    from services.ledger.adapters.audit import audit_ledger

    # Only the database is needed: an auditor's job should not require the services' secrets.
    engine = create_engine(Env(environ).text("PAYRECON_DATABASE_URL"), "ledger", pool_size=1)
    try:
        report = await audit_ledger(engine)
    finally:
        await engine.dispose()
    if report.ok:
        print(
            f"ledger verified: {report.accounts} accounts, {report.entries} entries, hash chains intact,"
            f" balances = Σ entries, {report.currencies} currencies balanced (Σ debits = Σ credits)"
        )
        return 0
    print(f"ledger verification FAILED at {report.breach}", file=sys.stderr)
    return 1


def _run_stack(port: int) -> None:
    import os
    import signal

    from services.devstack.stack import Stack, StackOptions

    started = time.monotonic()
    stack = Stack(
        StackOptions(
            http_port=port,
            database_url=os.environ.get("PAYRECON_DATABASE_URL"),
            redis_url=os.environ.get("PAYRECON_REDIS_URL"),
        )
    )
    print("payrecon: starting the local stack ...", flush=True)
    stack.start()
    elapsed = time.monotonic() - started
    # One Prometheus endpoint per process (PAYRECON_METRICS_ADDRESS); the Grafana dashboard reads them.
    metrics_lines = "".join(
        f"  metrics {name:<15}http://{address}/metrics\n" for name, address in stack.metrics_addresses.items()
    )
    print(
        f"""
payrecon is READY in {elapsed:.1f}s ({", ".join(f"{k} {v}s" for k, v in stack.timings.items())})
  REST gateway (Envoy)  {stack.base_url}/api/v1   token: Bearer demo-token-for-testing
  ingest gRPC           {", ".join(stack.ingest_addresses)} ({len(stack.ingest_addresses)} processes, INGEST_PROCESSES)
  ledger gRPC           {stack.addresses["ledger"]}
  reconciliation gRPC   {stack.addresses["reconciliation"]}
  ledger worker health  {stack.worker_address} (grpc.health.v1 only)
  PostgreSQL            {stack.env["PAYRECON_DATABASE_URL"]}
  Redis                 {stack.env["PAYRECON_REDIS_URL"]}
  SQS ({stack.sqs.kind if stack.sqs else "?"})       {stack.env["PAYRECON_SQS_ENDPOINT_URL"]}
  traces                {_where_traces_go(stack.otlp_endpoint)}
  logs                  {stack.options.state_dir}
{metrics_lines}Ctrl-C stops everything.""",
        flush=True,
    )
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping:
            for name, child in stack.children.items():
                if child.process.poll() is not None:
                    print(f"payrecon: {name} exited ({child.process.returncode}); see {child.log}", flush=True)
                    stopping = True
            time.sleep(0.5)
    finally:
        print("payrecon: stopping ...", flush=True)
        stack.stop()
        print("payrecon: stopped", flush=True)


def _where_traces_go(otlp_endpoint: str | None) -> str:
    if not otlp_endpoint:
        return "off (set PAYRECON_OTLP_ENDPOINT, e.g. http://127.0.0.1:4317)"
    return f"OTLP/gRPC to {otlp_endpoint} (Envoy and every service)"


CHUNK = 1024 * 1024


def _import_statement(path: str, account: str, fmt: str, mapping_file: str | None, address: str, token: str) -> int:
    """`payrecon statements import FILE [--account …]`: streams the file to the reconciliation service
    over gRPC (up to the service's 512 MiB), with a progress bar on a terminal; prints the import's
    summary as JSON."""
    import json
    from pathlib import Path

    import grpc
    from google.protobuf import json_format, struct_pb2
    from payrecon.reconciliation.v1 import reconciliation_pb2, reconciliation_pb2_grpc

    from services.kernel.grpc_errors import violations_of

    file = Path(path)
    if not file.is_file():
        print(f"payrecon: no such file: {path}", file=sys.stderr)
        return 2
    total = file.stat().st_size
    mapping = None
    if mapping_file:
        mapping = struct_pb2.Struct()
        mapping.update(json.loads(Path(mapping_file).read_text()))
    show = sys.stderr.isatty()

    def chunks() -> Iterator[reconciliation_pb2.ImportStatementChunk]:
        sent = 0
        with file.open("rb") as handle:
            first = True
            while True:
                data = handle.read(CHUNK)
                if not data and not first:
                    break
                chunk = reconciliation_pb2.ImportStatementChunk(data=data)
                if first:
                    chunk.account_id, chunk.format, chunk.file_name = account, fmt, file.name
                    if mapping is not None:
                        chunk.csv_mapping.CopyFrom(mapping)
                    first = False
                sent += len(data)
                if show:
                    done = sent / total if total else 1.0
                    bar = "#" * int(done * 30)
                    print(f"\r  sending {file.name} [{bar:<30}] {done:6.1%}", end="", file=sys.stderr, flush=True)
                yield chunk
                if not data:
                    break
        if show:
            print("\n  importing and matching ...", file=sys.stderr, flush=True)

    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 8 * CHUNK)]) as channel:
        stub = reconciliation_pb2_grpc.ReconciliationServiceStub(channel)
        try:
            reply = stub.ImportStatementStream(chunks(), metadata=(("authorization", f"Bearer {token}"),), timeout=3600)
        except grpc.RpcError as error:
            print(f"payrecon: import failed: {error.code().name}: {error.details()}", file=sys.stderr)
            for field, description in violations_of(error):
                print(f"  {field}: {description}", file=sys.stderr)
            return 1
    print(json.dumps(json_format.MessageToDict(reply), indent=2))
    return 0 if reply.status != "REJECTED" else 1


def _schema_command(args: argparse.Namespace) -> int:
    """`payrecon schema apply FILE [--dry-run]` (the diff first, then the new version, guarded by the
    version the diff was made against), `payrecon schema show [--version N]`, `payrecon schema versions`."""
    from pathlib import Path
    from typing import cast

    import grpc
    import yaml
    from google.protobuf import json_format
    from payrecon.ledger.v1 import ledger_pb2, ledger_pb2_grpc

    from services.kernel.grpc_errors import machine_code_of, violations_of

    metadata = (("authorization", f"Bearer {args.token}"),)
    with grpc.insecure_channel(args.address) as channel:
        stub = ledger_pb2_grpc.LedgerServiceStub(channel)
        try:
            if args.schema_command == "show":
                shown = stub.GetSchema(ledger_pb2.GetSchemaRequest(version=args.version), metadata=metadata, timeout=30)
                if not shown.version:
                    print("# no schema applied: any accounts, opened by transfers, overdraft allowed")
                    return 0
                print(f"# version {shown.version}, applied by {shown.applied_by} at {shown.applied_at.ToJsonString()}")
                document = _whole(json_format.MessageToDict(shown.document))
                print(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), end="")
                return 0
            if args.schema_command == "versions":
                listed = stub.ListSchemaVersions(ledger_pb2.ListSchemaVersionsRequest(), metadata=metadata, timeout=30)
                for v in listed.versions:
                    print(f"{v.version}\t{v.applied_at.ToJsonString()}\t{v.applied_by}")
                return 0
            file = Path(args.file)
            if not file.is_file():
                print(f"payrecon: no such file: {args.file}", file=sys.stderr)
                return 2
            text = file.read_text()
            plan = stub.PutSchema(
                ledger_pb2.PutSchemaRequest(document_text=text, dry_run=True), metadata=metadata, timeout=120
            )
            print(f"schema in force: version {plan.previous_version}")
            for change in plan.changes:
                print(f"  {change.description}")
            if not plan.changes:
                print("  no changes")
            if plan.stranded:
                print(f"refused: {len(plan.stranded)} existing account(s) would be stranded:", file=sys.stderr)
                for account in plan.stranded:
                    print(f"  {account.account_id}: {account.reason}", file=sys.stderr)
                return 1
            if args.dry_run or not plan.changes:
                return 0
            request = ledger_pb2.PutSchemaRequest(document_text=text, expected_version=plan.previous_version)
            applied = stub.PutSchema(request, metadata=metadata, timeout=120)
            print(f"applied: version {applied.schema.version}")
            return 0
        except grpc.RpcError as error:
            # A sync call's error carries the same trailers as an aio one.
            code = machine_code_of(cast(grpc.aio.AioRpcError, error)) if isinstance(error, grpc.Call) else None
            print(f"payrecon: {code or error.code().name}: {error.details()}", file=sys.stderr)
            for field, description in violations_of(error):
                print(f"  {field}: {description}", file=sys.stderr)
            return 1


def _whole(value: object) -> object:
    """A Struct's numbers back as the integers they were (minor units), for printing."""
    if isinstance(value, dict):
        return {k: _whole(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _export_run(run_id: str, fmt: str, address: str, token: str) -> int:
    """`payrecon reconcile export RUN_ID --format csv|json > file`: streams a stored run's report (matches
    and cases with their evidence) from the reconciliation service to standard output as it arrives."""
    import grpc
    from payrecon.reconciliation.v1 import reconciliation_pb2, reconciliation_pb2_grpc

    out = sys.stdout.buffer
    with grpc.insecure_channel(address) as channel:
        stub = reconciliation_pb2_grpc.ReconciliationServiceStub(channel)
        request = reconciliation_pb2.ExportReconciliationRequest(run_id=run_id, format=fmt)
        try:
            for piece in stub.ExportReconciliation(
                request, metadata=(("authorization", f"Bearer {token}"),), timeout=3600
            ):
                out.write(piece.data)
        except grpc.RpcError as error:
            out.flush()
            print(f"payrecon: export failed: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    out.flush()
    return 0


def check_health(address: str, service: str = "", timeout: float = 2.0) -> int:
    """`payrecon health ADDRESS [--service NAME]`: 0 when the gRPC server at ADDRESS reports NAME ("" =
    the server as a whole) SERVING over grpc.health.v1, 1 otherwise. The containers' health check: the
    image has no grpc_health_probe, and Kubernetes asks the same service natively."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    asked = service or '"" (the server)'
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as error:
            print(f"{address} {asked}: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{address} {asked}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


async def wait_for_migrations(
    seconds: float, environ: Mapping[str, str] | None = None, *, interval: float = 2.0
) -> int:
    """`payrecon migrate --wait SECONDS`: applies nothing; 0 once every schema has all the image's
    migrations, 1 when SECONDS pass first. Kubernetes pods run it as an initContainer, so a service
    starts only after the migrations Job has migrated the database its code expects (a database not
    reachable yet counts as not migrated yet)."""
    from services.provisioning import pending_migrations

    log = logging.getLogger("payrecon.migrate")
    deadline = time.monotonic() + seconds
    while True:
        try:
            pending = await pending_migrations(environ)
        except ConfigError:
            raise
        except Exception as error:  # PostgreSQL not reachable yet, starting up or refusing us: not migrated yet
            waiting_for = f"the database ({type(error).__name__}: {error})"
        else:
            if not pending:
                print("migrations: every schema is up to date")
                return 0
            waiting_for = "migrations " + ", ".join(f"{schema} {versions}" for schema, versions in pending.items())
        if time.monotonic() >= deadline:
            print(f"payrecon: gave up after {seconds:g}s waiting for {waiting_for}", file=sys.stderr)
            return 1
        log.info("waiting for %s", waiting_for)
        await asyncio.sleep(interval)


def _address_and_token(
    parser: argparse.ArgumentParser, context: str = "reconciliation", default: str = "127.0.0.1:50053", needs: str = ""
) -> None:
    """--address of `context`'s gRPC server (PAYRECON_<CONTEXT>_ADDRESS) and --token (PAYRECON_TOKEN)."""
    variable = f"PAYRECON_{context.upper()}_ADDRESS"
    parser.add_argument(
        "--address", default=os.environ.get(variable, default), help=f"{context} gRPC address ({variable})"
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("PAYRECON_TOKEN", "demo-token-for-testing"),
        help="bearer token (PAYRECON_TOKEN)" + (f"; {needs}" if needs else ""),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="payrecon", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run one service")
    serve.add_argument("context", choices=["ingest", "ledger", "reconciliation"])
    sub.add_parser("worker", help="run the ledger's SQS posting worker")
    migrate = sub.add_parser("migrate", help="apply every schema's migrations")
    migrate.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="apply nothing: wait until another process (the migrations Job) has applied them; exit 1 after SECONDS",
    )
    sub.add_parser("create-queues", help="create the SQS FIFO queues and their dead-letter queues")
    ledger = sub.add_parser("ledger", help="ledger tools")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True)
    ledger_sub.add_parser(
        "verify", help="recompute hash chains and check every balance and currency; exit 1 on the first broken record"
    )
    statements = sub.add_parser("statements", help="bank statements")
    statements_sub = statements.add_subparsers(dest="statements_command", required=True)
    importer = statements_sub.add_parser(
        "import", help="import a statement file (camt.05x, MT940, BAI2, OFX, CSV) and match it against the ledger"
    )
    importer.add_argument("file")
    importer.add_argument(
        "--account",
        default="",
        help="the ledger account the statement reconciles with (default: the one whose schema class's"
        " statementAccount metadata field holds the file's own account id, e.g. its IBAN)",
    )
    importer.add_argument(
        "--format", default="", help="CAMT053, CAMT052, CAMT054, MT940, BAI2, OFX or CSV (default: detect)"
    )
    importer.add_argument("--csv-mapping", help="a JSON file with the CSV column mapping (saved for the account)")
    _address_and_token(importer)
    reconcile = sub.add_parser("reconcile", help="reconciliation runs")
    reconcile_sub = reconcile.add_subparsers(dest="reconcile_command", required=True)
    exporter = reconcile_sub.add_parser(
        "export", help="write a stored run's report (matches, cases with evidence) to standard output"
    )
    exporter.add_argument("run_id", help="the run's report_id")
    exporter.add_argument("--format", choices=["csv", "json"], default="csv")
    _address_and_token(exporter)
    schema = sub.add_parser("schema", help="the ledger's schema: account classes and transfer types")
    schema_sub = schema.add_subparsers(dest="schema_command", required=True)
    apply = schema_sub.add_parser("apply", help="apply a YAML/JSON schema file as the next version (diff first)")
    apply.add_argument("file")
    apply.add_argument("--dry-run", action="store_true", help="print the diff and any stranded accounts; apply nothing")
    show = schema_sub.add_parser("show", help="print the schema in force (or --version N) as YAML")
    show.add_argument("--version", type=int, default=0)
    versions = schema_sub.add_parser("versions", help="list every version applied, with when and by whom")
    for command in (apply, show, versions):
        _address_and_token(command, "ledger", "127.0.0.1:50052", "applying needs the schema:write scope")
    health = sub.add_parser(
        "health", help="ask a gRPC server's grpc.health.v1 status; exit 0 only when SERVING (container health checks)"
    )
    health.add_argument("address", help="host:port of the gRPC server")
    health.add_argument("--service", default="", help='the service name to ask about (default "": the whole server)')
    health.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer")
    run = sub.add_parser("run", help="run the whole local stack in the foreground")
    run.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            _serve(args.context)
        elif args.command == "worker":
            _serve("ledger-worker")
        elif args.command == "migrate":
            from services.provisioning import migrate_all

            if args.wait is not None:
                return asyncio.run(wait_for_migrations(args.wait))
            asyncio.run(migrate_all())
        elif args.command == "create-queues":
            from services.provisioning import create_queues

            asyncio.run(create_queues())
        elif args.command == "health":
            return check_health(args.address, args.service, args.timeout)
        elif args.command == "ledger":
            return asyncio.run(verify_ledger())
        elif args.command == "schema":
            return _schema_command(args)
        elif args.command == "statements":
            return _import_statement(args.file, args.account, args.format, args.csv_mapping, args.address, args.token)
        elif args.command == "reconcile":
            return _export_run(args.run_id, args.format, args.address, args.token)
        elif args.command == "run":
            _run_stack(args.port)
    except ConfigError as error:
        logging.getLogger("payrecon").error("configuration error: %s", error)
        print(f"payrecon: configuration error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
