"""Tests of hcl_explore.figures: real content of every figure, small payloads, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

import hcl_explore as hx
from hcl_explore import figures as F
from hcl_explore.lattice import Lattice, node_label, node_level
from hcl_explore.predict import PredictionReport

GLOBAL = ("labs", "vitals", "notes")
TRUE_RANKS = {GLOBAL: 2, ("labs", "vitals"): 1, ("labs",): 2, ("vitals",): 1, ("notes",): 2}
MAX_JSON = 300_000


@pytest.fixture(scope="module")
def fitted():
    data, truth = hx.simulate(n=1500, dims={"labs": 30, "vitals": 20, "notes": 40}, ranks=TRUE_RANKS,
                              noise=0.3, missing=0.15, seed=0)
    model = hx.HCL(device="cpu").fit(data)
    return data, truth, model


@pytest.fixture(scope="module")
def report(fitted):
    data, truth, _ = fitted
    rng = np.random.default_rng(1)
    y = (truth.Z[GLOBAL][:, 0] + 0.7 * rng.standard_normal(data.n_samples) > 0).astype(float)
    model = hx.HCL(device="cpu")
    return hx.evaluate_prediction(model, data, y, cv=3, n_bootstrap=20, baselines=["raw"])


def _wide_model(top_rows: list[int]) -> hx.HCL:
    """A fitted-looking HCL over a 2,000-feature modality whose node ("wide", "small") has known
    largest-norm rows (``top_rows`` of "wide", in decreasing norm) in transformed units, while the
    original-unit scale would rank other rows first."""
    dims = {"wide": 2000, "small": 6}
    lat = Lattice(["wide", "small"])
    rng = np.random.default_rng(3)
    ranks = {("wide",): 1, ("small",): 0, ("wide", "small"): 2}
    nodes = [("wide",), ("wide", "small")]
    D = sum(dims.values())
    W = np.zeros((D, 3))
    W[:2000, 0] = rng.normal(0, 0.1, 2000)                      # private node of wide
    W[:, 1:] = rng.normal(0, 0.05, (D, 2))                      # shared node, small background
    for k, i in enumerate(top_rows):
        W[i, 1:] = [3.0 - 0.1 * k, -(2.0 - 0.1 * k)]
    scale = np.ones(D)
    scale[[5, 6, 7]] = 1e4  # huge original units: would dominate loadings_ but not W_
    m = hx.HCL()
    m.modalities_ = list(dims)
    m.lattice_ = lat
    m.dims_ = dims
    m.feature_names_ = {mm: [f"{mm}_{j}" for j in range(d)] for mm, d in dims.items()}
    m.ranks_ = {n: ranks.get(n, 0) for n in lat.nodes}
    m.nodes_ = nodes
    m.W_ = W
    m.scale_ = scale
    m.standardized_ = True
    return m


def _texts(fig: go.Figure) -> list[str]:
    out = []
    for t in fig.data:
        txt = getattr(t, "text", None)
        if txt is None:
            continue
        out.extend([txt] if isinstance(txt, str) else list(txt))
    return out


def _node_points(fig: go.Figure) -> dict[str, dict]:
    """label -> {trace, size, color, opacity, line_width, line_color, x, y} of hierarchy markers."""
    pts: dict[str, dict] = {}
    for t in fig.data:
        if t.mode != "markers+text":
            continue
        for i, lab in enumerate(t.customdata):
            size = t.marker.size[i] if not np.isscalar(t.marker.size) else t.marker.size
            color = t.marker.color if isinstance(t.marker.color, str) else t.marker.color[i]
            pts[str(lab)] = dict(trace=t.name, size=size, color=color, opacity=t.marker.opacity,
                                 line_width=t.marker.line.width[i], line_color=t.marker.line.color[i],
                                 x=t.x[i], y=t.y[i], xaxis=t.xaxis)
    return pts


def _size_ok(fig: go.Figure) -> None:
    assert len(fig.to_json()) < MAX_JSON


# --------------------------------------------------------------------------------------- hierarchy


def test_hierarchy_graph_labels_faded_sizes(fitted):
    _, _, model = fitted
    lat, ranks = model.lattice_, model.ranks_
    assert any(r == 0 for r in ranks.values()), "fixture should have absent candidate nodes"
    fig = F.hierarchy_graph(lat, ranks)
    texts = " ".join(_texts(fig))
    pts = _node_points(fig)
    assert set(pts) == {node_label(n) for n in lat.nodes}
    for n in lat.nodes:
        assert f"{node_label(n)} · {ranks[n]}" in texts
    present = [n for n in lat.nodes if ranks[n] > 0]
    absent = [n for n in lat.nodes if ranks[n] == 0]
    for n in absent:
        p = pts[node_label(n)]
        assert p["color"] == F.ABSENT_COLOR and p["opacity"] < 1
    for n in present:
        p = pts[node_label(n)]
        assert p["color"] == F.LEVEL_COLORS[node_level(n, 3)] and p["opacity"] == 1
        assert min(pts[node_label(a)]["size"] for a in absent) < p["size"]
    # marker sizes order like ranks
    for a in present:
        for b in present:
            sa, sb = pts[node_label(a)]["size"], pts[node_label(b)]["size"]
            if ranks[a] < ranks[b]:
                assert sa < sb
            elif ranks[a] == ranks[b]:
                assert sa == sb
    # layers: global on top, private at the bottom; x evenly spread within a layer
    assert pts[node_label(GLOBAL)]["y"] > pts["labs+vitals"]["y"] > pts["labs"]["y"]
    assert [pts[m]["x"] for m in ("labs", "vitals", "notes")] == pytest.approx([1 / 6, 0.5, 5 / 6])
    # every Hasse edge drawn once
    n_edges = sum(sum(v is None for v in t.x) for t in fig.data if t.mode == "lines")
    assert n_edges == lat.hasse().number_of_edges()
    assert not fig.layout.xaxis.visible and not fig.layout.yaxis.visible
    _size_ok(fig)


def test_hierarchy_highlight_and_values(fitted):
    _, _, model = fitted
    plain = _node_points(F.hierarchy_graph(model.lattice_, model.ranks_))
    assert all(p["line_width"] <= 1 for p in plain.values())
    fig = F.hierarchy_graph(model.lattice_, model.ranks_, highlight=["labs+vitals", ("notes",)])
    pts = _node_points(fig)
    for lab in ("labs+vitals", "notes"):
        assert pts[lab]["line_width"] >= 3 and pts[lab]["line_color"] == F.HIGHLIGHT_COLOR
    assert pts["labs"]["line_width"] <= 1
    # values -> one continuous colour trace with a colorbar
    vals = {n: 0.1 * i for i, n in enumerate(model.lattice_.nodes)}
    fig = F.hierarchy_graph(model.lattice_, model.ranks_, values=vals, value_name="share")
    colored = [t for t in fig.data if t.mode == "markers+text" and t.marker.showscale]
    assert len(colored) == 1
    c = dict(zip(colored[0].customdata, colored[0].marker.color))
    assert c[node_label(GLOBAL)] == pytest.approx(vals[GLOBAL])
    assert "share" in " ".join(colored[0].hovertext)
    # labels accepted as keys; missing nodes are absent
    pts = _node_points(F.hierarchy_graph(model.lattice_, {"labs+vitals": 3}))
    assert pts["labs+vitals"]["color"] == F.LEVEL_COLORS["partial"]
    assert pts["labs"]["color"] == F.ABSENT_COLOR


def test_model_hierarchy_values_are_variance(fitted):
    _, _, model = fitted
    fig = F.model_hierarchy(model, highlight=[GLOBAL])
    summ = model.summary().set_index("node")
    colored = [t for t in fig.data if t.mode == "markers+text" and t.marker.showscale][0]
    for lab, v in zip(colored.customdata, colored.marker.color):
        node = tuple(lab.split("+"))
        assert v == pytest.approx(np.mean([summ.loc[lab, f"var_{m}"] for m in node]))
    assert _node_points(fig)[node_label(GLOBAL)]["line_color"] == F.HIGHLIGHT_COLOR
    assert fig.layout.title.text == "Recovered hierarchy"
    _size_ok(fig)


def _stability_frame(model, found: dict, same: dict | None = None, n: int = 20) -> pd.DataFrame:
    """A hand-made frame shaped like ``HCL.stability()``'s (no refits in figure tests)."""
    labels = [node_label(nd) for nd in model.lattice_.nodes]
    return pd.DataFrame({"node": labels, "rank": [model.ranks_[nd] for nd in model.lattice_.nodes],
                         "found": [found.get(lab, 1.0) for lab in labels],
                         "same_rank": [(same or {}).get(lab, 1.0) for lab in labels], "resamples": n})


