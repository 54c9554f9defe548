"""A camt file read in parts (one process per part) gives exactly what the single reader gives, and any
file the parts cannot decide alone goes to the single reader."""

from __future__ import annotations

import array
import pickle
from pathlib import Path

import pytest

from services.reconciliation.adapters.formats import camt, camt_parallel
from services.reconciliation.domain.statements import ParsedFile, StatementFileError
from tests.bench.statement_import import plan_amounts, write_camt053

REPOSITORY = Path(__file__).resolve().parents[1].parent
FIXTURES = REPOSITORY / "tests" / "fixtures" / "statements" / "camt"
CORPUS = REPOSITORY.parent / "shared" / "statements"
CAMT_FILES = sorted(FIXTURES.glob("*.xml")) + sorted(CORPUS.glob("camt05*/*.xml"))


def single_reader(content: bytes) -> ParsedFile | StatementFileError:
    reader = camt._MessageReader()
    reader.read(camt._as_utf8_when_declared_otherwise(content))
    try:
        return reader.parsed_file()
    except StatementFileError as error:
        return error


def read_in_parts_here(content: bytes, parts: int) -> ParsedFile | None:
    """`read_in_parts` with every part read in this process (each one's findings pickled and back, as
    they travel between processes): the same cutting and joining, without a process start per case."""
    plan = camt_parallel.plan_parts(content, parts)
    if plan is None:
        return None
    reads = [
        pickle.loads(pickle.dumps(camt_parallel.read_part(camt_parallel._slices(content, part), part, index)))
        for index, part in enumerate(plan.parts)
    ]
    if any(read.failed for read in reads):
        return None
    return camt_parallel.join_parts(reads, plan)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list[int], list[int]]:
    """The import benchmark's statement at 1,200 entries (batches, reversals, foreign amounts), with
    the amount and line of each entry as written."""
    path = tmp_path_factory.mktemp("camt") / "statement.xml"
    plan = plan_amounts(1_200)
    lines = write_camt053(path, plan)
    return path.read_bytes(), list(plan.amounts), list(lines)


@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("path", CAMT_FILES, ids=lambda path: path.name)
def test_every_fixture_and_corpus_file_reads_the_same_in_parts(path: Path, parts: int) -> None:
    content = camt._as_utf8_when_declared_otherwise(path.read_bytes())

    in_parts = read_in_parts_here(content, parts)

    if in_parts is not None:  # None: the file cannot be cut (comments, a single entry, errors)
        assert in_parts == single_reader(content)


def test_most_fixture_and_corpus_files_are_cut() -> None:
    """So that the comparison above compares parts, not the single reader with itself. The corpus
    beside the repository is optional (absent in a fresh clone): the project's own fixtures suffice."""
    cut = [path for path in CAMT_FILES if camt_parallel.plan_parts(path.read_bytes(), 2) is not None]
    assert len([path for path in cut if path.is_relative_to(FIXTURES)]) >= 4, cut
    if CORPUS.is_dir():
        assert len(cut) >= 5, cut


@pytest.mark.parametrize("parts", [2, 3, 4])
@pytest.mark.parametrize("line_break", [b"\n", b"\r\n"])
def test_generated_statement_reads_the_same_in_parts(
    generated: tuple[bytes, list[int], list[int]], parts: int, line_break: bytes
) -> None:
    content, amounts, lines = generated
    content = content.replace(b"\n", line_break)

    # in processes of their own once; the other cases read the parts here
    read = camt_parallel.read_in_parts if (parts, line_break) == (2, b"\r\n") else read_in_parts_here
    in_parts = read(content, parts)

    assert in_parts is not None
    assert in_parts == single_reader(content)
    statement_lines = in_parts.statements[0].lines
    assert [line.amount_minor for line in statement_lines] == amounts
    assert [line.line for line in statement_lines] == lines


def test_several_statements_cut_anywhere_read_the_same(generated: tuple[bytes, list[int], list[int]]) -> None:
    content = generated[0]
    statement_start = content.index(b"    <Stmt>")
    statement_end = content.index(b"  </BkToCstmrStmt>")
    statement = content[statement_start:statement_end]
    second = statement.replace(b"DE89370400440532013000", b"NL91ABNA0417164300")
    three = content[:statement_end] + second + statement + content[statement_end:]

    for parts in (2, 5):
        in_parts = read_in_parts_here(three, parts)
        assert in_parts is not None
        assert in_parts == single_reader(three)
        assert [len(read.lines) for read in in_parts.statements] == [1_200] * 3


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda c: c.replace(b"<Sts>BOOK</Sts>", b"<!-- a comment --><Sts>BOOK</Sts>", 1), "a comment"),
        (lambda c: c.replace(b"<Sts>BOOK</Sts>", b"<Sts><![CDATA[BOOK]]></Sts>", 1), "a CDATA section"),
        (lambda c: c.replace(b"</Ntry>\n", b"</Ntry>\r", 1), "a line ending in CR alone"),
        (lambda c: c.replace(b"<Ntry>", b"<Nope>", 1), "no entry before the first one it could be cut at"),
    ],
)
def test_file_a_byte_cut_could_misread_is_not_cut(
    generated: tuple[bytes, list[int], list[int]], change: object, why: str
) -> None:
    changed = change(generated[0])  # type: ignore[operator]
    assert changed != generated[0]
    assert camt_parallel.plan_parts(changed, 2) is None, why


def test_broken_entry_in_a_later_part_leaves_the_file_to_the_single_reader(
    generated: tuple[bytes, list[int], list[int]],
) -> None:
    content = generated[0]
    last_indicator = content.rindex(b"<CdtDbtInd>")
    broken = content[:last_indicator] + b"<CdtDbtInd>UP" + content[last_indicator + len(b"<CdtDbtInd>CRDT") :]

    assert read_in_parts_here(broken, 2) is None
    error = single_reader(broken)
    assert isinstance(error, StatementFileError)
    assert error.errors[0].line == generated[2][-1]


def test_xml_broken_after_the_cut_leaves_the_file_to_the_single_reader(
    generated: tuple[bytes, list[int], list[int]],
) -> None:
    content = generated[0]
    broken = content[: len(content) * 3 // 4] + b"<Unclosed>" + content[len(content) * 3 // 4 :]

    assert read_in_parts_here(broken, 2) is None
    assert isinstance(single_reader(broken), StatementFileError)


def test_large_file_goes_through_the_parts(
    generated: tuple[bytes, list[int], list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    read_in_parts = camt_parallel.read_in_parts
    calls: list[ParsedFile | None] = []

    def recorded(content: bytes, parts: int) -> ParsedFile | None:
        calls.append(read_in_parts(content, max(parts, 2)))
        return calls[-1]

    monkeypatch.setattr(camt, "_PARALLEL_FROM_BYTES", 1 << 10)
    monkeypatch.setattr(camt_parallel, "read_in_parts", recorded)

    parsed = camt.parse_camt(generated[0])

    assert calls and calls[0] is parsed
    assert array.array("q", (line.amount_minor for line in parsed.statements[0].lines)) == array.array(
        "q", generated[1]
    )
