"""Small HTML renderings for notebooks (``_repr_html_``): plain tables, no JavaScript."""

from __future__ import annotations

import html
from typing import Sequence

import pandas as pd

_STYLE = ("<style>.hx table{border-collapse:collapse;font-size:12px}.hx td,.hx th{padding:2px 8px;"
          "border-bottom:1px solid #e3e3e3;text-align:left}.hx .muted{color:#888}.hx h4{margin:4px 0}</style>")


def table(df: pd.DataFrame, max_rows: int = 40, float_format: str = "{:.3g}") -> str:
    """An HTML table of at most ``max_rows`` rows (the rest counted)."""
    more = len(df) - max_rows
    d = df.head(max_rows)
    out = d.to_html(index=False, border=0, na_rep="", float_format=lambda x: float_format.format(x), escape=True)
    if more > 0:
        out += f"<div class='muted'>… {more} more rows</div>"
    return out


def block(title: str, lines: Sequence[str] = (), body: str = "") -> str:
    items = "".join(f"<div>{html.escape(x)}</div>" for x in lines)
    return f"{_STYLE}<div class='hx'><h4>{html.escape(title)}</h4>{items}{body}</div>"