def _hover(fig: go.Figure) -> dict[str, str]:
    return {str(lab): h for t in fig.data if t.mode == "markers+text" for lab, h in zip(t.customdata, t.hovertext)}


def _opacity(fig: go.Figure) -> dict[str, float]:
    out = {}
    for t in fig.data:
        if t.mode == "markers+text":
            op = t.marker.opacity
            out.update({str(lab): (op if np.isscalar(op) else op[i]) for i, lab in enumerate(t.customdata)})
    return out


def test_hierarchy_shows_stability_as_opacity_and_hover(fitted):
    import copy

    _, _, model = fitted
    assert model.ranks_[("labs", "vitals")] > 0 and model.ranks_[("labs", "notes")] == 0
    stab = _stability_frame(model, {"labs+vitals": 0.95, "notes": 0.5, "labs+notes": 0.1}, {"labs+vitals": 0.6})
    fig = F.model_hierarchy(model, stability=stab)
    hover, op = _hover(fig), _opacity(fig)
    assert "found in 19 of 20 resamples" in hover["labs+vitals"]
    assert "same rank in 12 of 20 resamples" in hover["labs+vitals"]
    assert "found in 10 of 20 resamples" in hover["notes"]
    assert "found in 2 of 20 resamples" in hover["labs+notes"]  # absent nodes say it too
    assert op["labs+vitals"] == pytest.approx(0.35 + 0.65 * 0.95)
    assert op["notes"] == pytest.approx(0.35 + 0.65 * 0.5) == F.stability_opacity(0.5)
    assert op[node_label(GLOBAL)] == 1.0 and op["labs+notes"] == pytest.approx(0.35)  # absent: unchanged fade
    caption = " ".join(a.text for a in fig.layout.annotations)
    assert "Opacity = share of the 20 subsample refits that found the node" in caption
    # A mapping node -> found share works too (no counts to give), and so does model.stability_.
    fig2 = F.hierarchy_graph(model.lattice_, model.ranks_, stability={"labs+vitals": 0.95, ("notes",): 0.5})
    assert "found in 95% of resamples" in _hover(fig2)["labs+vitals"]
    assert _opacity(fig2)["notes"] == pytest.approx(0.675) and _opacity(fig2)["labs"] == 1.0
    m2 = copy.copy(model)
    m2.stability_ = stab
    assert F.model_hierarchy(m2).to_json() == fig.to_json()
    _size_ok(fig)


