"""Every figure of hcl-explore as a pure function returning a ``plotly.graph_objects.Figure``.

The functions here are shared by the Streamlit app, notebooks and the offline HTML report, so they
depend on no UI state, read and write no files, and keep their payload small: at most ``top`` rows
of a loading matrix, at most :data:`MAX_POINTS` scatter points (seeded subsampling), thinned
curves. The same input always gives the same figure (``fig.to_json()`` is reproducible).

Colours are defined once: :data:`LEVEL_COLORS` (one colour per lattice level: global / partial /
private), :data:`ABSENT_COLOR` for candidate nodes with no factors, :data:`HIGHLIGHT_COLOR` for
nodes picked out (e.g. selected by prediction) and :data:`MODEL_COLORS` for HCL vs baselines.

Reading a hierarchy graph (:func:`hierarchy_graph`): every candidate node of the lattice is a
marker; layers are node sizes, the global node (all modalities) on top, private nodes (one
modality) at the bottom; within a layer nodes follow the lattice order (modality order) from left
to right (:func:`node_positions` gives the exact coordinates). Lines join a node to the nodes it
covers in the Hasse diagram. Marker size grows with the number of factors; faded grey markers are
candidate nodes the model found absent (0 factors). With a stability check
(:meth:`hcl_explore.model.HCL.stability`), a present node's opacity grows with the share of
subsample refits that found it (:func:`stability_opacity`) and its hover text says in how many
resamples it was found. Each marker's ``customdata`` is its node label
(``"labs+notes"``), so a UI can map clicks back to nodes with
:func:`hcl_explore.lattice.parse_node_label`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .lattice import LEVELS, Lattice, Node, node_label, node_level, parse_node_label

if TYPE_CHECKING:  # pragma: no cover - imports for type hints only (no import cycle at run time)
    from .model import HCL
    from .predict import PredictionReport

__all__ = [
    "ABSENT_COLOR",
    "HIGHLIGHT_COLOR",
    "LEVEL_COLORS",
    "MAX_POINTS",
    "MODEL_COLORS",
    "NOISE_COLOR",
    "SEED",
    "VALUE_COLORSCALE",
    "COLLAPSE_ABOVE",
    "MATRIX_FROM",
    "REF_WIDTH",
    "curves_figure",
    "hierarchy_graph",
    "lattice_figure",
    "loadings_figure",
    "metrics_figure",
    "model_hierarchy",
    "model_matrix",
    "modality_codes",
    "node_code",
    "node_matrix",
    "node_positions",
    "objective_figure",
    "overlap_figure",
    "scores_figure",
    "stability_opacity",
    "top_loadings",
    "true_vs_recovered",
    "variance_figure",
]

# ---------------------------------------------------------------------------------------------
# constants (colour-blind safe Okabe-Ito hues)

LEVEL_COLORS: dict[str, str] = {"global": "#0072B2", "partial": "#009E73", "private": "#E69F00"}
"""One colour per lattice level."""
ABSENT_COLOR = "#BDBDBD"
"""Candidate nodes found absent (rank 0) / switched off."""
HIGHLIGHT_COLOR = "#D62728"
"""Outline of highlighted nodes (e.g. nodes selected by prediction)."""
NOISE_COLOR = "#E0E0E0"
"""The unexplained (noise) share of a modality's variance."""
EDGE_COLOR = "#9E9E9E"
VALUE_COLORSCALE = "Viridis"
"""Continuous colour scale of node values (e.g. variance explained)."""
LOADING_COLORSCALE = "RdBu_r"
"""Diverging colour scale of loadings, centred at 0 (red positive, blue negative)."""
MODEL_COLORS: tuple[str, ...] = ("#D55E00", "#56B4E9", "#CC79A7", "#7F7F7F", "#F0E442", "#000000")
"""HCL first, then baselines in report order."""
CONTINUOUS_COLORSCALE = "Cividis"
CATEGORY_COLORS: tuple[str, ...] = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
                                    "#F0E442", "#000000", "#7F7F7F", "#8C564B")
MAX_POINTS = 4000
"""Most scatter points any figure carries."""
MAX_CURVE_POINTS = 600
"""Most points per ROC / precision-recall / objective curve."""
SEED = 0
"""Seed of every subsampling and jitter."""
TEMPLATE = "plotly_white"
FONT = dict(family="Arial, Helvetica, sans-serif", size=13)

_ABSENT_OPACITY = 0.35
_ABSENT_SIZE = 12.0
_STABLE_MIN_OPACITY = 0.35


def stability_opacity(found: float) -> float:
    """Marker opacity of a present node found in a share ``found`` (0..1) of the stability
    resamples: 0.35 when never found, 1 when always found, linear in between."""
    f = min(max(float(found), 0.0), 1.0) if found is not None and math.isfinite(float(found)) else 1.0
    return round(_STABLE_MIN_OPACITY + (1.0 - _STABLE_MIN_OPACITY) * f, 4)


# ---------------------------------------------------------------------------------------------
# small helpers


def _layout(fig: go.Figure, title: str, **kw: Any) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left"),
        template=TEMPLATE,
        font=FONT,
        hoverlabel=dict(font_size=13),
        **kw,
    )
    return fig


def _caption(fig: go.Figure, text: str, shift: int = 0) -> None:
    """A short grey reading hint under the plot area, ``shift`` pixels further down (below axes)."""
    fig.add_annotation(text=text, xref="paper", yref="paper", x=0, y=0, yshift=-8 - shift, xanchor="left",
                       yanchor="top", showarrow=False, font=dict(size=11, color="#616161"), align="left")


