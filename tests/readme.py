"""The README's marked code blocks, so tests run the documented commands and code themselves.

A block is marked by an HTML comment on the line before its fence: `<!-- grpc-client-example -->`.
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(marker: str) -> str:
    """The body of the fenced block right after `<!-- marker -->`; fails the test when it is gone."""
    found = re.search(rf"^<!-- {re.escape(marker)} -->\n```[a-z]*\n(.*?)^```$", README.read_text(), re.M | re.S)
    assert found, f"README.md has no block marked <!-- {marker} -->"
    return found.group(1)
