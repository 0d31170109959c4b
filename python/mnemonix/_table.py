"""One aligned text table printer, for the CLI (``mnemonix demo`` and friends) and the benches."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def format_number(value: float) -> str:
    """Three decimals in [0.01, 1e4), three significant digits outside (``0.123``, ``1.2e-05``)."""
    return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.3f}"


def format_table(
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    markdown: bool = False,
    indent: str = "  ",
    float_format: Callable[[float], str] = format_number,
) -> str:
    """Rows aligned under ``header``: plain (two-space gaps) or Markdown (``| a | b |``).

    Floats go through ``float_format``, ``None`` prints as an empty cell, anything else as ``str``.
    """
    def cell(value: object) -> str:
        if isinstance(value, float):
            return float_format(value)
        return "" if value is None else str(value)

    cells = [[str(h) for h in header]] + [[cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for i, row in enumerate(cells):
        padded = [c.ljust(w) for c, w in zip(row, widths)]
        rule = ["-" * w for w in widths]
        if markdown:
            lines.append("| " + " | ".join(padded) + " |")
            if i == 0:
                lines.append("| " + " | ".join(rule) + " |")
        else:
            lines.append(indent + "  ".join(padded))
            if i == 0:
                lines.append(indent + "  ".join(rule))
    return "\n".join(lines)


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]], **options: object) -> None:
    """Print :func:`format_table` (same options)."""
    print(format_table(header, rows, **options))  # type: ignore[arg-type]