def _note(fig: go.Figure, text: str) -> go.Figure:
    """Centre a message in an otherwise empty figure."""
    fig.add_annotation(text=text, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
                       font=dict(size=15, color="#616161"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _mix(color: str, t: float) -> str:
    """Shade a hex colour: ``t > 0`` towards white, ``t < 0`` towards black (|t| <= 1)."""
    c = color.lstrip("#")
    rgb = [int(c[i:i + 2], 16) for i in (0, 2, 4)]
    target = 255 if t > 0 else 0
    out = [round(v + (target - v) * abs(t)) for v in rgb]
    return "#" + "".join(f"{v:02X}" for v in out)


def _shades(color: str, k: int) -> list[str]:
    """``k`` distinguishable shades of one colour (the base colour first)."""
    if k <= 1:
        return [color]
    ts = np.linspace(0.0, 0.6, k)
    # Alternate darker / lighter so that neighbours differ.
    return [_mix(color, float(t) if i % 2 == 0 else -float(t) * 0.6) for i, t in enumerate(ts)]


def _as_node(lattice: Lattice, raw: Any) -> Node:
    """A node from a tuple, a label such as ``"labs+notes"`` or one modality name."""
    if isinstance(raw, str):
        return lattice.node(parse_node_label(raw))
    return lattice.node(raw)


def _node_map(lattice: Lattice, mapping: Mapping | None) -> dict[Node, Any]:
    if not mapping:
        return {}
    return {_as_node(lattice, k): v for k, v in mapping.items()}


def _fmt(v: float | None, fmt: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return format(v, fmt)


def _factors(r: int) -> str:
    return f"{r} factor{'s' if r != 1 else ''}"


def _marker_size(rank: float) -> float:
    """Marker diameter (px) of a present node: 24 px for one factor, growing with the number of
    factors (strictly increasing up to 12 factors, then capped at 58 px)."""
    return 14.0 + 10.0 * min(max(rank, 0.0), 12.0) ** 0.6


def _subsample(n: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n`` rows (seeded; all rows when few)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def _thin(n: int, max_points: int = MAX_CURVE_POINTS) -> np.ndarray:
    """Evenly spaced indices into a curve of ``n`` points, first and last always kept."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max_points)).astype(int))


def _f32(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _model_color(i: int) -> str:
    return MODEL_COLORS[i % len(MODEL_COLORS)]


# ---------------------------------------------------------------------------------------------
# hierarchy graphs


def node_positions(lattice: Lattice) -> dict[Node, tuple[float, float]]:
    """Deterministic (x, y) of every lattice node in the hierarchy figures.

    Layers are the distinct node sizes present: y = 0 for the smallest nodes (private), up to
    y = n_layers - 1 for the largest (global). Within a layer of k nodes in lattice order, the
    i-th node has x = (i + 1) / (k + 1), so nodes spread evenly over (0, 1).

    Returns
    -------
    dict node -> (x, y)
    """
    sizes = sorted({len(n) for n in lattice.nodes})
    layer_of = {s: j for j, s in enumerate(sizes)}
    pos: dict[Node, tuple[float, float]] = {}
    for s in sizes:
        layer = [n for n in lattice.nodes if len(n) == s]
        k = len(layer)
        for i, n in enumerate(layer):
            pos[n] = ((i + 1) / (k + 1), float(layer_of[s]))
    return pos


REF_WIDTH = 460
"""Plot width (px) the hierarchy graphs are laid out for by default: node labels do not overlap
when the figure is drawn this wide or wider (pass ``width=`` for a narrower column)."""
COLLAPSE_ABOVE = 15
"""Lattices with more candidate nodes than this draw only the nodes found (the absent ones are
counted in a caption, not drawn)."""
MATRIX_FROM = 5
"""From this many modalities the modality x node matrix (:func:`node_matrix`) is the readable view."""
ABBREVIATE_FROM = 4
"""From this many modalities node labels in graphs use one-letter modality codes (with a key)."""

_ROW_PX = 84
_LEFT = 0.25  # share of the node area kept left of x = 0 for the layer names
_MIN_PLOT_PX = 130  # the least plot height of a graph (one row of nodes)
_LEFT_PX = 84  # ... and at least this many pixels ("12 modalities" at 11 px and a gap)
_MARGIN_L = 10
_MARGIN_R = 20
_MARGIN_R_BAR = 110  # room for a colour bar


def modality_codes(modalities: Sequence[str]) -> dict[str, str]:
    """A short code per modality for crowded labels: the capitalised first letter when these are
    distinct letters, else A, B, C, ... in modality order."""
    mods = [str(m) for m in modalities]
    first = [m[:1].upper() for m in mods]
    if len(set(first)) == len(first) and all(c.isalpha() and c.isascii() for c in first):
        return dict(zip(mods, first))
    return {m: (chr(65 + i) if i < 26 else f"M{i + 1}") for i, m in enumerate(mods)}


def node_code(node: Iterable[str], codes: Mapping[str, str]) -> str:
    """A node written in modality codes (``"LV"``; joined by ``+`` when a code is longer than one letter)."""
    parts = [codes[m] for m in node]
    return ("" if all(len(p) == 1 for p in parts) else "+").join(parts)


def _codes_key(codes: Mapping[str, str]) -> str:
    return "Key: " + " · ".join(f"{c} = {m}" for m, c in codes.items())


def _text_px(text: str, size: float) -> float:
    """Estimated width (px) of one line of plain text in the figure font (a slight overestimate)."""
    w = 0.0
    for ch in text:
        w += 0.74 if (ch.isupper() or ch.isdigit() or ch in "mwMW@%") else 0.40 if ch in " ·.,:;|!il1'+" else 0.60
    return w * size + 4


def _wrap(text: str, max_chars: int) -> str:
    """``text`` wrapped at spaces to lines of at most ``max_chars`` characters (``<br>`` between)."""
    words, lines, cur = text.split(" "), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > max_chars:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}" if cur else w
    lines.append(cur)
    return "<br>".join(lines)


def _captions(fig: go.Figure, lines: Sequence[str], width: int, below: int = 8) -> None:
    """Reading hints under the plot area, each wrapped to the figure's width, stacked without
    overlap; the bottom margin grows to hold them. ``below``: px between the plot area and the first."""
    max_chars = max(30, int((width - 30) / (0.56 * 11)))
    shift = below
    for text in lines:
        wrapped = _wrap(text, max_chars)
        fig.add_annotation(text=wrapped, xref="paper", yref="paper", x=0, y=0, yshift=-shift, xanchor="left",
                           yanchor="top", showarrow=False, font=dict(size=11, color="#616161"), align="left")
        shift += 15 * (wrapped.count("<br>") + 1) + 3
    # The figure grows by what the margin grows: the captions never squash the plot area (a
    # one-row hierarchy under three caption lines kept 57 of its 202 px, its labels on the captions).
    old_b = int(fig.layout.margin.b or 0)
    new_b = max(old_b, shift + 10)
    upd: dict[str, Any] = {"margin": dict(b=new_b)}
    if fig.layout.height:
        upd["height"] = int(fig.layout.height) + new_b - old_b
    fig.update_layout(**upd)


def _cover_edges(nodes: Sequence[Node]) -> list[tuple[Node, Node]]:
    """The covering pairs (a above b) among ``nodes``: b is a proper subset of a with no drawn node
    between them (the Hasse diagram of the drawn nodes)."""
    sets = {n: frozenset(n) for n in nodes}
    out = []
    for a in nodes:
        below = [b for b in nodes if sets[b] < sets[a]]
        for b in below:
            if not any(sets[b] < sets[c] < sets[a] for c in below):
                out.append((a, b))
    return out


class _GraphLayout:
    """Where each drawn node goes so that no two labels overlap at ``width`` px: every layer (node
    size) is split over as many rows as its labels need, nodes evenly spread in each row."""

    def __init__(self, nodes: Sequence[Node], labels: Mapping[Node, str], sizes: Mapping[Node, float], *,
                 width: float, margin_r: float, font: int):
        self.font = font
        plot_px = max(160.0, width - _MARGIN_L - margin_r)
        # The layer names ("partial / 3 modalities") need _LEFT_PX left of the nodes: a quarter of
        # the node area when that is enough, else that many pixels (narrow columns).
        self.unit_px = min(plot_px / (1.0 + _LEFT), plot_px - _LEFT_PX)
        self.left = max(_LEFT, _LEFT_PX / self.unit_px)
        rows: list[list[Node]] = []
        self.layer_rows: dict[int, list[int]] = {}
        for s in sorted({len(n) for n in nodes}, reverse=True):
            layer = [n for n in nodes if len(n) == s]
            slot = max(max(_text_px(labels[n], font) + 14, _text_px(labels[n], font) / 2 + sizes[n] / 2 + 12,
                           sizes[n] + 12) for n in layer)
            cap = max(1, int(self.unit_px // slot))
            n_rows = math.ceil(len(layer) / cap)
            per = math.ceil(len(layer) / n_rows)
            chunks = [layer[i:i + per] for i in range(0, len(layer), per)]
            self.layer_rows[s] = list(range(len(rows), len(rows) + len(chunks)))
            rows += chunks
        self.n_rows = len(rows)
        self.pos: dict[Node, tuple[float, float]] = {}
        for i, row in enumerate(rows):
            y = float(self.n_rows - 1 - i)
            for k, n in enumerate(row):
                self.pos[n] = ((k + 0.5) / len(row), y)
        self.layer_y = {s: float(np.mean([self.n_rows - 1 - i for i in idx])) for s, idx in self.layer_rows.items()}
        self.plot_height = max(_ROW_PX * (self.n_rows + 0.1), _MIN_PLOT_PX)  # room for the colour bar's ticks

    def x_range(self) -> list[float]:
        return [-self.left, 1.0]

    def y_range(self) -> list[float]:
        return [-0.65, self.n_rows - 0.55]


def _layer_name(size: int, n_modalities: int) -> str:
    lv = "global" if size == n_modalities else "private" if size == 1 else "partial"
    return f"<b>{lv}</b><br>{size} modalit{'ies' if size != 1 else 'y'}"


def _graph_traces(
    nodes: Sequence[Node],
    layout: _GraphLayout,
    n_modalities: int,
    *,
    labels: Mapping[Node, str],
    present: Mapping[Node, bool],
    sizes: Mapping[Node, float],
    hover: Mapping[Node, str],
    values: Mapping[Node, float] | None,
    value_name: str,
    value_format: str,
    cmin: float,
    cmax: float,
    highlight: set[Node],
    absent_name: str,
    edges: Sequence[tuple[Node, Node]],
    showlegend: bool = True,
    show_colorbar: bool = True,
    opacity: Mapping[Node, float] | None = None,
) -> list[go.Scatter]:
    """The traces of one hierarchy panel: edges, node markers by level (or by value), absent nodes.
    Every label sits under its marker (``bottom center``) at the position ``layout`` gave it."""
    pos = layout.pos
    M = n_modalities
    traces: list[go.Scatter] = []

    # Edges: solid between present nodes, dotted (lighter) when an end is absent.
    for solid in (True, False):
        xs: list[float | None] = []
        ys: list[float | None] = []
        for a, b in edges:
            if (present[a] and present[b]) == solid:
                xs += [pos[a][0], pos[b][0], None]
                ys += [pos[a][1], pos[b][1], None]
        if xs:
            traces.append(go.Scatter(
                x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                name="inclusion" if solid else "inclusion (absent node)",
                line=dict(color=EDGE_COLOR if solid else "#D6D6D6", width=1.6 if solid else 1.0,
                          dash="solid" if solid else "dot"),
            ))

    def node_trace(group_nodes: list[Node], name: str, marker: dict, *, legend: bool, group: str) -> go.Scatter:
        line_color = [HIGHLIGHT_COLOR if n in highlight else "white" for n in group_nodes]
        line_width = [4.0 if n in highlight else 1.0 for n in group_nodes]
        return go.Scatter(
            x=[pos[n][0] for n in group_nodes],
            y=[pos[n][1] for n in group_nodes],
            mode="markers+text",
            name=name,
            text=[labels[n] for n in group_nodes],
            textposition="bottom center",
            textfont=dict(size=layout.font),
            hovertext=[hover[n] for n in group_nodes],
            hoverinfo="text",
            customdata=[node_label(n) for n in group_nodes],
            marker=dict(**marker, line=dict(color=line_color, width=line_width)),
            legendgroup=group,
            showlegend=legend,
            cliponaxis=False,
        )

    def alpha(group_nodes: list[Node]) -> float | list[float]:
        """Marker opacity of present nodes: 1, or per node from the stability check."""
        return 1.0 if not opacity else [float(opacity.get(n, 1.0)) for n in group_nodes]

    live = [n for n in nodes if present[n]]
    if values is None:
        for lv in LEVELS:
            group_nodes = [n for n in live if node_level(n, M) == lv]
            if not group_nodes:
                continue
            traces.append(node_trace(
                group_nodes, lv,
                dict(size=[sizes[n] for n in group_nodes], color=LEVEL_COLORS[lv], opacity=alpha(group_nodes)),
                legend=showlegend, group=lv,
            ))
    elif live:
        vals = [values.get(n, float("nan")) for n in live]
        colors = [v if v is not None and math.isfinite(v) else cmin for v in vals]
        marker = dict(
            size=[sizes[n] for n in live], color=colors, colorscale=VALUE_COLORSCALE, cmin=cmin, cmax=cmax,
            opacity=alpha(live), showscale=show_colorbar,
        )
        if show_colorbar:
            marker["colorbar"] = dict(title=dict(text=value_name, side="right"), thickness=14, len=0.75,
                                      x=1.0, xanchor="left", xpad=8,
                                      tickformat=".0%" if "%" in value_format else value_format)
        traces.append(node_trace(live, "present nodes", marker, legend=False, group="present"))
    dead = [n for n in nodes if not present[n]]
    if dead:
        traces.append(node_trace(
            dead, absent_name,
            dict(size=[sizes[n] for n in dead], color=ABSENT_COLOR, opacity=_ABSENT_OPACITY),
            legend=showlegend, group="absent",
        ))
    return traces


def _layer_annotations(layout: _GraphLayout, n_modalities: int, xref: str = "x", yref: str = "y") -> list[dict]:
    return [dict(text=_layer_name(size, n_modalities), x=-0.03, y=y, xref=xref, yref=yref,
                 xanchor="right", yanchor="middle", showarrow=False, align="right",
                 font=dict(size=11, color="#616161"))
            for size, y in sorted(layout.layer_y.items())]


def _graph_axes(fig: go.Figure, layout: _GraphLayout, **sel: Any) -> None:
    fig.update_xaxes(visible=False, range=layout.x_range(), fixedrange=True, **sel)
    fig.update_yaxes(visible=False, range=layout.y_range(), fixedrange=True, **sel)


def _graph_data(
    lattice: Lattice,
    ranks: Mapping[Node, int],
    values: Mapping[Node, float] | None,
    value_name: str,
    value_format: str,
    details: Mapping[Node, str],
    stability: Mapping[Node, dict] | None = None,
) -> dict[str, Any]:
    M = lattice.n_modalities
    rank = {n: int(ranks.get(n, 0) or 0) for n in lattice.nodes}
    present = {n: rank[n] > 0 for n in lattice.nodes}
    sizes = {n: _marker_size(rank[n]) if present[n] else _ABSENT_SIZE for n in lattice.nodes}
    hover = {}
    for n in lattice.nodes:
        lines = [f"<b>{node_label(n)}</b>", f"level: {node_level(n, M)}",
                 f"factors: {rank[n]}" + ("" if present[n] else " (absent)")]
        if values is not None:
            lines.append(f"{value_name}: {_fmt(values.get(n), value_format)}")
        if n in details:
            lines.append(details[n])
        if stability and n in stability:
            lines += _stability_lines(stability[n])
        hover[n] = "<br>".join(lines)
    out = dict(rank_text={n: str(rank[n]) for n in lattice.nodes}, present=present, sizes=sizes, hover=hover)
    if stability:
        out["opacity"] = {n: stability_opacity(stability[n]["found"]) for n in lattice.nodes
                          if present[n] and n in stability}
    return out


def _in_resamples(share: float, n: int | None) -> str:
    return f"{int(round(share * n))} of {n} resamples" if n else f"{share:.0%} of resamples"


def _stability_lines(s: Mapping[str, Any]) -> list[str]:
    """Hover lines of one node's stability: found in k of n resamples, same rank in k of n."""
    n = s.get("resamples")
    lines = [f"found in {_in_resamples(s['found'], n)}"]
    if s.get("same_rank") is not None:
        lines.append(f"same rank in {_in_resamples(s['same_rank'], n)}")
    return lines


def _stability_map(lattice: Lattice, stability: Any) -> dict[Node, dict]:
    """node -> {"found", "same_rank" (or None), "resamples" (or None)} from a stability frame
    (columns ``node``, ``found``, optional ``same_rank`` and ``resamples``, as returned by
    :meth:`hcl_explore.model.HCL.stability`) or a mapping node -> found share. Nodes not in the
    lattice and rows without a finite ``found`` are left out."""
    if stability is None:
        return {}

    def num(v: Any) -> float | None:
        try:
            f = float(v)
        except (TypeError, ValueError):
            return None
        return f if math.isfinite(f) else None

    rows: list[tuple[Any, dict]] = []
    if isinstance(stability, pd.DataFrame):
        for rec in stability.to_dict(orient="records"):
            n = num(rec.get("resamples"))
            rows.append((rec.get("node"), {"found": num(rec.get("found")), "same_rank": num(rec.get("same_rank")),
                                           "resamples": int(n) if n else None}))
    else:
        rows = [(k, {"found": num(v), "same_rank": None, "resamples": None}) for k, v in dict(stability).items()]
    out: dict[Node, dict] = {}
    for raw, rec in rows:
        if rec["found"] is None:
            continue
        try:
            node = _as_node(lattice, raw)
        except (KeyError, ValueError):
            continue
        rec["found"] = min(max(rec["found"], 0.0), 1.0)
        out[node] = rec
    return out


def _stability_hint(stab: Mapping[Node, dict]) -> str:
    ns = {r["resamples"] for r in stab.values() if r.get("resamples")}
    refits = f"the {ns.pop()} subsample refits" if len(ns) == 1 else "the subsample refits"
    return f"Opacity = share of {refits} that found the node (pale = unstable); hover for counts."


def _value_range(values: Mapping[Node, float] | None) -> tuple[float, float]:
    if not values:
        return 0.0, 1.0
    v = np.array([x for x in values.values() if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = min(0.0, float(v.min())), float(v.max())
    return lo, hi if hi > lo else lo + 1.0


def _graph_figure(layout: _GraphLayout, n_modalities: int, title: str, traces, *, margin_r: float,
                  **kw: Any) -> go.Figure:
    """A lattice graph figure: the traces, the level annotations, hidden axes, a height by rows."""
    fig = go.Figure()
    for t in traces:
        fig.add_trace(t)
    for a in _layer_annotations(layout, n_modalities):
        fig.add_annotation(**a)
    _graph_axes(fig, layout)
    _layout(fig, title, height=int(layout.plot_height + 70 + 40), margin=dict(l=_MARGIN_L, r=margin_r, t=70, b=40),
            legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1),
            plot_bgcolor="white", **kw)
    return fig


def _drawn_nodes(lattice: Lattice, present: Mapping[Node, bool], absent: str) -> list[Node]:
    if absent not in ("auto", "show", "hide"):
        raise ValueError(f"absent must be 'auto', 'show' or 'hide', got {absent!r}.")
    hide = absent == "hide" or (absent == "auto" and len(lattice.nodes) > COLLAPSE_ABOVE)
    return [n for n in lattice.nodes if present[n]] if hide else list(lattice.nodes)


def _node_labels(nodes: Sequence[Node], rank_text: Mapping[Node, str], modalities: Sequence[str]) -> tuple[dict, dict | None]:
    """(label per node, the modality codes used or None): ``"labs+notes · 2"``, or from
    :data:`ABBREVIATE_FROM` modalities ``"LN · 2"``."""
    if len(modalities) >= ABBREVIATE_FROM:
        codes = modality_codes(modalities)
        return {n: f"{node_code(n, codes)} · {rank_text[n]}" for n in nodes}, codes
    return {n: f"{node_label(n)} · {rank_text[n]}" for n in nodes}, None


def hierarchy_graph(
    lattice: Lattice,
    ranks: Mapping[Any, int],
    *,
    values: Mapping[Any, float] | None = None,
    highlight: Iterable[Any] = (),
    title: str = "Recovered hierarchy",
    value_name: str = "value",
    value_format: str = ".3f",
    value_range: tuple[float, float] | None = None,
    details: Mapping[Any, str] | None = None,
    stability: Any = None,
    absent: str = "auto",
    width: int = REF_WIDTH,
) -> go.Figure:
    """The hierarchy over modality subsets: candidate nodes, Hasse edges, factors per node.

    Parameters
    ----------
    lattice : Lattice
        Candidate nodes.
    ranks : mapping node -> int
        Factors per node; missing or 0 = absent (faded grey, smaller, still labelled).
        Nodes may be tuples or labels (``"labs+notes"``).
    values : mapping node -> float, optional
        Colour of present nodes on a continuous scale with a colorbar (e.g. variance explained
        in 0..1). Default: the level colour (:data:`LEVEL_COLORS`).
    highlight : iterable of nodes
        Drawn with a thick red outline (e.g. nodes selected by prediction).
    title : str
    value_name, value_format : str
        Colorbar title / hover name and format spec of ``values`` (e.g. ``".1%"``).
    value_range : (float, float), optional
        Colour scale limits; default ``(min(0, min value), max value)``.
    details : mapping node -> str, optional
        One extra hover line per node.
    stability : DataFrame or mapping node -> float, optional
        How often each node was found when the structure was refitted on subsamples: the frame of
        :meth:`hcl_explore.model.HCL.stability` (``node``, ``found``, ``same_rank``, ``resamples``)
        or node -> found share. Present nodes' opacity is :func:`stability_opacity` of their share
        (absent nodes stay faded), hover text gains "found in k of n resamples" (and "same rank in
        k of n"), and a second caption line says what opacity means. None: no change.
    absent : "auto", "show" or "hide"
        Whether candidate nodes found absent are drawn. "auto": drawn up to
        :data:`COLLAPSE_ABOVE` candidates; above, only the nodes found are drawn (edges join each
        to the nearest drawn nodes above and below) and a caption counts the absent ones.
    width : int
        The plot width (px) the layout is made for: each layer is split over as many rows as its
        labels need to stand apart at this width (wider is fine).

    Returns
    -------
    go.Figure
        Traces: edge lines, then node markers (one trace per level, or one coloured by value),
        then the absent nodes. Labels (``"labs+notes · 2"``; from :data:`ABBREVIATE_FROM`
        modalities in one-letter codes, ``"LN · 2"``, with a key under the graph) are in the
        markers' ``text``, node labels alone in ``customdata``, full names in the hover text.
    """
    ranks_n = _node_map(lattice, ranks)
    vals_n = _node_map(lattice, values) if values is not None else None
    hl = {_as_node(lattice, h) for h in highlight}
    cmin, cmax = value_range if value_range is not None else _value_range(vals_n)
    stab = _stability_map(lattice, stability)
    spec = _graph_data(lattice, ranks_n, vals_n, value_name, value_format, _node_map(lattice, details), stab)
    M = lattice.n_modalities
    nodes = _drawn_nodes(lattice, spec["present"], absent)
    labels, codes = _node_labels(nodes, spec.pop("rank_text"), lattice.modalities)
    margin_r = _MARGIN_R_BAR if vals_n is not None else _MARGIN_R
    lay = _GraphLayout(nodes, labels, spec["sizes"], width=width, margin_r=margin_r, font=12 if len(nodes) <= 15 else 11)
    edges = list(lattice.hasse().edges()) if len(nodes) == len(lattice.nodes) else _cover_edges(nodes)
    fig = _graph_figure(lay, M, title, _graph_traces(
        nodes, lay, M, labels=labels, values=vals_n, value_name=value_name, value_format=value_format, cmin=cmin,
        cmax=cmax, highlight=hl, absent_name="absent (0 factors)", edges=edges, **spec),
        margin_r=margin_r, hovermode="closest")
    hint = "Marker size = number of factors"
    hint += f"; colour = {value_name}" if vals_n is not None else "; colour = level"
    hint += "; grey = candidate node found absent" if len(nodes) == len(lattice.nodes) else ""
    if hl:
        hint += "; red outline = highlighted"
    lines = [hint + "."]
    if len(nodes) < len(lattice.nodes):
        n_abs = len(lattice.nodes) - len(nodes)
        lines.append(f"The {len(nodes)} nodes found are drawn; the other {n_abs} of the {len(lattice.nodes)} candidate "
                     "nodes were found absent (0 factors) and are not drawn.")
    if stab:
        lines.append(_stability_hint(stab))
    if codes:
        lines.append(_codes_key(codes))
    if not nodes:
        _note(fig, "No node was found (every candidate node has 0 factors).")
    _captions(fig, lines, width)
    return fig


def _node_variance(model: "HCL") -> tuple[dict[Node, float], dict[Node, str]]:
    """Mean share of variance explained over each node's modalities, and a per-modality hover line."""
    summ = model.summary()
    lat = model.lattice_
    vals: dict[Node, float] = {}
    details: dict[Node, str] = {}
    for _, row in summ.iterrows():
        node = lat.node(parse_node_label(row["node"]))
        shares = [float(row[f"var_{m}"]) for m in node]
        vals[node] = float(np.nanmean(shares)) if shares else float("nan")
        details[node] = "explains: " + ", ".join(f"{m} {s:.1%}" for m, s in zip(node, shares))
    return vals, details


def model_hierarchy(model: "HCL", *, highlight: Iterable[Any] = (), title: str = "Recovered hierarchy",
                    stability: Any = None, absent: str = "auto", width: int = REF_WIDTH) -> go.Figure:
    """:func:`hierarchy_graph` of a fitted HCL, coloured by the node's mean share of variance
    explained over its modalities (``summary()`` columns ``var_<m>``), per-modality shares in hover.
    ``stability`` (default: ``model.stability_`` when :meth:`~hcl_explore.model.HCL.stability`
    has run) fades present nodes that subsample refits did not always find. ``absent`` and
    ``width`` as in :func:`hierarchy_graph` (from :data:`COLLAPSE_ABOVE` candidates only the nodes
    found are drawn)."""
    vals, details = _node_variance(model)
    if stability is None:
        stability = getattr(model, "stability_", None)
    return hierarchy_graph(model.lattice_, model.ranks_, values=vals, highlight=highlight, title=title,
                           value_name="variance explained", value_format=".1%", details=details,
                           stability=stability, absent=absent, width=width)


def lattice_figure(
    lattice: Lattice,
    *,
    active: Iterable[Any] | None = None,
    ranks: Mapping[Any, int | str] | None = None,
    title: str = "Candidate lattice",
    width: int = REF_WIDTH,
) -> go.Figure:
    """The candidate lattice for the lattice editor: a Hasse diagram up to 4 modalities, from
    :data:`MATRIX_FROM` modalities the modality x node matrix (:func:`node_matrix`, one column per
    node). Every node is drawn (clickable: ``customdata`` is its label).

    Parameters
    ----------
    lattice : Lattice
    active : iterable of nodes, optional
        Nodes switched on (default all); the others, and nodes with rank 0, are faded ("off").
    ranks : mapping node -> int or "auto", optional
        Shown in the label (``"labs · auto"``, ``"labs+notes · 2"``); default "auto".
    title : str
    width : int
        Plot width (px) the layout is made for (see :func:`hierarchy_graph`).
    """
    act = {_as_node(lattice, a) for a in active} if active is not None else set(lattice.nodes)
    rk = _node_map(lattice, ranks)
    M = lattice.n_modalities
    rank_text, present, sizes, hover = {}, {}, {}, {}
    for n in lattice.nodes:
        r = rk.get(n, "auto")
        r = "auto" if r is None else r
        on = n in act and r != 0
        present[n] = on
        rank_text[n] = ("auto" if r == "auto" else str(int(r))) if on else "off"
        sizes[n] = (_marker_size(1.0) if r == "auto" else _marker_size(float(r))) if on else _ABSENT_SIZE
        hover[n] = "<br>".join([f"<b>{node_label(n)}</b>", f"level: {node_level(n, M)}",
                                "factors: " + (("chosen from the data" if r == "auto" else str(int(r))) if on
                                               else "off (not a candidate)")])
    if M >= MATRIX_FROM:
        cols = sorted(lattice.nodes, key=lambda n: (-len(n), lattice.nodes.index(n)))  # global first, private last
        return _matrix_figure(lattice, cols, present=present, rank_text=rank_text, hover=hover,
                              bars=None, title=title, width=width, off_name="switched off",
                              lines=["One column per candidate node: filled dots = the modalities it joins; "
                                     "grey columns are switched off. Click a dot to switch its node on or off; "
                                     "hover for the node's name and factors (auto = chosen from the data)."])
    nodes = list(lattice.nodes)
    labels, codes = _node_labels(nodes, rank_text, lattice.modalities)
    lay = _GraphLayout(nodes, labels, sizes, width=width, margin_r=_MARGIN_R, font=12 if len(nodes) <= 15 else 11)
    fig = _graph_figure(lay, M, title, _graph_traces(
        nodes, lay, M, labels=labels, present=present, sizes=sizes, hover=hover, values=None, value_name="",
        value_format="", cmin=0.0, cmax=1.0, highlight=set(), absent_name="switched off",
        edges=list(lattice.hasse().edges())), margin_r=_MARGIN_R)
    lines = ["Label = node · factors (auto = chosen from the data); grey = switched off."]
    if codes:
        lines.append(_codes_key(codes))
    _captions(fig, lines, width)
    return fig


def true_vs_recovered(lattice: Lattice, true_ranks: Mapping[Any, int], model: "HCL", *, width: int = 900) -> go.Figure:
    """The true hierarchy (left) and the recovered one (right) over the same layout.

    Parameters
    ----------
    lattice : Lattice
        Candidate lattice of the ground truth; nodes of the model's lattice are added if missing.
    true_ranks : mapping node -> int
    model : HCL
        Fitted; its ``ranks_`` are drawn on the right (nodes it did not consider count as 0).
    width : int
        Plot width (px) of both panels together the layout is made for. Above
        :data:`COLLAPSE_ABOVE` candidates only the nodes present in the truth or the fit are drawn.
    """
    nodes = list(lattice.nodes) + [n for n in model.lattice_.nodes if n not in set(lattice.nodes)]
    lat = Lattice(lattice.modalities, nodes) if len(nodes) != len(lattice.nodes) else lattice
    tr = {n: int(v) for n, v in _node_map(lat, true_ranks).items()}
    rec = {n: int(model.ranks_.get(n, 0)) for n in lat.nodes}
    truth_r = {n: tr.get(n, 0) for n in lat.nodes}
    match = sum(truth_r[n] == rec[n] for n in lat.nodes)
    M = lat.n_modalities
    either = {n: truth_r[n] > 0 or rec[n] > 0 for n in lat.nodes}
    drawn = _drawn_nodes(lat, either, "auto")
    spacing = 0.04
    panel_w = (width - _MARGIN_L - _MARGIN_R) * (1 - spacing) / 2
    specs, all_labels = [], {}
    for ranks, other, other_name in ((truth_r, rec, "recovered"), (rec, truth_r, "true")):
        details = {n: f"{other_name} factors: {other[n]}" + ("" if other[n] == ranks[n] else " (differs)")
                   for n in lat.nodes}
        spec = _graph_data(lat, ranks, None, "", "", details)
        labels, codes = _node_labels(drawn, spec.pop("rank_text"), lat.modalities)
        specs.append((spec, labels))
        for n in drawn:  # the layout must fit the longer label of each node
            if len(labels[n]) > len(all_labels.get(n, "")):
                all_labels[n] = labels[n]
    size_max = {n: max(specs[0][0]["sizes"][n], specs[1][0]["sizes"][n]) for n in drawn}
    lay = _GraphLayout(drawn, all_labels, size_max, width=panel_w + _MARGIN_L + _MARGIN_R, margin_r=_MARGIN_R,
                       font=12 if len(drawn) <= 15 else 11)
    edges = list(lat.hasse().edges()) if len(drawn) == len(lat.nodes) else _cover_edges(drawn)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=spacing, subplot_titles=(
        "True hierarchy", f"Recovered by HCL ({match} of {len(lat.nodes)} node ranks match)"))
    for col, (spec, labels) in enumerate(specs, start=1):
        for t in _graph_traces(drawn, lay, M, labels=labels, values=None, value_name="", value_format="", cmin=0.0,
                               cmax=1.0, highlight=set(), absent_name="absent (0 factors)", edges=edges,
                               showlegend=col == 1, **spec):
            fig.add_trace(t, row=1, col=col)
    for a in _layer_annotations(lay, M, "x", "y"):
        fig.add_annotation(**a)
    _graph_axes(fig, lay)
    # Subplot titles sit just above each panel; the legend goes under the graph, with the captions.
    _layout(fig, "True vs recovered hierarchy", height=int(lay.plot_height + 100 + 40),
            margin=dict(l=_MARGIN_L, r=_MARGIN_R, t=100, b=40), plot_bgcolor="white", showlegend=False)
    lines = ["Same layout in both panels; marker size = number of factors; colour = level (blue global, green "
             "partial, orange private); grey = absent node."]
    if len(drawn) < len(lat.nodes):
        lines.append(f"Drawn: the {len(drawn)} nodes present in the truth or the fit; the other "
                     f"{len(lat.nodes) - len(drawn)} candidate nodes are absent in both.")
    if M >= ABBREVIATE_FROM:
        lines.append(_codes_key(modality_codes(lat.modalities)))
    _captions(fig, lines, width)
    return fig


def _matrix_figure(lattice: Lattice, columns: Sequence[Node], *, present: Mapping[Node, bool],
                   rank_text: Mapping[Node, str], hover: Mapping[Node, str], bars: Mapping[Node, float] | None,
                   title: str, width: int, off_name: str, lines: Sequence[str],
                   highlight: set[Node] = frozenset(), opacity: Mapping[Node, float] | None = None,
                   bar_name: str = "factors", max_columns: int = 300) -> go.Figure:
    """The modality x node matrix: one column per node (filled dots = its modalities, joined by a
    line; grey = off/absent), modality names as row labels, optionally a bar per column on top."""
    M = lattice.n_modalities
    mods = list(lattice.modalities)
    cols = list(columns)[:max_columns]
    lines = list(lines)
    if len(columns) > max_columns:
        lines.append(f"The first {max_columns} of {len(columns)} nodes are drawn.")
    k = len(cols)
    plot_px = max(160.0, width - 140 - _MARGIN_R)  # room for the modality names on the left
    col_px = plot_px / max(k, 1)
    dot = float(min(14.0, max(4.0, 0.7 * col_px)))
    with_bars = bars is not None
    fig = make_subplots(rows=2 if with_bars else 1, cols=1, shared_xaxes=True, vertical_spacing=0.03,
                        row_heights=[0.35, 0.65] if with_bars else None)
    row = 2 if with_bars else 1
    yidx = {m: M - 1 - j for j, m in enumerate(mods)}  # first modality on top
    # background: every cell a small grey dot
    fig.add_trace(go.Scatter(
        x=[i for i in range(k) for _ in mods], y=[yidx[m] for _ in cols for m in mods], mode="markers",
        marker=dict(size=dot * 0.55, color="#E6E6E6"), hoverinfo="skip", showlegend=False, name="cell",
        customdata=[node_label(n) for n in cols for _ in mods],
    ), row=row, col=1)
    xs, ys = [], []
    for i, n in enumerate(cols):
        ys_n = sorted(yidx[m] for m in n)
        if len(ys_n) > 1:
            xs += [i, i, None]
            ys += [ys_n[0], ys_n[-1], None]
    if xs:
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=EDGE_COLOR, width=max(1.0, dot / 5)),
                                 hoverinfo="skip", showlegend=False, name="joins"), row=row, col=1)
    groups = [(lv, [i for i, n in enumerate(cols) if present[n] and node_level(n, M) == lv], LEVEL_COLORS[lv])
              for lv in LEVELS] + [(off_name, [i for i, n in enumerate(cols) if not present[n]], ABSENT_COLOR)]
    for name, idx, color in groups:
        if not idx:
            continue
        pts = [(i, m) for i in idx for m in cols[i]]
        op = [float((opacity or {}).get(cols[i], 1.0)) if present[cols[i]] else 0.6 for i, _ in pts]
        fig.add_trace(go.Scatter(
            x=[i for i, _ in pts], y=[yidx[m] for _, m in pts], mode="markers", name=name,
            marker=dict(size=dot, color=color, opacity=op,
                        line=dict(color=[HIGHLIGHT_COLOR if cols[i] in highlight else "white" for i, _ in pts],
                                  width=[3.0 if cols[i] in highlight else 0.5 for i, _ in pts])),
            customdata=[node_label(cols[i]) for i, _ in pts], hovertext=[hover[cols[i]] for i, _ in pts],
            hoverinfo="text", legendgroup=name,
        ), row=row, col=1)
    if with_bars:
        show_text = col_px >= 22
        fig.add_trace(go.Bar(
            x=list(range(k)), y=[float(bars.get(n, 0.0)) for n in cols], name=bar_name, showlegend=False,
            marker=dict(color=[LEVEL_COLORS[node_level(n, M)] if present[n] else ABSENT_COLOR for n in cols],
                        line=dict(color=[HIGHLIGHT_COLOR if n in highlight else "white" for n in cols],
                                  width=[3.0 if n in highlight else 0.0 for n in cols])),
            text=[rank_text[n] for n in cols] if show_text else None, textposition="outside" if show_text else None,
            cliponaxis=False, customdata=[node_label(n) for n in cols], hovertext=[hover[n] for n in cols],
            hoverinfo="text",
        ), row=1, col=1)
        fig.update_yaxes(title_text=bar_name, row=1, col=1, rangemode="tozero")
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, range=[-0.7, k - 0.3], fixedrange=True)
    fig.update_yaxes(tickmode="array", tickvals=[yidx[m] for m in mods], ticktext=mods, range=[-0.7, M - 0.3],
                     showgrid=False, zeroline=False, fixedrange=True, row=row, col=1, automargin=True)
    matrix_px = 26 * M + 30
    bar_px = 150 if with_bars else 0
    _layout(fig, title, height=int(matrix_px + bar_px + 80 + 40), margin=dict(l=_MARGIN_L, r=_MARGIN_R, t=80, b=40),
            legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1), plot_bgcolor="white",
            hovermode="closest")
    _captions(fig, lines, width)
    return fig


