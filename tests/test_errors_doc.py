"""docs/errors.md cannot drift: each message pattern is in the source, each named test exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = "\n".join(p.read_text() for p in sorted((ROOT / "src" / "vanishing").rglob("*.py")))


def rows() -> list[tuple[str, str, str]]:
    """(failure, message pattern, test) for each table row of docs/errors.md."""
    found = []
    for line in (ROOT / "docs" / "errors.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[2].startswith("`") and cells[3].startswith("`tests/"):
            found.append((cells[1], cells[2].strip("`"), cells[3].strip("`")))
    return found


ROWS = rows()


def test_the_table_lists_every_kind_of_failure():
    assert len(ROWS) >= 40
    text = " ".join(failure for failure, _, _ in ROWS)
    for kind in ("missing", "truncated", "magic", "gzip", "checksum", "pickle", "npz", "TOML"):
        assert kind in text, kind


@pytest.mark.parametrize("failure, pattern, test", ROWS, ids=[r[0] for r in ROWS])
def test_pattern_is_in_the_source_and_its_test_exists(failure, pattern, test):
    # The fixed parts between the {placeholders}; each must be written in the source as is.
    fixed = [part for part in re.split(r"\{[^}]*\}", pattern) if len(part.strip()) >= 3]
    assert fixed, f"{pattern!r} has no fixed text to check"
    for part in fixed:
        assert part in SOURCE, f"{part!r} (from {failure}) is not in src/vanishing"
    path, name = test.split("::")
    assert re.search(rf"^def {re.escape(name)}\(", (ROOT / path).read_text(), re.M), test
