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
    "curves_figure",
    "hierarchy_graph",
    "lattice_figure",
    "loadings_figure",
    "metrics_figure",
    "model_hierarchy",
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


def _layer_name(size: int, n_modalities: int) -> str:
    lv = "global" if size == n_modalities else "private" if size == 1 else "partial"
    return f"<b>{lv}</b><br>{size} modalit{'ies' if size != 1 else 'y'}"


def _graph_traces(
    lattice: Lattice,
    *,
    rank_text: Mapping[Node, str],
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
    showlegend: bool = True,
    show_colorbar: bool = True,
    opacity: Mapping[Node, float] | None = None,
) -> list[go.Scatter]:
    """The traces of one hierarchy panel: edges, node markers by level (or by value), absent nodes."""
    pos = node_positions(lattice)
    M = lattice.n_modalities
    g = lattice.hasse()
    traces: list[go.Scatter] = []

    # Edges: solid between present nodes, dotted (lighter) when an end is absent.
    for solid in (True, False):
        xs: list[float | None] = []
        ys: list[float | None] = []
        for a, b in g.edges():
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

    sizes_in_layer: dict[float, int] = {}
    for n in lattice.nodes:
        sizes_in_layer[pos[n][1]] = sizes_in_layer.get(pos[n][1], 0) + 1
    n_layers = len(sizes_in_layer)

    def text_position(n: Node) -> str:
        y = pos[n][1]
        if sizes_in_layer[y] > 4:  # crowded layer: alternate labels above / below
            i = [m for m in lattice.nodes if pos[m][1] == y].index(n)
            return "top center" if i % 2 == 0 else "bottom center"
        if y == n_layers - 1 and n_layers > 1:
            return "top center"
        return "bottom center" if y == 0 else "top center"

    def node_trace(nodes: list[Node], name: str, marker: dict, *, legend: bool, group: str) -> go.Scatter:
        line_color = [HIGHLIGHT_COLOR if n in highlight else "white" for n in nodes]
        line_width = [4.0 if n in highlight else 1.0 for n in nodes]
        crowded = any(sizes_in_layer[pos[n][1]] > 4 for n in nodes)
        return go.Scatter(
            x=[pos[n][0] for n in nodes],
            y=[pos[n][1] for n in nodes],
            mode="markers+text",
            name=name,
            text=[f"{node_label(n)} · {rank_text[n]}" for n in nodes],
            textposition=[text_position(n) for n in nodes],
            textfont=dict(size=10 if crowded else 12),
            hovertext=[hover[n] for n in nodes],
            hoverinfo="text",
            customdata=[node_label(n) for n in nodes],
            marker=dict(**marker, line=dict(color=line_color, width=line_width)),
            legendgroup=group,
            showlegend=legend,
            cliponaxis=False,
        )

    def alpha(nodes: list[Node]) -> float | list[float]:
        """Marker opacity of present nodes: 1, or per node from the stability check."""
        return 1.0 if not opacity else [float(opacity.get(n, 1.0)) for n in nodes]

    live = [n for n in lattice.nodes if present[n]]
    if values is None:
        for lv in LEVELS:
            nodes = [n for n in live if node_level(n, M) == lv]
            if not nodes:
                continue
            traces.append(node_trace(
                nodes, lv, dict(size=[sizes[n] for n in nodes], color=LEVEL_COLORS[lv], opacity=alpha(nodes)),
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
                                      tickformat=".0%" if "%" in value_format else value_format)
        traces.append(node_trace(live, "present nodes", marker, legend=False, group="present"))
    dead = [n for n in lattice.nodes if not present[n]]
    if dead:
        traces.append(node_trace(
            dead, absent_name,
            dict(size=[sizes[n] for n in dead], color=ABSENT_COLOR, opacity=_ABSENT_OPACITY),
            legend=showlegend, group="absent",
        ))
    return traces


def _layer_annotations(lattice: Lattice, xref: str = "x", yref: str = "y") -> list[dict]:
    pos = node_positions(lattice)
    out = []
    for size in sorted({len(n) for n in lattice.nodes}):
        y = next(pos[n][1] for n in lattice.nodes if len(n) == size)
        out.append(dict(text=_layer_name(size, lattice.n_modalities), x=-0.03, y=y, xref=xref, yref=yref,
                        xanchor="right", yanchor="middle", showarrow=False, align="right",
                        font=dict(size=11, color="#616161")))
    return out


def _graph_axes(fig: go.Figure, lattice: Lattice, **sel: Any) -> None:
    n_layers = len({len(n) for n in lattice.nodes})
    fig.update_xaxes(visible=False, range=[-0.3, 1.04], fixedrange=True, **sel)
    fig.update_yaxes(visible=False, range=[-0.6, n_layers - 1 + 0.6], fixedrange=True, **sel)


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


def _graph_figure(lattice: Lattice, title: str, traces, **layout: Any) -> go.Figure:
    """A lattice graph figure: the traces, the level annotations, hidden axes, a height by layers."""
    fig = go.Figure()
    for t in traces:
        fig.add_trace(t)
    for a in _layer_annotations(lattice):
        fig.add_annotation(**a)
    _graph_axes(fig, lattice)
    n_layers = len({len(n) for n in lattice.nodes})
    _layout(fig, title, height=max(320, 150 * n_layers + 130), margin=dict(l=20, r=20, t=60, b=50),
            legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1),
            plot_bgcolor="white", **layout)
    return fig


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
) -> go.Figure:
    """The hierarchy over modality subsets: every candidate node, Hasse edges, factors per node.

    Parameters
    ----------
    lattice : Lattice
        Candidate nodes (all are drawn; see :func:`node_positions` for the layout).
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

    Returns
    -------
    go.Figure
        Traces: edge lines, then node markers (one trace per level, or one coloured by value),
        then the absent nodes. Labels (``"labs+notes · 2"``) are in the markers' ``text``,
        node labels alone in ``customdata``.
    """
    ranks_n = _node_map(lattice, ranks)
    vals_n = _node_map(lattice, values) if values is not None else None
    hl = {_as_node(lattice, h) for h in highlight}
    cmin, cmax = value_range if value_range is not None else _value_range(vals_n)
    stab = _stability_map(lattice, stability)
    spec = _graph_data(lattice, ranks_n, vals_n, value_name, value_format, _node_map(lattice, details), stab)
    fig = _graph_figure(lattice, title, _graph_traces(
        lattice, values=vals_n, value_name=value_name, value_format=value_format, cmin=cmin, cmax=cmax,
        highlight=hl, absent_name="absent (0 factors)", **spec), hovermode="closest")
    hint = "Marker size = number of factors"
    hint += f"; colour = {value_name}" if vals_n is not None else "; colour = level"
    hint += "; grey = candidate node found absent"
    if hl:
        hint += "; red outline = highlighted"
    _caption(fig, hint + ".")
    if stab:
        _caption(fig, _stability_hint(stab), shift=16)
        fig.update_layout(margin=dict(b=70), height=fig.layout.height + 20)
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
                    stability: Any = None) -> go.Figure:
    """:func:`hierarchy_graph` of a fitted HCL, coloured by the node's mean share of variance
    explained over its modalities (``summary()`` columns ``var_<m>``), per-modality shares in hover.
    ``stability`` (default: ``model.stability_`` when :meth:`~hcl_explore.model.HCL.stability`
    has run) fades present nodes that subsample refits did not always find."""
    vals, details = _node_variance(model)
    if stability is None:
        stability = getattr(model, "stability_", None)
    return hierarchy_graph(model.lattice_, model.ranks_, values=vals, highlight=highlight, title=title,
                           value_name="variance explained", value_format=".1%", details=details,
                           stability=stability)