def node_matrix(
    lattice: Lattice,
    ranks: Mapping[Any, int],
    *,
    highlight: Iterable[Any] = (),
    title: str = "Nodes found (modality x node)",
    details: Mapping[Any, str] | None = None,
    stability: Any = None,
    absent: str = "auto",
    width: int = REF_WIDTH,
) -> go.Figure:
    """The hierarchy as a modality x node matrix ("upset" style), readable at any number of
    modalities: one column per node, filled dots on the rows of the modalities it joins, a bar on
    top with its number of factors (coloured by level). Columns: global first, then partial nodes
    by size, then private ones. ``absent`` as in :func:`hierarchy_graph` (absent nodes are grey
    columns at the end when shown). Hover gives each node's full name and details; ``customdata``
    is the node label."""
    ranks_n = _node_map(lattice, ranks)
    hl = {_as_node(lattice, h) for h in highlight}
    stab = _stability_map(lattice, stability)
    spec = _graph_data(lattice, ranks_n, None, "", "", _node_map(lattice, details), stab)
    present = spec["present"]
    nodes = _drawn_nodes(lattice, present, absent)
    order = {lv: i for i, lv in enumerate(LEVELS)}
    M = lattice.n_modalities
    cols = sorted(nodes, key=lambda n: (not present[n], order[node_level(n, M)], -len(n)))
    lines = ["One column per node: filled dots = the modalities that share it; bar = its number of factors "
             "(colour = level); hover a column for its name."]
    if len(nodes) < len(lattice.nodes):
        lines.append(f"The {len(nodes)} nodes found are drawn; the other {len(lattice.nodes) - len(nodes)} of the "
                     f"{len(lattice.nodes)} candidate nodes were found absent.")
    if stab:
        lines.append("Paler dots = found in fewer of the subsample refits (hover for how many).")
    if hl:
        lines.append("Red outline = highlighted.")
    fig = _matrix_figure(lattice, cols, present=present, rank_text=spec["rank_text"], hover=spec["hover"],
                         bars={n: float(ranks_n.get(n, 0) or 0) for n in cols}, title=title, width=width,
                         off_name="absent (0 factors)", lines=lines, highlight=hl, opacity=spec.get("opacity"))
    if not nodes:
        _note(fig, "No node was found (every candidate node has 0 factors).")
    return fig