def test_hierarchy_without_stability_is_unchanged(fitted):
    _, _, model = fitted
    assert getattr(model, "stability_", None) is None
    fig = F.model_hierarchy(model)
    assert fig.to_json() == F.model_hierarchy(model, stability=None).to_json()
    assert fig.to_json() == F.hierarchy_graph(model.lattice_, model.ranks_, values=F._node_variance(model)[0],
                                              value_name="variance explained", value_format=".1%",
                                              details=F._node_variance(model)[1]).to_json()
    assert not any("resamples" in h for h in _hover(fig).values())
    assert all(o == 1.0 for lab, o in _opacity(fig).items() if model.ranks_[tuple(lab.split("+"))] > 0)
    assert not any("Opacity" in a.text for a in fig.layout.annotations)
    # An empty frame or mapping is no stability either.
    assert F.hierarchy_graph(model.lattice_, model.ranks_, stability={}).to_json() == \
        F.hierarchy_graph(model.lattice_, model.ranks_).to_json()


def test_hierarchy_is_deterministic(fitted):
    _, _, model = fitted
    assert F.model_hierarchy(model).to_json() == F.model_hierarchy(model).to_json()
    pos = F.node_positions(Lattice.full(list("abcde")))
    assert len(pos) == 31 and max(y for _, y in pos.values()) == 4


