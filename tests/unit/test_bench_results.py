"""`make bench --only …` replaces the sections it ran in RESULTS.md and keeps the others."""

from __future__ import annotations

import pytest

from tests.bench.run import merge_results, parse_args


def test_a_partial_run_replaces_its_sections_and_keeps_the_others_in_order() -> None:
    previous = (
        "# Benchmark results\n\nold header\n\n"
        "## Ledger posting throughput\n\nold throughput\n\n"
        "## POST /api/v1/transactions through Envoy\n\nold http\n\n"
        "## Statement import\n\nold import\n"
    )
    merged = merge_results(previous, {"http": "## POST /api/v1/transactions through Envoy, closed loop\n\nnew http\n"})
    assert "old http" not in merged and "new http" in merged
    assert merged.index("new http") < merged.index("old throughput") < merged.index("old import")
    assert merged.count("## ") == 3 and "old header" not in merged


def test_sections_run_in_their_own_order_and_unknown_ones_are_refused() -> None:
    assert parse_args(["--only", "throughput,http"]).sections == ["http", "throughput"]
    assert parse_args([]).sections == ["http", "open-loop", "throughput", "import", "reconcile"]
    with pytest.raises(SystemExit):
        parse_args(["--only", "latency"])