def model_matrix(model: "HCL", *, highlight: Iterable[Any] = (), title: str = "Nodes found (modality x node)",
                 stability: Any = None, width: int = REF_WIDTH) -> go.Figure:
    """:func:`node_matrix` of a fitted HCL (per-modality variance shares in the hover text)."""
    _, details = _node_variance(model)
    if stability is None:
        stability = getattr(model, "stability_", None)
    return node_matrix(model.lattice_, model.ranks_, highlight=highlight, title=title, details=details,
                       stability=stability, width=width)


# ---------------------------------------------------------------------------------------------
# variance and loadings


PARTIAL_COLORS: tuple[str, ...] = ("#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#8C564B", "#9467BD", "#F0E442",
                                   "#17BECF", "#BCBD22", "#E377C2", "#1B5E20", "#880E4F")
"""Distinct colours of the partial nodes in the variance split (then repeated with a hatch pattern)."""
_PATTERNS = ("", "/", "x", ".", "\\", "+")


def variance_figure(model: "HCL", *, width: int = REF_WIDTH) -> go.Figure:
    """How each modality's total variance splits across nodes and noise.

    One horizontal stacked bar per modality (first modality on top): the global node, each partial
    node, the private node, then noise = 1 - sum of the node shares (the node shares are rescaled
    to sum to 1 in the rare case they exceed it). Only present nodes appear, one trace per node.
    Colours: the global node in the global colour, every private node in the private colour (a
    modality has only one), each partial node its own colour from :data:`PARTIAL_COLORS` (a hatch
    pattern when there are more partial nodes than colours). The legend is grouped by level
    (global, partial, private, noise) with one entry for all private nodes, and sits under the bars.
    """
    summ = model.summary()
    mods = list(model.modalities_)
    lat = model.lattice_
    M = len(mods)
    rows = [r for _, r in summ.iterrows() if int(r["rank"]) > 0]
    order = {lv: i for i, lv in enumerate(LEVELS)}
    rows.sort(key=lambda r: (order[r["level"]], -int(r["size"])))  # stable: lattice order within a level
    shares = {}
    for r in rows:
        node = lat.node(parse_node_label(r["node"]))
        shares[node] = np.array([float(r[f"var_{m}"]) if m in node else 0.0 for m in mods])
    total = np.sum(list(shares.values()), axis=0) if shares else np.zeros(M)
    factor = np.where(total > 1.0, 1.0 / np.where(total > 0, total, 1.0), 1.0)
    noise = np.clip(1.0 - total * factor, 0.0, 1.0)
    codes = modality_codes(mods) if M >= ABBREVIATE_FROM else None

    fig = go.Figure()
    by_level: dict[str, list[Node]] = {}
    for node in shares:
        by_level.setdefault(node_level(node, M), []).append(node)
    titles = {"global": "global (all modalities)", "partial": "partial (some modalities)",
              "private": "private (one modality)"}
    for lv in LEVELS:
        nodes = by_level.get(lv, [])
        for i, node in enumerate(nodes):
            if lv == "partial":
                color = PARTIAL_COLORS[i % len(PARTIAL_COLORS)]
                pattern = _PATTERNS[(i // len(PARTIAL_COLORS)) % len(_PATTERNS)]
            else:
                color, pattern = LEVEL_COLORS[lv], ""
            x = [float(s * f) if m in node else None for s, f, m in zip(shares[node], factor, mods)]
            r = model.ranks_[node]
            label = node_label(node)
            short = label if codes is None or len(label) <= 28 else node_code(node, codes)
            name = ("each modality's own" if lv == "private" else f"{short} ({_factors(r)})")
            fig.add_trace(go.Bar(
                y=mods, x=x, orientation="h", name=name,
                marker=dict(color=color, line=dict(color="white", width=1),
                            **({"pattern": dict(shape=pattern, fgcolor="white", size=6)} if pattern else {})),
                texttemplate="%{x:.0%}", textposition="inside", insidetextanchor="middle",
                hovertemplate=(f"<b>{label}</b> ({lv} node, {_factors(r)})<br>"
                               "%{y}: %{x:.1%} of its variance<extra></extra>"),
                customdata=[label] * M, legendgroup=lv, showlegend=not (lv == "private" and i > 0),
                legendgrouptitle=dict(text=titles[lv]) if i == 0 else None,
            ))
    fig.add_trace(go.Bar(
        y=mods, x=[float(v) for v in noise], orientation="h", name="noise (unexplained)",
        marker=dict(color=NOISE_COLOR, line=dict(color="white", width=1)),
        texttemplate="%{x:.0%}", textposition="inside", insidetextanchor="middle", textfont=dict(color="#424242"),
        hovertemplate="<b>noise</b><br>%{y}: %{x:.1%} of its variance not explained by any node<extra></extra>",
        legendgroup="noise", legendgrouptitle=dict(text="not explained"),
    ))
    n_entries = sum(1 for t in fig.data if t.showlegend is not False)
    n_groups = len(by_level) + 1
    legend_px = 20 * n_entries + 22 * n_groups
    bars_px = 60 + 34 * M
    _layout(fig, "Where each modality's variance comes from", barmode="stack",
            height=int(120 + max(bars_px, legend_px + 10)),
            margin=dict(l=20, r=20, t=60, b=60), uniformtext=dict(minsize=10, mode="hide"),
            legend=dict(traceorder="grouped", orientation="v", x=1.02, xanchor="left", y=1, yanchor="top",
                        groupclick="toggleitem", font=dict(size=12)))
    fig.update_xaxes(title_text="share of the modality's total variance", tickformat=".0%", range=[0, 1])
    fig.update_yaxes(title_text="modality", autorange="reversed", automargin=True)
    if codes is not None and any(len(node_label(n)) > 28 for n in by_level.get("partial", [])):
        _captions(fig, [_codes_key(codes)], width, below=45)
    return fig


def _node_arg(model: "HCL", node: Any) -> Node:
    return _as_node(model.lattice_, node)


def top_loadings(model: "HCL", node: Any, top: int = 15) -> pd.DataFrame:
    """The ``top`` features of a node with the largest loading norm across its factors.

    Loadings are read from ``model.W_`` in the model's transformed units (standardized features
    when the model standardized; ``loadings_`` = these times ``scale_``), so features in different
    units rank fairly. Features of all the node's modalities compete.

    Parameters
    ----------
    model : HCL (fitted)
    node : tuple, label (``"labs+notes"``) or modality name (private node)
    top : int

    Returns
    -------
    DataFrame with columns ``modality, feature, factor_1 .. factor_r, norm``; at most ``top`` rows,
    largest norm first (ties in feature order). Empty (no factor columns) for an absent node.
    """
    from .linear import block_slices, node_columns

    nd = _node_arg(model, node)
    r = int(model.ranks_.get(nd, 0))
    if r == 0:
        return pd.DataFrame(columns=["modality", "feature", "norm"])
    cols = node_columns(model.nodes_, model.ranks_)[nd]
    sl = block_slices(model.modalities_, model.dims_)
    mods = [m for m in model.modalities_ if m in nd]
    blocks = [np.asarray(model.W_[sl[m], cols], dtype=float) for m in mods]
    norms = np.concatenate([np.linalg.norm(B, axis=1) for B in blocks])
    which = np.concatenate([np.full(B.shape[0], j) for j, B in enumerate(blocks)])
    local = np.concatenate([np.arange(B.shape[0]) for B in blocks])
    k = int(min(max(top, 0), norms.size))
    idx = np.argsort(-norms, kind="stable")[:k]
    data: dict[str, Any] = {
        "modality": [mods[which[i]] for i in idx],
        "feature": [str(model.feature_names_[mods[which[i]]][local[i]]) for i in idx],
    }
    for f in range(r):
        data[f"factor_{f + 1}"] = [float(blocks[which[i]][local[i], f]) for i in idx]
    data["norm"] = norms[idx].astype(float)
    return pd.DataFrame(data)


def loadings_figure(model: "HCL", node: Any, top: int = 15) -> go.Figure:
    """Heatmap of a node's :func:`top_loadings`: rows "modality · feature" (largest norm on top),
    columns "factor 1..r", diverging colour scale centred at 0; only ``top`` rows are sent."""
    nd = _node_arg(model, node)
    df = top_loadings(model, nd, top)
    label = node_label(nd)
    codes = modality_codes(model.modalities_)
    long = len(label) > 36
    title = f"Top features of node {node_code(nd, codes) if long else label}"
    fig = go.Figure()
    if df.empty:
        _layout(fig, title, height=300)
        return _note(fig, f"Node {label} has no factors (found absent), so it has no loadings.")
    fcols = [c for c in df.columns if c.startswith("factor_")]
    z = df[fcols].to_numpy(dtype=float)
    zmax = float(np.max(np.abs(z))) or 1.0
    rows = [f"{m} · {f}" for m, f in zip(df["modality"], df["feature"])]
    xs = [f"factor {i + 1}" for i in range(len(fcols))]
    norm = df["norm"].to_numpy(dtype=float)
    fig.add_trace(go.Heatmap(
        z=z.astype(np.float32), x=xs, y=rows, zmid=0.0, zmin=-zmax, zmax=zmax, colorscale=LOADING_COLORSCALE,
        customdata=np.repeat(norm[:, None], len(fcols), axis=1).astype(np.float32),
        hovertemplate="<b>%{y}</b><br>%{x}: loading %{z:.3f}<br>norm over factors: %{customdata:.3f}<extra></extra>",
        colorbar=dict(title=dict(text="loading", side="right"), thickness=14),
        xgap=1, ygap=1,
    ))
    _layout(fig, title, height=150 + 22 * len(rows), margin=dict(l=20, r=20, t=60, b=50))
    fig.update_yaxes(autorange="reversed", title_text="", automargin=True, type="category")
    # Factor names under the heatmap ("1", "2", ...; the axis says "factor"): never over the title.
    fig.update_xaxes(side="bottom", title_text="factor", type="category", tickangle=0,
                     tickvals=xs, ticktext=[str(i + 1) for i in range(len(fcols))],
                     tickfont=dict(size=11 if len(fcols) <= 20 else 9))
    units = "standardized units" if getattr(model, "standardized_", False) else "the model's fitted units"
    # The captions start at the heatmap's left edge, right of the feature names.
    name_px = max(_text_px(r, 12) for r in rows) if rows else 0
    lines = [f"Top {len(rows)} features by loading norm across the node's factors ({units}); "
             "red = positive, blue = negative; factor signs are arbitrary."]
    if long:
        lines.append(f"Node {node_code(nd, codes)} = {' + '.join(nd)}.")
    _captions(fig, lines, int(REF_WIDTH - name_px - 60), below=45)
    return fig


# ---------------------------------------------------------------------------------------------
# scores


def _color_kind(c: np.ndarray) -> str:
    if c.dtype.kind in "biuf":
        v = c.astype(float)
        vals = np.unique(v[np.isfinite(v)])
        # A few whole numbers (digits 0-9, a stage 1-4) are classes: a legend, not a colour bar.
        whole = vals.size <= 20 and np.all(vals == np.round(vals))
        return "categorical" if vals.size <= 2 or whole else "continuous"
    return "categorical"


def scores_figure(
    scores: np.ndarray,
    *,
    color: Sequence | np.ndarray | None = None,
    color_name: str = "outcome",
    title: str = "Factor scores",
    max_points: int = MAX_POINTS,
    seed: int = SEED,
) -> go.Figure:
    """Scatter of one node's scores: factor 1 vs factor 2 (a jittered strip when r == 1).

    Parameters
    ----------
    scores : array (n,) or (n, r)
    color : array (n,), optional
        Binary / continuous numbers (NaN = no value, drawn grey) or categorical labels.
    color_name : str
        Legend / colorbar title.
    title : str
    max_points, seed : int
        At most ``max_points`` samples are drawn, chosen with ``seed`` (the caption says so).
    """
    S = np.asarray(scores, dtype=float)
    if S.ndim == 1:
        S = S[:, None]
    n, r = S.shape
    idx = _subsample(n, max_points, seed)
    fig = go.Figure()
    if r == 0 or n == 0:
        _layout(fig, title, height=420)
        return _note(fig, "No scores to show (the node has no factors).")
    x = S[idx, 0]
    if r >= 2:
        y = S[idx, 1]
        ylab = "factor 2"
    else:
        y = np.random.default_rng(seed + 1).uniform(-0.35, 0.35, size=idx.size)
        ylab = ""
    c = None if color is None else np.asarray(color)
    if c is not None and c.shape[0] != n:
        raise ValueError(f"color has {c.shape[0]} values for {n} samples.")
    ytpl = "factor 2: %{y:.2f}<br>" if r >= 2 else ""
    base_tpl = "factor 1: %{x:.2f}<br>" + ytpl

    def add(mask: np.ndarray, name: str, marker: dict, extra: str = "", customdata=None, legend: bool = True) -> None:
        fig.add_trace(go.Scatter(
            x=_f32(x[mask]), y=_f32(y[mask]), mode="markers", name=name, showlegend=legend,
            marker=dict(size=5, opacity=0.7, **marker), customdata=customdata,
            hovertemplate=base_tpl + extra + "<extra></extra>",
        ))

    if c is None:
        add(np.ones(idx.size, bool), "samples", dict(color=LEVEL_COLORS["global"]), legend=False)
    else:
        cs = c[idx]
        kind = _color_kind(c)
        if kind == "continuous":
            v = cs.astype(float)
            ok = np.isfinite(v)
            add(ok, color_name, dict(color=_f32(v[ok]), colorscale=CONTINUOUS_COLORSCALE, showscale=True,
                                     colorbar=dict(title=dict(text=color_name, side="right"), thickness=14)),
                f"{color_name}: %{{customdata:.3g}}", customdata=_f32(v[ok]), legend=False)
            if (~ok).any():
                add(~ok, f"{color_name} missing", dict(color=ABSENT_COLOR), f"{color_name}: missing")
        else:
            if cs.dtype.kind in "biuf":
                v = cs.astype(float)
                missing = ~np.isfinite(v)
                labels = np.array([f"{t:g}" if np.isfinite(t) else "" for t in v], dtype=object)
                cats = [f"{t:g}" for t in np.unique(c.astype(float)[np.isfinite(c.astype(float))])]
            else:
                missing = np.asarray(pd.isna(cs), dtype=bool)
                labels = np.array(["" if mi else str(t) for t, mi in zip(cs, missing)], dtype=object)
                full = pd.Series(c).dropna().astype(str)
                cats = list(full.value_counts(sort=True).sort_index(kind="stable").index)
                if len(cats) > len(CATEGORY_COLORS):  # most frequent first, the rest lumped
                    counts = full.value_counts()
                    cats = list(counts.index[: len(CATEGORY_COLORS) - 1])
                    other = ~missing & ~np.isin(labels, cats)
                    labels[other] = "other"
                    cats.append("other")
            for i, cat in enumerate(cats):
                m = labels == cat
                if m.any():
                    add(m, f"{color_name} = {cat}", dict(color=CATEGORY_COLORS[i % len(CATEGORY_COLORS)]),
                        f"{color_name}: {cat}")
            if missing.any():
                add(missing, f"{color_name} missing", dict(color=ABSENT_COLOR), f"{color_name}: missing")
    _layout(fig, title, height=480, margin=dict(l=20, r=20, t=60, b=90), legend=dict(title=dict(text=color_name)))
    fig.update_xaxes(title_text="factor 1", zeroline=True)
    fig.update_yaxes(title_text=ylab, zeroline=r >= 2, visible=r >= 2)
    shown = f"{idx.size:,} of {n:,} samples" + (f" (random subsample, seed {seed})" if idx.size < n else "")
    _caption(fig, shown + ("" if r >= 2 else "; vertical position is random jitter") + ".", shift=50)
    return fig


# ---------------------------------------------------------------------------------------------
# data overlap


def overlap_figure(observed: np.ndarray, modalities: Sequence[str], *, max_patterns: int = 40) -> go.Figure:
    """How samples overlap across modalities.

    Parameters
    ----------
    observed : bool array (n, M)
        Which modalities each sample has (``MultimodalData.observed``).
    modalities : sequence of M str
    max_patterns : int
        The most frequent patterns shown; the rest are summed into one "other patterns" bar.

    Returns
    -------
    go.Figure
        Left: one bar per observation pattern (e.g. "labs+vitals+notes"), most frequent first,
        coloured by level (all modalities = global colour, one = private). Right: samples per
        modality.
    """
    obs = np.asarray(observed, dtype=bool)
    mods = [str(m) for m in modalities]
    if obs.ndim != 2 or obs.shape[1] != len(mods):
        raise ValueError(f"observed has shape {obs.shape}; expected (n, {len(mods)}).")
    n, M = obs.shape
    codes = obs.astype(np.int64) @ (1 << np.arange(M, dtype=np.int64))
    uniq, counts = np.unique(codes, return_counts=True)
    order = np.lexsort((uniq, -counts))  # by count, ties by code
    uniq, counts = uniq[order], counts[order]
    labels, colors, sizes = [], [], []
    for code in uniq:
        have = [mods[j] for j in range(M) if code >> j & 1]
        labels.append("+".join(have) if have else "(none)")
        sizes.append(len(have))
        colors.append(LEVEL_COLORS[node_level(have, M)] if have else ABSENT_COLOR)
    counts_l = [int(v) for v in counts]
    if len(labels) > max_patterns:
        rest = sum(counts_l[max_patterns - 1:])
        labels, colors, sizes = labels[: max_patterns - 1] + ["other patterns"], colors[: max_patterns - 1] + [ABSENT_COLOR], sizes[: max_patterns - 1] + [0]
        counts_l = counts_l[: max_patterns - 1] + [rest]
    share = [c / n if n else 0.0 for c in counts_l]
    codes = modality_codes(mods) if M >= ABBREVIATE_FROM else None
    if codes is not None:
        labels = [lab if lab in ("(none)", "other patterns") else node_code(lab.split("+"), codes) for lab in labels]
    horizontal = codes is not None or len(labels) > 12
    per = obs.sum(axis=0).astype(int)
    pattern_bar = dict(marker=dict(color=colors), name="pattern", showlegend=False,
                       text=[f"{c:,}" for c in counts_l], textposition="outside", cliponaxis=False,
                       customdata=[[s, k] for s, k in zip(share, sizes)])
    mod_bar = dict(marker=dict(color="#607D8B"), name="modality", showlegend=False,
                   text=[f"{int(v):,}" for v in per], textposition="outside", cliponaxis=False,
                   customdata=[float(v) / n if n else 0.0 for v in per])
    title = f"Which modalities the {n:,} samples have"
    if not horizontal:
        fig = make_subplots(rows=1, cols=2, column_widths=[0.72, 0.28], horizontal_spacing=0.12,
                            subplot_titles=("Samples per observation pattern", "Samples per modality"))
        fig.add_trace(go.Bar(x=labels, y=counts_l, **pattern_bar,
                             hovertemplate="<b>%{x}</b><br>%{y:,} samples (%{customdata[0]:.1%})<extra></extra>"),
                      row=1, col=1)
        fig.add_trace(go.Bar(x=mods, y=[int(v) for v in per], **mod_bar,
                             hovertemplate="<b>%{x}</b><br>%{y:,} samples have it (%{customdata:.1%})<extra></extra>"),
                      row=1, col=2)
        _layout(fig, title, height=460, margin=dict(l=20, r=20, t=80, b=60))
        fig.update_yaxes(title_text="samples", row=1, col=1)
        fig.update_yaxes(title_text="samples", row=1, col=2)
        fig.update_xaxes(title_text="observation pattern (modalities present)", tickangle=-30, type="category",
                         row=1, col=1)
        fig.update_xaxes(title_text="modality", type="category", row=1, col=2)
        return fig
    # Many modalities or patterns: horizontal bars, one readable row per pattern / modality.
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.22,
                        subplot_titles=("Samples per observation pattern", "Samples per modality"))
    fig.add_trace(go.Bar(y=labels, x=counts_l, orientation="h", **pattern_bar,
                         hovertemplate="<b>%{y}</b><br>%{x:,} samples (%{customdata[0]:.1%})<extra></extra>"),
                  row=1, col=1)
    fig.add_trace(go.Bar(y=mods, x=[int(v) for v in per], orientation="h", **mod_bar,
                         hovertemplate="<b>%{y}</b><br>%{x:,} samples have it (%{customdata:.1%})<extra></extra>"),
                  row=1, col=2)
    rows_px = 20 * max(len(labels), M)
    _layout(fig, title, height=int(160 + rows_px), margin=dict(l=20, r=40, t=80, b=60))
    fig.update_yaxes(type="category", autorange="reversed", automargin=True, row=1, col=1)
    fig.update_yaxes(type="category", autorange="reversed", automargin=True, row=1, col=2)
    fig.update_xaxes(title_text="samples", row=1, col=1)
    fig.update_xaxes(title_text="samples", row=1, col=2)
    if codes is not None:
        _captions(fig, [_codes_key(codes) + " (a pattern lists the codes of the modalities present)"], REF_WIDTH,
                  below=45)
    return fig


# ---------------------------------------------------------------------------------------------
# prediction


def _report_models(report: "PredictionReport") -> list[str]:
    names = list(report.curves)
    return sorted(names, key=lambda m: (m != "HCL", names.index(m)))


def _metric_of(report: "PredictionReport", name: str, model: str) -> float:
    try:
        return float(report.metric(name, model))
    except (KeyError, ValueError, TypeError):
        return float("nan")


def curves_figure(report: "PredictionReport") -> go.Figure:
    """Held-out prediction curves of a :class:`PredictionReport`, HCL first (thicker line).

    Binary: ROC (left) and precision-recall (right), AUROC / AUPRC in the legend, chance lines
    (diagonal; the prevalence). Continuous: observed vs predicted scatter (at most
    :data:`MAX_POINTS` points), HCL shown and baselines toggled off (``visible="legendonly"``).
    Curves are thinned to at most :data:`MAX_CURVE_POINTS` points (end points kept).
    """
    if report.task == "multiclass":
        # No one curve for K classes: the confusion matrix, in the outcome's own labels.
        from .predict import confusion_figure

        return confusion_figure(report)
    models = _report_models(report)
    if report.task == "binary":
        fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                            subplot_titles=("ROC curve (test part)", "Precision–recall curve (test part)"))
        prevalence = None
        for i, name in enumerate(models):
            c = report.curves[name]
            roc, pr = c["roc"], c["pr"]
            auroc, auprc = _metric_of(report, "auroc", name), _metric_of(report, "auprc", name)
            hcl = name == "HCL"
            line = dict(color=_model_color(i), width=3.5 if hcl else 2.0)
            legend = f"{name} (AUROC {_fmt(auroc, '.3f')}, AUPRC {_fmt(auprc, '.3f')})"
            k = _thin(len(roc))
            fpr, tpr = roc["fpr"].to_numpy(float)[k], roc["tpr"].to_numpy(float)[k]
            fig.add_trace(go.Scatter(
                x=_f32(fpr), y=_f32(tpr), mode="lines", name=legend, legendgroup=name, line=line,
                hovertemplate=f"<b>{name}</b><br>false positive rate %{{x:.2f}}<br>sensitivity %{{y:.2f}}<extra></extra>",
            ), row=1, col=1)
            k = _thin(len(pr))
            rec, prec = pr["recall"].to_numpy(float)[k], pr["precision"].to_numpy(float)[k]
            fig.add_trace(go.Scatter(
                x=_f32(rec), y=_f32(prec), mode="lines", name=legend, legendgroup=name, line=line,
                showlegend=False, line_shape="hv",
                hovertemplate=f"<b>{name}</b><br>recall %{{x:.2f}}<br>precision %{{y:.2f}}<extra></extra>",
            ), row=1, col=2)
            if prevalence is None and len(pr):
                prevalence = float(pr["precision"].iloc[-1])
        chance = dict(color="#9E9E9E", width=1.2, dash="dash")
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=chance, name="chance",
                                 legendgroup="chance", hoverinfo="skip"), row=1, col=1)
        if prevalence is not None:
            fig.add_trace(go.Scatter(x=[0, 1], y=[prevalence, prevalence], mode="lines", line=chance,
                                     name=f"chance (prevalence {prevalence:.1%})", legendgroup="chance",
                                     showlegend=False, hoverinfo="skip"), row=1, col=2)
        # A margin below 0 on both axes: the x axis' "0" and the y axis' "0" would otherwise meet at
        # the corner and overprint each other.
        xr, yr = [-0.04, 1.04], [-0.05, 1.05]
        fig.update_xaxes(title_text="1 − specificity (false positive rate)", range=xr, row=1, col=1)
        fig.update_yaxes(title_text="sensitivity (true positive rate)", range=yr, row=1, col=1)
        fig.update_xaxes(title_text="recall (sensitivity)", range=xr, row=1, col=2)
        fig.update_yaxes(title_text="precision (positive predictive value)", range=yr, row=1, col=2)
        # The legend sits at the figure's bottom edge (container coordinates) under a fixed margin,
        # not a share of the plot height below the axes: when it wraps to more rows (a narrow
        # column) it grows downwards instead of climbing over the axis titles.
        _layout(fig, f"How well {report.outcome or 'the outcome'} is predicted (held-out samples)", height=540,
                margin=dict(l=20, r=20, t=80, b=150),
                legend=dict(orientation="h", yref="container", yanchor="bottom", y=0.01, xanchor="left", x=0))
        return fig

    fig = go.Figure()
    lo, hi = np.inf, -np.inf
    for i, name in enumerate(models):
        sc = report.curves[name]["scatter"]
        idx = _subsample(len(sc), MAX_POINTS, SEED)
        obs = sc["observed"].to_numpy(float)[idx]
        pred = sc["predicted"].to_numpy(float)[idx]
        if obs.size:
            lo, hi = min(lo, obs.min(), pred.min()), max(hi, obs.max(), pred.max())
        hcl = name == "HCL"
        fig.add_trace(go.Scatter(
            x=_f32(obs), y=_f32(pred), mode="markers", name=f"{name} (R² {_fmt(_metric_of(report, 'r2', name), '.3f')})",
            marker=dict(color=_model_color(i), size=6 if hcl else 5, opacity=0.6),
            visible=True if hcl else "legendonly",
            hovertemplate=f"<b>{name}</b><br>observed %{{x:.3g}}<br>predicted %{{y:.3g}}<extra></extra>",
        ))
    if np.isfinite(lo):
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="perfect prediction",
                                 line=dict(color="#9E9E9E", dash="dash", width=1.2), hoverinfo="skip"))
    _layout(fig, f"Observed vs predicted {report.outcome or 'outcome'} (held-out samples)", height=500,
            margin=dict(l=20, r=20, t=60, b=40))
    fig.update_xaxes(title_text="observed")
    fig.update_yaxes(title_text="predicted")
    return fig


