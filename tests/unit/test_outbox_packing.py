from services.kernel.outbox import OutboxRow, deduplication_id, pack_rows


def row(i: int, group: str) -> OutboxRow:
    return OutboxRow(i, group, f"p{i}".encode(), "")


def test_rows_are_packed_per_group_in_order_and_cut_at_the_limit() -> None:
    rows = [row(1, "a"), row(2, "b"), row(3, "a"), row(4, "a"), row(5, "b")]
    chunks = pack_rows(rows, per_message=2)
    assert [[r.id for r in c] for c in chunks] == [[1, 3], [4], [2, 5]]
    assert all(len({r.message_group for r in c}) == 1 for c in chunks)


def test_a_message_never_outgrows_the_byte_budget() -> None:
    rows = [OutboxRow(i, "a", b"x" * 400, "") for i in range(10)]
    chunks = pack_rows(rows, per_message=100, max_bytes=1000)
    assert [len(c) for c in chunks] == [2, 2, 2, 2, 2]
    assert [r.id for c in chunks for r in c] == list(range(10))
    assert [len(c) for c in pack_rows([OutboxRow(1, "a", b"x" * 5000, "")], 100, max_bytes=1000)] == [1]


def test_deduplication_id_is_deterministic_and_within_sqs_limits() -> None:
    chunk = [row(7, "a"), row(9, "a")]
    # Pinned: a relay that re-sends after a crash, in another process or release, must produce the
    # very same id, or SQS's deduplication cannot recognise the re-send.
    assert deduplication_id("ingest", [row(7, "a"), row(9, "a")]) == "ingest-7-8944bbc1689831cf498d2757fdf600063fe23a08"
    assert deduplication_id("ingest", chunk) != deduplication_id("ingest", chunk[:1])
    assert deduplication_id("ingest", chunk) != deduplication_id("ledger", chunk)
    assert len(deduplication_id("ingest", chunk)) <= 128
