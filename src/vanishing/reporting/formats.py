"""How numbers read in the report's tables and sentences, and the one layout of its text and
Markdown tables (the HTML tables come from the page's template).

A missing number (nan: a diverged run, a field never recorded) reads MISSING everywhere; a column
that does not apply to a row (dead units of a sigmoid) reads NOT_APPLICABLE.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

MISSING = "–"
NOT_APPLICABLE = "-"
UNDERFLOW = "0 (underflow)"  # a ratio whose layer-1 gradient was exactly 0 at every seed


class Table(NamedTuple):
    """A table of text cells as the page shows it: its header, its rows and its CSS class."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    css: str = ""


def fixed(value: float | None, digits: int) -> str:
    """A table number with `digits` decimals, MISSING when not finite."""
    if value is None or not math.isfinite(value):
        return MISSING
    return f"{value:.{digits}f}"


def scientific(value: float | None, digits: int = 2) -> str:
    """A ratio that spans decades for a table: '3.00e-04', MISSING when not finite."""
    if value is None or not math.isfinite(value):
        return MISSING
    return f"{value:.{digits}e}"


def number(value: float) -> str:
    """A ratio or norm for a label or sentence: 3 digits in [0.01, 1000), else scientific."""
    if not math.isfinite(value):
        return "not finite"
    return f"{value:.3g}" if 0.01 <= abs(value) < 1000 else f"{value:.1e}"


def percent(fraction: float) -> str:
    """A share for a sentence: 0.3104 -> '31 %', 0.0042 -> '0.4 %'."""
    value = 100 * fraction
    return f"{value:.0f} %" if value >= 10 else f"{value:.1f} %"


def percent2(fraction: float) -> str:
    """An accuracy for a sentence: 0.97235 -> '97.24 %'; missing -> MISSING."""
    return f"{100 * fraction:.2f} %" if math.isfinite(fraction) else MISSING


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An aligned text table: names (the first column) left, numbers right, a rule under the
    header."""
    widths = [max(map(len, column)) for column in zip(header, *rows, strict=True)]
    out = []
    for i, line in enumerate([header, *rows]):
        cells = [cell.rjust(w) for cell, w in zip(line, widths, strict=True)]
        cells[0] = line[0].ljust(widths[0])
        out.append("  ".join(cells))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown(value: Any) -> str:
    """Record text for Markdown: HTML-escaped (Markdown passes raw HTML) and pipes escaped."""
    return html.escape(str(value), quote=False).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown pipe table, every cell escaped."""
    lines = ["| " + " | ".join(markdown(h) for h in header) + " |"]
    lines.append("| " + " | ".join("---" for _ in header) + " |")
    lines += ["| " + " | ".join(markdown(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