def test_lattice_figure(fitted):
    _, _, model = fitted
    lat = model.lattice_
    fig = F.lattice_figure(lat, active=[GLOBAL, ("labs",), ("vitals",)], ranks={GLOBAL: 2, "vitals": 0})
    texts = " ".join(_texts(fig))
    assert "labs+vitals+notes · 2" in texts and "labs · auto" in texts
    assert "vitals · off" in texts and "labs+notes · off" in texts
    pts = _node_points(fig)
    assert pts["labs+notes"]["color"] == F.ABSENT_COLOR and pts["labs"]["color"] == F.LEVEL_COLORS["private"]
    allon = F.lattice_figure(lat)
    assert all(p["color"] != F.ABSENT_COLOR for p in _node_points(allon).values())
    _size_ok(fig)


def test_true_vs_recovered(fitted):
    _, truth, model = fitted
    fig = F.true_vs_recovered(truth.lattice, truth.ranks, model)
    pts_by_axis: dict[str, set] = {}
    for t in fig.data:
        if t.mode == "markers+text":
            pts_by_axis.setdefault(t.xaxis or "x", set()).update(t.customdata)
    assert set(pts_by_axis) == {"x", "x2"}
    labels = {node_label(n) for n in truth.lattice.nodes}
    assert pts_by_axis["x"] == labels and pts_by_axis["x2"] == labels
    texts = _texts(fig)
    for n in truth.lattice.nodes:
        assert f"{node_label(n)} · {truth.ranks[n]}" in texts
        assert f"{node_label(n)} · {model.ranks_[n]}" in texts
    match = sum(truth.ranks[n] == model.ranks_[n] for n in truth.lattice.nodes)
    assert any(f"{match} of {len(labels)}" in (a.text or "") for a in fig.layout.annotations)
    _size_ok(fig)


# --------------------------------------------------------------------------------------- variance / loadings


def test_variance_bars_sum_to_one(fitted):
    _, _, model = fitted
    fig = F.variance_figure(model)
    mods = model.modalities_
    tot = np.zeros(len(mods))
    for t in fig.data:
        assert list(t.y) == mods and t.orientation == "h"
        tot += np.array([0.0 if v is None else v for v in t.x])
    assert tot == pytest.approx(np.ones(len(mods)), abs=1e-9)
    names = [t.name for t in fig.data]
    assert names[0].startswith("labs+vitals+notes") and names[-1].startswith("noise")
    present = [n for n in model.lattice_.nodes if model.ranks_[n] > 0]
    assert len(fig.data) == len(present) + 1
    summ = model.summary().set_index("node")
    g = fig.data[0]
    assert g.x[0] == pytest.approx(summ.loc["labs+vitals+notes", "var_labs"])
    assert g.marker.color == F.LEVEL_COLORS["global"]
    _size_ok(fig)


def test_top_loadings_real_model(fitted):
    _, _, model = fitted
    df = F.top_loadings(model, GLOBAL, top=15)
    assert list(df.columns) == ["modality", "feature", "factor_1", "factor_2", "norm"]
    assert len(df) == 15 and (np.diff(df["norm"].to_numpy()) <= 0).all()
    # the norms are those of W_ rows (transformed units) of the node's columns
    cols = [i for i, n in enumerate(model.column_nodes()) if n == GLOBAL]
    names = [(m, f) for m in model.modalities_ for f in model.feature_names_[m]]
    norms = np.linalg.norm(model.W_[:, cols], axis=1)
    best = np.argsort(-norms, kind="stable")[:15]
    assert list(zip(df["modality"], df["feature"])) == [names[i] for i in best]
    assert df["norm"].to_numpy() == pytest.approx(norms[best])
    # absent node: empty table, figure with a note
    absent = next(n for n in model.lattice_.nodes if model.ranks_[n] == 0)
    assert F.top_loadings(model, absent).empty
    fig = F.loadings_figure(model, absent)
    assert len(fig.data) == 0 and "no factors" in fig.layout.annotations[0].text


