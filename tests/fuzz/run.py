"""`make fuzz`: starts an isolated stack on this machine's loopback, sends at least 10,000 generated
requests through Envoy to every route but the streams, prints the counts and every violation found,
and exits 1 when there is one (a server error, an answer outside the error shape, a row left behind).

    python -m tests.fuzz.run [--requests N] [--max-seconds S]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from datetime import UTC, datetime

from services.devstack.processes import free_port
from services.devstack.stack import Stack, StackOptions, default_state_dir
from tests.fuzz.rest_fuzzer import RestFuzzer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="at least this many requests (10,000)")
    parser.add_argument("--max-seconds", type=float, default=1800, help="stop generating after this long (1,800)")
    args = parser.parse_args(argv)
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the stack below is stopped, not orphaned.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    options = StackOptions(
        http_port=free_port(),
        database_url=os.environ.get("PAYRECON_DATABASE_URL"),
        redis_url=os.environ.get("PAYRECON_REDIS_URL"),
        state_dir=default_state_dir() / "fuzz",
        isolated=True,
    )
    stack = Stack(options).start()
    try:
        print(f"fuzzing {stack.base_url} (database {stack.database_name}) with {args.requests:,} requests", flush=True)
        report = RestFuzzer(stack.base_url, stack.env["PAYRECON_DATABASE_URL"]).run(
            args.requests, max_seconds=args.max_seconds, progress=lambda line: print(line, flush=True)
        )
    finally:
        stack.stop()
    print(f"fuzz run of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(report.summary())
    print("codes of refused requests: " + ", ".join(f"{code} {n:,}" for code, n in report.codes.most_common()))
    short = report.requests < args.requests
    if short:
        print(f"only {report.requests:,} of {args.requests:,} requests within {args.max_seconds:.0f} s")
    return 1 if report.violations or short else 0


if __name__ == "__main__":
    sys.exit(main())