def lattice_figure(
    lattice: Lattice,
    *,
    active: Iterable[Any] | None = None,
    ranks: Mapping[Any, int | str] | None = None,
    title: str = "Candidate lattice",
) -> go.Figure:
    """The candidate lattice as a Hasse diagram for the lattice editor.

    Parameters
    ----------
    lattice : Lattice
    active : iterable of nodes, optional
        Nodes switched on (default all); the others, and nodes with rank 0, are faded ("off").
    ranks : mapping node -> int or "auto", optional
        Shown in the label (``"labs · auto"``, ``"labs+notes · 2"``); default "auto".
    title : str
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
    fig = _graph_figure(lattice, title, _graph_traces(
        lattice, rank_text=rank_text, present=present, sizes=sizes, hover=hover, values=None, value_name="",
        value_format="", cmin=0.0, cmax=1.0, highlight=set(), absent_name="switched off"))
    _caption(fig, "Label = node · factors (auto = chosen from the data); grey = switched off.")
    return fig


def true_vs_recovered(lattice: Lattice, true_ranks: Mapping[Any, int], model: "HCL") -> go.Figure:
    """The true hierarchy (left) and the recovered one (right) over the same layout.

    Parameters
    ----------
    lattice : Lattice
        Candidate lattice of the ground truth; nodes of the model's lattice are added if missing.
    true_ranks : mapping node -> int
    model : HCL
        Fitted; its ``ranks_`` are drawn on the right (nodes it did not consider count as 0).
    """
    nodes = list(lattice.nodes) + [n for n in model.lattice_.nodes if n not in set(lattice.nodes)]
    lat = Lattice(lattice.modalities, nodes) if len(nodes) != len(lattice.nodes) else lattice
    tr = {n: int(v) for n, v in _node_map(lat, true_ranks).items()}
    rec = {n: int(model.ranks_.get(n, 0)) for n in lat.nodes}
    truth_r = {n: tr.get(n, 0) for n in lat.nodes}
    match = sum(truth_r[n] == rec[n] for n in lat.nodes)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.03, subplot_titles=(
        "True hierarchy", f"Recovered by HCL ({match} of {len(lat.nodes)} node ranks match)"))
    for col, (ranks, other, other_name) in enumerate(((truth_r, rec, "recovered"), (rec, truth_r, "true")), start=1):
        details = {n: f"{other_name} factors: {other[n]}" + ("" if other[n] == ranks[n] else " (differs)")
                   for n in lat.nodes}
        spec = _graph_data(lat, ranks, None, "", "", details)
        for t in _graph_traces(lat, values=None, value_name="", value_format="", cmin=0.0, cmax=1.0,
                               highlight=set(), absent_name="absent (0 factors)", showlegend=col == 1, **spec):
            fig.add_trace(t, row=1, col=col)
    for a in _layer_annotations(lat, "x", "y"):
        fig.add_annotation(**a)
    _graph_axes(fig, lat)
    n_layers = len({len(n) for n in lat.nodes})
    _layout(fig, "True vs recovered hierarchy", height=max(340, 150 * n_layers + 150),
            margin=dict(l=20, r=20, t=90, b=50), plot_bgcolor="white",
            legend=dict(orientation="h", yanchor="bottom", y=1.06, xanchor="right", x=1))
    _caption(fig, "Same layout in both panels; marker size = number of factors; grey = absent node.")
    return fig


# ---------------------------------------------------------------------------------------------
# variance and loadings


def variance_figure(model: "HCL") -> go.Figure:
    """How each modality's total variance splits across nodes and noise.

    One horizontal stacked bar per modality (first modality on top): the global node, each partial
    node, the private node, then noise = 1 - sum of the node shares (the node shares are rescaled
    to sum to 1 in the rare case they exceed it). Only present nodes appear; one legend entry per
    node, coloured by level with shades within a level.
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

    fig = go.Figure()
    by_level: dict[str, list[Node]] = {}
    for node in shares:
        by_level.setdefault(node_level(node, M), []).append(node)
    for lv in LEVELS:
        nodes = by_level.get(lv, [])
        for node, color in zip(nodes, _shades(LEVEL_COLORS[lv], len(nodes))):
            x = [float(s * f) if m in node else None for s, f, m in zip(shares[node], factor, mods)]
            r = model.ranks_[node]
            fig.add_trace(go.Bar(
                y=mods, x=x, orientation="h", name=f"{node_label(node)} ({lv}, {r})",
                marker=dict(color=color, line=dict(color="white", width=1)),
                texttemplate="%{x:.0%}", textposition="inside", insidetextanchor="middle",
                hovertemplate=(f"<b>{node_label(node)}</b> ({lv} node, {_factors(r)})<br>"
                               "%{y}: %{x:.1%} of its variance<extra></extra>"),
                customdata=[node_label(node)] * M, legendgroup=lv,
            ))
    fig.add_trace(go.Bar(
        y=mods, x=[float(v) for v in noise], orientation="h", name="noise (unexplained)",
        marker=dict(color=NOISE_COLOR, line=dict(color="white", width=1)),
        texttemplate="%{x:.0%}", textposition="inside", insidetextanchor="middle", textfont=dict(color="#424242"),
        hovertemplate="<b>noise</b><br>%{y}: %{x:.1%} of its variance not explained by any node<extra></extra>",
    ))
    _layout(fig, "Where each modality's variance comes from", barmode="stack", height=160 + 60 * M,
            margin=dict(l=20, r=20, t=60, b=50), uniformtext=dict(minsize=10, mode="hide"),
            legend=dict(title=dict(text="node (level, factors)"), traceorder="normal"))
    fig.update_xaxes(title_text="share of the modality's total variance", tickformat=".0%", range=[0, 1])
    fig.update_yaxes(title_text="modality", autorange="reversed")
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
    title = f"Top features of node {label}"
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
    _layout(fig, title, height=140 + 24 * len(rows), margin=dict(l=20, r=20, t=60, b=60))
    fig.update_yaxes(autorange="reversed", title_text="", automargin=True, type="category")
    fig.update_xaxes(side="top", title_text="", type="category")
    units = "standardized units" if getattr(model, "standardized_", False) else "the model's fitted units"
    _caption(fig, f"Top {len(rows)} features by loading norm across the node's factors ({units}); "
                  "red = positive, blue = negative; factor signs are arbitrary.")
    return fig