def test_loadings_wide_modality_top_rows():
    top_rows = [1999, 17, 1234, 400, 3, 888, 1500, 42, 999, 1000]
    model = _wide_model(top_rows)
    df = F.top_loadings(model, "wide+small", top=10)
    assert len(df) == 10
    assert list(df["feature"]) == [f"wide_{i}" for i in top_rows]
    assert set(df["modality"]) == {"wide"}
    fig = F.loadings_figure(model, ("wide", "small"), top=10)
    (hm,) = fig.data
    assert isinstance(hm, go.Heatmap)
    assert list(hm.y) == [f"wide · wide_{i}" for i in top_rows]
    assert list(hm.x) == ["factor 1", "factor 2"]
    assert np.asarray(hm.z).shape == (10, 2) and hm.zmid == 0
    assert np.asarray(hm.z)[0] == pytest.approx([3.0, -2.0], rel=1e-6)
    _size_ok(fig)
    assert len(fig.to_json()) < 30_000  # only the top rows travel, never the 2,000-row block
    # a bigger top still stops at `top` rows
    assert len(F.loadings_figure(model, "wide+small", top=25).data[0].y) == 25
    # private node of the wide modality: one factor
    assert list(F.top_loadings(model, "wide", top=5).columns) == ["modality", "feature", "factor_1", "norm"]


# --------------------------------------------------------------------------------------- scores / overlap


def _n_points(fig: go.Figure) -> int:
    return sum(len(t.x) for t in fig.data if t.mode == "markers")