_METRIC_NAMES = {"auroc": "AUROC", "auprc": "AUPRC", "f1": "F1", "f1_macro": "macro-F1", "accuracy": "accuracy",
                 "r2": "R²",
                 "brier": "Brier score", "mse": "MSE", "mae": "MAE"}


def metrics_figure(report: "PredictionReport", *, metrics: Sequence[str] | None = None) -> go.Figure:
    """Grouped bars of the report's baselines table, HCL first with 95 % bootstrap intervals.

    Parameters
    ----------
    report : PredictionReport
    metrics : sequence of str, optional
        Default: auroc, auprc, f1, accuracy (binary) or r2 (continuous).
    """
    from .predict import main_metrics

    names = list(metrics) if metrics is not None else main_metrics(report.task)
    base = report.baselines
    names = [m for m in names if m in base.columns]
    models = list(base["model"])
    models = sorted(models, key=lambda m: (m != "HCL", models.index(m)))
    ci = report.metrics.set_index("metric") if len(report.metrics) else pd.DataFrame()
    xs = [_METRIC_NAMES.get(m, m) for m in names]
    fig = go.Figure()
    for i, model in enumerate(models):
        row = base[base["model"] == model].iloc[0]
        ys = [float(row[m]) if pd.notna(row[m]) else None for m in names]
        hcl = model == "HCL"
        kw: dict[str, Any] = {}
        hover = [f"<b>{model}</b><br>{x}: {_fmt(y, '.3f')}" for x, y in zip(xs, ys)]
        if hcl and len(ci):
            plus, minus = [], []
            for j, m in enumerate(names):
                lo = float(ci.loc[m, "ci_low"]) if m in ci.index else float("nan")
                hi = float(ci.loc[m, "ci_high"]) if m in ci.index else float("nan")
                y = ys[j]
                ok = y is not None and math.isfinite(lo) and math.isfinite(hi)
                plus.append(max(hi - y, 0.0) if ok else 0.0)
                minus.append(max(y - lo, 0.0) if ok else 0.0)
                if ok:
                    hover[j] += f"<br>95 % interval {lo:.3f} – {hi:.3f}"
            kw["error_y"] = dict(type="data", array=plus, arrayminus=minus, visible=True, color="#424242",
                                 thickness=1.5, width=5)
        fig.add_trace(go.Bar(
            x=xs, y=ys, name=model, marker=dict(color=_model_color(i), line=dict(color="#212121" if hcl else "white",
                                                                                width=1.5 if hcl else 0.5)),
            text=[_fmt(y, ".2f") for y in ys], textposition="inside", insidetextanchor="start",
            hovertext=hover, hoverinfo="text", **kw,
        ))
    # The legend under the plot (the bars keep the whole width of a narrow column), at the figure's
    # bottom edge below a fixed margin; a bar's value is printed only where it fits (never over its
    # neighbour's); the caption wrapped for a half-width column.
    _layout(fig, "HCL vs baselines on the held-out samples", barmode="group", height=520,
            margin=dict(l=20, r=20, t=60, b=170), uniformtext=dict(minsize=9, mode="hide"),
            legend=dict(orientation="h", yref="container", yanchor="bottom", y=0.01, xanchor="left", x=0))
    fig.update_yaxes(title_text="score (higher is better)", range=[0, 1.05] if report.task == "binary" else None)
    fig.update_xaxes(title_text="")
    if any(m in ("brier", "mse", "mae") for m in names):
        fig.update_yaxes(title_text="score")
    _captions(fig, ["Error bars: 95 % bootstrap interval of HCL over resamples of the test part."], 300, below=28)
    return fig