# ---------------------------------------------------------------------------------------------
# scores


def _color_kind(c: np.ndarray) -> str:
    if c.dtype.kind in "biuf":
        v = c.astype(float)
        vals = np.unique(v[np.isfinite(v)])
        return "categorical" if vals.size <= 2 else "continuous"
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
    fig = make_subplots(rows=1, cols=2, column_widths=[0.72, 0.28], horizontal_spacing=0.12,
                        subplot_titles=("Samples per observation pattern", "Samples per modality"))
    fig.add_trace(go.Bar(
        x=labels, y=counts_l, marker=dict(color=colors), name="pattern", showlegend=False,
        text=[f"{c:,}" for c in counts_l], textposition="outside", cliponaxis=False,
        customdata=[[s, k] for s, k in zip(share, sizes)],
        hovertemplate="<b>%{x}</b><br>%{y:,} samples (%{customdata[0]:.1%})<extra></extra>",
    ), row=1, col=1)
    per = obs.sum(axis=0).astype(int)
    fig.add_trace(go.Bar(
        x=mods, y=[int(v) for v in per], marker=dict(color="#607D8B"), name="modality", showlegend=False,
        text=[f"{int(v):,}" for v in per], textposition="outside", cliponaxis=False,
        customdata=[float(v) / n if n else 0.0 for v in per],
        hovertemplate="<b>%{x}</b><br>%{y:,} samples have it (%{customdata:.1%})<extra></extra>",
    ), row=1, col=2)
    _layout(fig, f"Which modalities the {n:,} samples have", height=460, margin=dict(l=20, r=20, t=80, b=60))
    fig.update_yaxes(title_text="samples", row=1, col=1)
    fig.update_yaxes(title_text="samples", row=1, col=2)
    fig.update_xaxes(title_text="observation pattern (modalities present)", tickangle=-30, type="category",
                     row=1, col=1)
    fig.update_xaxes(title_text="modality", type="category", row=1, col=2)
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
        fig.update_xaxes(title_text="1 − specificity (false positive rate)", range=[0, 1], row=1, col=1)
        fig.update_yaxes(title_text="sensitivity (true positive rate)", range=[0, 1.02], row=1, col=1)
        fig.update_xaxes(title_text="recall (sensitivity)", range=[0, 1], row=1, col=2)
        fig.update_yaxes(title_text="precision (positive predictive value)", range=[0, 1.02], row=1, col=2)
        _layout(fig, f"How well {report.outcome or 'the outcome'} is predicted (held-out samples)", height=480,
                margin=dict(l=20, r=20, t=80, b=40),
                legend=dict(orientation="h", yanchor="top", y=-0.15, xanchor="left", x=0))
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


