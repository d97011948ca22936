"""Plain-text tables for command output (a leaf: the CLI, the commands, the demo and tools use it)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

# Terminal output stays within this many columns: wider tables wrap their text cells.
MAX_WIDTH = 100
_GAP = 2
_MIN_COLUMN = 10  # a wrapped column never gets narrower than this


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], max_width: int | None = MAX_WIDTH) -> str:
    """A plain text table (numbers with 4 decimals) at most ``max_width`` columns wide.

    When the natural widths do not fit, the columns holding text (a cell with a blank in it) are
    narrowed, the widest first, and their cells wrap onto more lines at blanks; columns of numbers or
    single words never wrap, and a word longer than its column (a path) stays whole on its line, so a
    table of those may stay wider. ``max_width=None``: never wrap.
    """

    def fmt(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    cells = [[fmt(h) for h in headers]] + [[fmt(v) for v in r] for r in rows]
    natural = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    wrappable = [any(" " in r[i] for r in cells[1:]) for i in range(len(headers))]
    widths = _fit(natural, wrappable, max_width) if max_width else natural
    lines = []
    for index, row in enumerate(cells):
        wrapped = [_wrap(c, w) if w < n else [c] for c, w, n in zip(row, widths, natural)]
        for part in range(max(len(w) for w in wrapped)):
            pieces = [(w[part] if part < len(w) else "").ljust(width) for w, width in zip(wrapped, widths)]
            lines.append((" " * _GAP).join(pieces).rstrip())
        if index == 0:
            lines.append((" " * _GAP).join("-" * w for w in widths))
    return "\n".join(lines)


def _fit(natural: list[int], wrappable: list[bool], max_width: int) -> list[int]:
    """Column widths: the wrappable ones capped at the largest width that makes the table fit."""
    budget = max_width - _GAP * (len(natural) - 1) - sum(n for n, w in zip(natural, wrappable) if not w)
    flexible = sorted(n for n, w in zip(natural, wrappable) if w)
    if not flexible or sum(flexible) <= budget:
        return natural
    # Water-filling: the widest columns come down to one cap, the narrower ones keep their width.
    cap, left = _MIN_COLUMN, budget
    for position, width in enumerate(flexible):
        share = left // (len(flexible) - position)
        if width <= share:
            left -= width
            continue
        cap = max(share, _MIN_COLUMN)
        break
    return [min(n, cap) if w else n for n, w in zip(natural, wrappable)]


def _wrap(text: str, width: int) -> list[str]:
    """Broken at blanks only: a path or name longer than the column stays whole (it is copied, not read)."""
    return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False) or [""]


def wrap_lines(text: str, width: int = MAX_WIDTH) -> list[str]:
    """A line of prose as lines of at most ``width`` columns, broken at blanks only (paths stay whole)."""
    return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False) or [""]
