"""Statement bytes → text and physical lines, the same way for every text format we import.

Banks send cp1252, cp852 or cp1257 as often as UTF-8, and a row error must name the line an editor
shows, so lines are split on CR/LF only: `str.splitlines` also splits on NEL, form feed and other
characters that cp1252/latin-1 text can legitimately contain.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence

from services.reconciliation.domain.statements import RowError, StatementFileError

# Tried in order when a format carries no charset of its own: strict UTF-8 first (it rejects almost
# every non-UTF-8 file), then cp1252, then latin-1, which maps every byte and so always succeeds.
DEFAULT_ENCODINGS: tuple[str, ...] = ("utf-8", "cp1252", "latin-1")

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def decode_text(content: bytes, encodings: Sequence[str] = DEFAULT_ENCODINGS) -> str:
    """The text in the first encoding that decodes every byte; a UTF-8 byte-order mark is dropped.

    Raises StatementFileError naming the line of the first undecodable byte when none fits.
    """
    if content.startswith(codecs.BOM_UTF8):
        content = content[len(codecs.BOM_UTF8) :]
    first_failure: UnicodeDecodeError | None = None
    for encoding in encodings:
        try:
            return content.decode(encoding)
        except UnicodeDecodeError as error:
            first_failure = first_failure or error
        except LookupError:
            raise StatementFileError([RowError(0, f"unknown text encoding {encoding!r}")]) from None
    line = content[: first_failure.start].count(b"\n") + 1 if first_failure else 0
    tried = ", ".join(encodings)
    raise StatementFileError([RowError(line, f"the file is not text in {tried}")])


def physical_lines(text: str) -> list[str]:
    """The lines of `text` as an editor numbers them (index 0 is line 1), without line breaks."""
    return _LINE_BREAK.split(text)
