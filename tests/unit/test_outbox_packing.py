from services.kernel.outbox import OutboxRow, deduplication_id, pack_rows, send_rounds
from services.kernel.sqs import OutgoingMessage


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


def message(group: str, n: int) -> OutgoingMessage:
    return OutgoingMessage(f"{group}{n}".encode(), group, f"{group}-{n}", {})


def test_send_rounds_never_put_one_group_in_two_calls_of_a_round_and_keep_its_order() -> None:
    messages = [message("a", 1), message("b", 1), message("a", 2), message("a", 3), message("c", 1), message("b", 2)]
    rounds = send_rounds(messages, per_call=2)
    names = [[[m.body.decode() for m in call] for call in calls] for calls in rounds]
    assert names == [[["a1", "a2"], ["b1", "b2"], ["c1"]], [["a3"]]]
    for group in "abc":
        in_order = [m for calls in rounds for call in calls for m in call if m.group_id == group]
        assert in_order == [m for m in messages if m.group_id == group]
        assert all(sum(1 for call in calls if any(m.group_id == group for m in call)) <= 1 for calls in rounds)
    assert send_rounds([]) == []


def test_send_rounds_fill_calls_with_many_groups() -> None:
    rounds = send_rounds([message(f"g{i}", 1) for i in range(16)])
    assert [[len(call) for call in calls] for calls in rounds] == [[10, 6]]