# ---------------------------------------------------------------------------------------------
# optimisation


def objective_figure(history: Sequence[float], *, title: str = "Refinement objective",
                     validation: Sequence[float] | None = None, x_label: str = "iteration") -> go.Figure:
    """Objective value per refinement iteration, or training loss per epoch with the validation
    loss beside it (log y axis when all values are positive).

    Parameters
    ----------
    history : sequence of float (n_iter,), possibly empty
    title : str
    validation : sequence of float (n_iter,), optional
        Validation loss per epoch (NaN where none was computed); drawn dashed.
    x_label : str
        ``"iteration"`` (linear refinement) or ``"epoch"`` (contrastive training).
    """
    h = np.asarray(list(history), dtype=float)
    fig = go.Figure()
    if h.size == 0:
        _layout(fig, title, height=360)
        return _note(fig, "No refinement iterations were recorded." if x_label == "iteration" else f"No {x_label}s were recorded.")
    k = _thin(h.size, 1000)
    mode = "lines+markers" if k.size <= 60 else "lines"
    name = "objective" if validation is None else "training"
    fig.add_trace(go.Scatter(
        x=(k + 1).astype(np.int32), y=h[k], mode=mode, name=name,
        line=dict(color=LEVEL_COLORS["global"], width=2), marker=dict(size=5),
        hovertemplate=f"{x_label} %{{x}}<br>{name} %{{y:.6g}}<extra></extra>",
    ))
    values = h[np.isfinite(h)]
    v = np.asarray(list(validation or []), dtype=float)[: h.size]
    if v.size and np.isfinite(v).any():
        kv = k[k < v.size]
        fig.add_trace(go.Scatter(
            x=(kv + 1).astype(np.int32), y=v[kv], mode=mode, name="validation",
            line=dict(color=LEVEL_COLORS["partial"], width=2, dash="dash"), marker=dict(size=5),
            hovertemplate=f"{x_label} %{{x}}<br>validation %{{y:.6g}}<extra></extra>",
        ))
        values = np.concatenate([values, v[np.isfinite(v)]])
    positive = bool(np.all(values > 0))
    _layout(fig, title, height=360, margin=dict(l=20, r=20, t=60, b=40), showlegend=len(fig.data) > 1)
    fig.update_xaxes(title_text=x_label)
    fig.update_yaxes(title_text=("objective" if validation is None else "loss") + (" (log scale)" if positive else ""),
                     type="log" if positive else "linear")
    return fig