def test_scores_subsampled_and_colored():
    rng = np.random.default_rng(0)
    n = 10_000
    S = rng.standard_normal((n, 2))
    y = (S[:, 0] > 0).astype(float)
    y[:500] = np.nan
    fig = F.scores_figure(S, color=y, color_name="death")
    assert _n_points(fig) == F.MAX_POINTS
    names = [t.name for t in fig.data]
    assert names == ["death = 0", "death = 1", "death missing"]
    assert fig.data[2].marker.color == F.ABSENT_COLOR
    assert fig.layout.xaxis.title.text == "factor 1" and fig.layout.yaxis.title.text == "factor 2"
    assert fig.to_json() == F.scores_figure(S, color=y, color_name="death").to_json()
    # the points shown are real rows of S
    pts = {(float(a), float(b)) for t in fig.data for a, b in zip(t.x, t.y)}
    rows = {(float(a), float(b)) for a, b in S.astype(np.float32)}
    assert pts <= rows
    _size_ok(fig)
    # continuous colour: one coloured trace + the missing ones
    c = S[:, 1] + 0.0
    c[:10] = np.nan
    fig = F.scores_figure(S, color=c)
    assert fig.data[0].marker.showscale and _n_points(fig) == F.MAX_POINTS
    # categorical strings, one factor (jittered strip)
    cat = np.array(["a", "b", "c", None] * (n // 4), dtype=object)
    fig = F.scores_figure(S[:, :1], color=cat, max_points=1000)
    assert _n_points(fig) == 1000
    assert [t.name for t in fig.data] == ["outcome = a", "outcome = b", "outcome = c", "outcome missing"]
    assert all(abs(v) <= 0.35 for t in fig.data for v in t.y)
    # small n: every point
    assert _n_points(F.scores_figure(S[:50])) == 50


def test_overlap_counts(fitted):
    data, _, _ = fitted
    obs = data.observed
    fig = F.overlap_figure(obs, data.modalities)
    bars, per = fig.data
    expected = pd.Series(["+".join(m for m, o in zip(data.modalities, row) if o) for row in obs]).value_counts()
    got = dict(zip(bars.x, bars.y))
    assert got == expected.to_dict()
    assert list(bars.y) == sorted(bars.y, reverse=True)
    assert bars.x[0] == "labs+vitals+notes" and bars.marker.color[0] == F.LEVEL_COLORS["global"]
    assert list(per.x) == data.modalities and list(per.y) == list(obs.sum(axis=0))
    _size_ok(fig)
    with pytest.raises(ValueError):
        F.overlap_figure(obs, data.modalities[:2])


# --------------------------------------------------------------------------------------- prediction


def test_curves_binary(report):
    fig = F.curves_figure(report)
    models = list(report.curves)
    roc = [t for t in fig.data if (t.xaxis or "x") == "x" and not t.name.startswith("chance")]
    pr = [t for t in fig.data if t.xaxis == "x2" and not t.name.startswith("chance")]
    assert len(roc) == len(models) == len(pr) == 2
    assert roc[0].name.startswith("HCL") and "AUROC" in roc[0].name and "AUPRC" in roc[0].name
    assert f"{report.metric('auroc'):.3f}" in roc[0].name
    assert roc[0].line.width > roc[1].line.width
    for t in roc:
        assert (t.x[0], t.y[0]) == (0, 0) and (t.x[-1], t.y[-1]) == (1, 1)
    for t in pr:
        assert t.x[-1] == pytest.approx(1.0)
    chance = [t for t in fig.data if t.name.startswith("chance")]
    assert len(chance) == 2
    _size_ok(fig)


def test_metrics_bars_with_ci(report):
    fig = F.metrics_figure(report)
    assert [t.name for t in fig.data] == list(report.baselines["model"])
    hcl = fig.data[0]
    assert list(hcl.x) == ["AUROC", "AUPRC", "F1", "accuracy"]
    ci = report.metrics.set_index("metric")
    for j, m in enumerate(["auroc", "auprc", "f1", "accuracy"]):
        assert hcl.y[j] == pytest.approx(report.metric(m))
        assert hcl.y[j] + hcl.error_y.array[j] == pytest.approx(ci.loc[m, "ci_high"])
        assert hcl.y[j] - hcl.error_y.arrayminus[j] == pytest.approx(ci.loc[m, "ci_low"])
    assert fig.data[1].error_y.array is None
    _size_ok(fig)


def _continuous_report(n: int = 6000) -> PredictionReport:
    rng = np.random.default_rng(0)
    y = rng.standard_normal(n)
    curves = {name: {"scatter": pd.DataFrame({"observed": y, "predicted": y * k + rng.normal(0, 0.5, n)})}
              for name, k in (("HCL", 0.9), ("raw features (ridge)", 0.7))}
    base = pd.DataFrame([{"model": "HCL", "n_features": 5, "r2": 0.6, "mse": 0.4, "mae": 0.5},
                         {"model": "raw features (ridge)", "n_features": 90, "r2": 0.4, "mse": 0.6, "mae": 0.6}])
    metrics = pd.DataFrame([{"metric": "r2", "value": 0.6, "ci_low": 0.5, "ci_high": 0.7}])
    return PredictionReport("continuous", metrics, [], pd.DataFrame(), base, curves, None, {}, [], 0.1,
                            pd.DataFrame(), outcome="length of stay")


def test_curves_and_metrics_continuous():
    rep = _continuous_report()
    fig = F.curves_figure(rep)
    pts = [t for t in fig.data if t.mode == "markers"]
    assert [t.name.split(" (R²")[0] for t in pts] == ["HCL", "raw features (ridge)"]
    assert pts[0].visible is True and pts[1].visible == "legendonly"
    assert all(len(t.x) <= F.MAX_POINTS for t in pts)
    assert "R² 0.600" in pts[0].name
    _size_ok(fig)
    fig = F.metrics_figure(rep)
    assert list(fig.data[0].x) == ["R²"] and fig.data[0].error_y.array[0] == pytest.approx(0.1)


# --------------------------------------------------------------------------------------- objective


def test_objective_figure(fitted):
    _, _, model = fitted
    fig = F.objective_figure(model.objective_history_)
    (t,) = fig.data
    assert len(t.y) == len(model.objective_history_) and t.x[0] == 1
    assert fig.layout.yaxis.type == "log"
    empty = F.objective_figure([])
    assert len(empty.data) == 0 and "No refinement" in empty.layout.annotations[0].text
    assert F.objective_figure([1.0, 0.0, -1.0]).layout.yaxis.type == "linear"
    long = F.objective_figure(list(np.geomspace(1, 1e-6, 20_000)))
    assert len(long.data[0].y) <= 1000 and long.data[0].x[-1] == 20_000
    # contrastive training: training and validation loss per epoch; the paper loss can be negative
    ep = F.objective_figure([3.0, 2.0, 1.5], validation=[3.2, 2.5, float("nan")], x_label="epoch", title="Training loss")
    assert [t.name for t in ep.data] == ["training", "validation"] and ep.layout.showlegend
    assert list(ep.data[1].y[:2]) == [3.2, 2.5] and ep.layout.xaxis.title.text == "epoch"
    assert ep.layout.yaxis.type == "log"
    assert F.objective_figure([0.5, -0.2], validation=[0.4, -0.1]).layout.yaxis.type == "linear"


# --------------------------------------------------------------------------------------- module rules


def test_every_figure_serialises_small(fitted, report):
    data, truth, model = fitted
    Z = model.transform(data)
    figs = [
        F.model_hierarchy(model), F.lattice_figure(model.lattice_), F.variance_figure(model),
        F.loadings_figure(model, GLOBAL), F.scores_figure(Z[GLOBAL]), F.overlap_figure(data.observed, data.modalities),
        F.curves_figure(report), F.metrics_figure(report), F.objective_figure(model.objective_history_),
        F.true_vs_recovered(truth.lattice, truth.ranks, model),
    ]
    for fig in figs:
        assert isinstance(fig, go.Figure)
        j = fig.to_json()
        assert len(j) < MAX_JSON
        assert json.loads(j)["layout"]["title"]["text"]


def test_module_has_no_ui_or_io():
    src = Path(F.__file__).read_text()
    assert "streamlit" not in src.replace("Streamlit app", "")
    assert "open(" not in src and "write_html" not in src and "write_image" not in src


def test_multiclass_reports_draw_in_figures_and_the_html_report(tmp_path):
    # A 3-class outcome: curves become the confusion matrix in the outcome's labels, the bars use
    # the task's own metrics (macro-F1), and the run's HTML report carries both with no error.
    from hcl_explore import report as R
    from hcl_explore import runs
    from hcl_explore.runs import files as RF

    data, truth = hx.simulate(n=600, dims=(8, 8), ranks={("a", "b"): 1, ("a",): 1}, noise=0.3, seed=0)
    z = truth.Z[("a", "b")][:, 0]
    y = np.array(["low", "mid", "high"], dtype=object)[np.digitize(z, np.quantile(z, [1 / 3, 2 / 3]))]
    model = hx.HCL().fit(data)
    rep = hx.evaluate_prediction(model, data, y, refit=False, n_bootstrap=20, cv=3, baselines=["raw"])
    assert rep.task == "multiclass" and set(rep.classes) == {"low", "mid", "high"}
    cm = F.curves_figure(rep)
    assert {"low", "mid", "high"} <= set(map(str, cm.data[0].x))
    bars = F.metrics_figure(rep)
    assert any("macro-F1" in str(t.x) or "macro-F1" in str(t.y) for t in bars.data) or "macro-F1" in str(bars.layout)
    d = tmp_path / "run"
    d.mkdir()
    model.save(RF.path(str(d), RF.MODEL))
    runs.write_json(runs.prediction_path(str(d), "grade"), {**rep.to_dict(), "outcome": "grade"})
    page = R.run_html(str(d))
    assert "Prediction of grade (multiclass)" in page and "classes:" in page
    assert R.run_metrics(str(d))["predictions"]["grade"]["classes"] == list(rep.classes)