_METRIC_NAMES = {"auroc": "AUROC", "auprc": "AUPRC", "f1": "F1", "accuracy": "accuracy", "r2": "R²",
                 "brier": "Brier score", "mse": "MSE", "mae": "MAE"}


def metrics_figure(report: "PredictionReport", *, metrics: Sequence[str] | None = None) -> go.Figure:
    """Grouped bars of the report's baselines table, HCL first with 95 % bootstrap intervals.

    Parameters
    ----------
    report : PredictionReport
    metrics : sequence of str, optional
        Default: auroc, auprc, f1, accuracy (binary) or r2 (continuous).
    """
    names = list(metrics) if metrics is not None else (
        ["auroc", "auprc", "f1", "accuracy"] if report.task == "binary" else ["r2"])
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
    _layout(fig, "HCL vs baselines on the held-out samples", barmode="group", height=440,
            margin=dict(l=20, r=20, t=60, b=70), legend=dict(title=dict(text="model")))
    fig.update_yaxes(title_text="score (higher is better)", range=[0, 1.05] if report.task == "binary" else None)
    fig.update_xaxes(title_text="")
    if any(m in ("brier", "mse", "mae") for m in names):
        fig.update_yaxes(title_text="score")
    _caption(fig, "Error bars: 95 % bootstrap interval of HCL over resamples of the test part.", shift=28)
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
