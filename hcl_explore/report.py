"""Exports of a finished run: a zip of plain files and a self-contained offline HTML report."""

from __future__ import annotations

import html
import io
import json
import os
import re
import zipfile

import numpy as np
import pandas as pd

from . import runs
from .runs import files as RF
from .lattice import node_label
from .safe_npz import read_npz, read_npz_header


def load_model(path: str | os.PathLike):
    """``HCL.load`` where every failure is a ``ValueError`` naming the file: a missing, empty,
    truncated, damaged or hostile model file is refused by its zip directory and array headers
    before anything is read (:func:`safe_npz.read_npz_header`), and whatever else breaks while
    loading becomes one readable message instead of a traceback."""
    from .model import HCL

    path = os.fspath(path)
    read_npz_header(path, what="model file")
    try:
        return HCL.load(path)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001  BadZipFile (CRC), EOFError, KeyError of a damaged header ...
        msg = " ".join(str(exc).split())[:300]
        raise ValueError(f"{path}: not a valid model file ({type(exc).__name__}{': ' + msg if msg else ''}).") from None


#: A node found in fewer than this share of the stability resamples is flagged as unstable.
LOW_STABILITY = 0.6


def dims_warnings(n_samples: int, dims: dict, observed_counts: dict | None = None) -> list[str]:
    """Plain-language warnings for modalities with more features than samples (p > n): the
    structure search works in reduced coordinates there, but loadings of single features are noisy
    and prediction from raw features overfits. ``observed_counts``: samples that have each modality
    (default: all)."""
    out = []
    for m, p in dims.items():
        n = int((observed_counts or {}).get(m, n_samples))
        if p > n:
            out.append(f"{m}: {p:,} features but only {n:,} samples with this modality (more features than "
                       "samples). Factors can still be found, but the loadings of single features are uncertain "
                       "and a model on the raw features will overfit; read the top features as hints.")
    return out


def data_warnings(data) -> list[str]:
    """:func:`dims_warnings` of a loaded :class:`~hcl_explore.data.MultimodalData`."""
    obs = np.asarray(getattr(data, "observed", np.ones((data.n_samples, len(data.modalities)), bool)), dtype=bool)
    counts = {m: int(obs[:, j].sum()) for j, m in enumerate(data.modalities)}
    return dims_warnings(int(data.n_samples), dict(data.dims), counts)


def stability_warnings(stability: pd.DataFrame | None, model=None, threshold: float = LOW_STABILITY) -> list[str]:
    """One warning per node the fit found but fewer than ``threshold`` of the subsample refits
    found (``runs.read_stability`` / ``HCL.stability`` frame); empty without a stability check."""
    if stability is None or not len(stability) or "found" not in stability.columns:
        return []
    found = stability
    if "rank" in stability.columns:
        found = stability[pd.to_numeric(stability["rank"], errors="coerce").fillna(0) > 0]
    elif model is not None:
        present = {node_label(n) for n in model.nodes_ if model.ranks_[n] > 0}
        found = stability[stability["node"].isin(present)]
    n = int(stability["resamples"].max()) if "resamples" in stability.columns else None
    out = []
    for rec in found.sort_values("found").itertuples():
        share = float(rec.found)
        if share < threshold:
            how = f"{int(round(share * n))} of {n}" if n else f"{share:.0%} of the"
            out.append(f"Node {rec.node} is unstable: it was found in only {how} subsample refits. "
                       "Treat it as a possible, not a confirmed, shared signal.")
    return out


def readable_columns(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """(the summary table with plain column names, {column: help text}) for people:
    ``var_<m>`` -> "<m>: share of variance", ``signal_<m>`` -> "<m>: share of signal", ``rank`` ->
    "factors"."""
    names, helps = {}, {}
    for c in frame.columns:
        if c.startswith("var_"):
            names[c] = f"{c[4:]}: share of variance"
            helps[names[c]] = f"The share of {c[4:]}'s total variance this node's factors explain."
        elif c.startswith("signal_"):
            names[c] = f"{c[7:]}: share of signal"
            helps[names[c]] = (f"The share of {c[7:]}'s explained (non-noise) variance that belongs to this node.")
    names.update({"rank": "factors", "size": "modalities", "present": "found"})
    helps.update({"factors": "Number of shared factors the fit found (0 = absent).",
                  "modalities": "How many modalities the node joins.",
                  "found": "Whether the fit found at least one factor."})
    return frame.rename(columns=names), helps


def _model(run_dir: str):
    return load_model(RF.path(run_dir, RF.MODEL))


def verify_run_data(run_dir: str) -> None:
    """Refuse to export a run whose pinned data is gone or changed: the files its config recorded
    (by SHA-256, :func:`datasets.verify`) must still be there with the same bytes. Raises
    ``ValueError`` naming the file; a run without pinned hashes (bundled data, older runs) passes."""
    from . import datasets

    cfg = runs.read_json(RF.path(run_dir, RF.CONFIG), None)
    spec = cfg.get("dataset") if isinstance(cfg, dict) else None
    if isinstance(spec, dict) and isinstance(spec.get("files"), dict):
        try:
            datasets.verify(spec)
        except ValueError as exc:
            raise ValueError(f"This run's data changed since it ran, so its results are not exported: {exc}") from None


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def csv_text(value):
    """A text cell made safe for spreadsheets: text starting with ``=``, ``+``, ``-``, ``@``, a tab
    or a carriage return is read as a formula by Excel/LibreOffice/Sheets (CSV injection), so it
    gets a leading single quote. Plain numbers written as text (an id ``-12``) are no formula and
    stay as they are; non-text values are returned unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def safe_csv(df: pd.DataFrame) -> str:
    """``df.to_csv(index=False)`` with every text cell and column name passed through
    :func:`csv_text` (numeric columns untouched), CRLF line ends. Every CSV the exports write goes
    through here."""
    out = df.copy()
    for c in out.columns:
        col = out[c]
        if isinstance(col.dtype, pd.CategoricalDtype):
            col = col.astype(object)
        if col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
            out[c] = col.map(csv_text)
    out.columns = [csv_text(str(c)) for c in out.columns]
    # CRLF rows (RFC 4180): the csv writer then also quotes a cell holding a bare carriage return,
    # which would otherwise split its row in a spreadsheet.
    return out.to_csv(index=False, lineterminator="\r\n")


def loadings_table(model) -> pd.DataFrame:
    """Long table of loadings in original units: modality, feature, node, factor, loading."""
    rows = []
    for (m, node), B in model.loadings_.items():
        names = model.feature_names_[m]
        for k in range(B.shape[1]):
            rows.append(pd.DataFrame({"modality": m, "feature": names, "node": node_label(node), "factor": k + 1,
                                      "loading": B[:, k]}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["modality", "feature", "node", "factor", "loading"])


def read_scores(run_dir: str) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """(ids, {node label: scores (n, r)}) from a fit run's scores file (read by the safe reader;
    nodes named by the run's node list), or None when the run has no scores. A damaged file, or
    one that disagrees with the node list, raises ``ValueError("<path>: not a valid scores
    file (...)")``."""
    path = RF.path(run_dir, RF.SCORES)
    if not os.path.exists(path):
        return None
    labels = runs.read_json(RF.path(run_dir, RF.SCORES_NODES), []) or []
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ValueError(f"{RF.path(run_dir, RF.SCORES_NODES)}: not a list of node labels.")
    rows, cols = _scores_limits(run_dir)
    z = read_npz(path, required={"ids": ((rows,), "UiuS"),
                                 **{f"node_{i}": ((rows, cols.get(lab)), "f") for i, lab in enumerate(labels)}},
                 meta=None, keep=lambda name: False, what="scores file")
    ids = z["ids"]
    for i in range(len(labels)):
        if z[f"node_{i}"].shape[0] != ids.shape[0]:
            raise ValueError(f"{path}: not a valid scores file ('node_{i}' has {z[f'node_{i}'].shape[0]} rows for "
                             f"{ids.shape[0]} ids).")
    return ids, {lab: z[f"node_{i}"] for i, lab in enumerate(labels)}


def _scores_limits(run_dir: str):
    """(rows, {node label: factors}) the run's model header allows its scores file: at most
    ``n_samples`` rows, each node's rank as columns; (None, {}) when the header cannot be read (the
    generic limits of :func:`safe_npz.read_npz` apply then)."""
    from .safe_npz import AtMost

    try:
        meta = read_npz(RF.path(run_dir, RF.MODEL), required={}, keep=lambda name: False, what="model file")["meta"]
        n = meta["n_samples"]
        ranks = meta["ranks"]
        if not (isinstance(n, int) and n >= 0 and isinstance(ranks, dict)):
            return None, {}
        return AtMost(n), {str(k): int(v) for k, v in ranks.items() if isinstance(v, int)}
    except (ValueError, KeyError, TypeError):
        return None, {}


def scores_table(run_dir: str) -> pd.DataFrame | None:
    sc = read_scores(run_dir)
    if sc is None:
        return None
    ids, nodes = sc
    out = pd.DataFrame({"id": ids.astype(str)})
    for lab, S in nodes.items():
        for k in range(S.shape[1]):
            out[f"{lab}:{k + 1}"] = S[:, k]
    return out


#: The evaluations filed in a run's folder (hcl_explore/runs/files.py owns their names).
prediction_path = runs.prediction_path
read_predictions = runs.read_predictions
read_prediction = runs.read_prediction


def run_metrics(run_dir: str, model=None) -> dict:
    """Fit diagnostics, recovery against the truth when there is one, and saved predictions."""
    from . import metrics
    from .io import truth_ranks

    model = model or _model(run_dir)
    out: dict = {"n_samples": model.n_samples_, "objective": model.objective_, "n_iter": model.n_iter_,
                 "converged": model.converged_, "ranks": {node_label(n): r for n, r in model.ranks_.items()},
                 "noise_var": model.noise_var_, "timings": model.timings_}
    tr = runs.read_json(RF.path(run_dir, RF.TRUTH), None)
    if tr:
        true = {n: r for n, r in truth_ranks(tr).items() if n in model.lattice_}
        out["recovery"] = {**metrics.structure_scores(true, model.ranks_), "rank_accuracy": metrics.rank_accuracy(true, model.ranks_)}
    for outcome, p in read_predictions(run_dir).items():
        entry = {k: p.get(k) for k in ("metrics", "selected_nodes", "baselines")}
        # What the outcome is and how far to trust it, where the evaluation recorded it.
        entry.update({k: p[k] for k in ("task", "positive_label", "classes", "confusion", "warnings", "structure")
                      if k in p})
        out.setdefault("predictions", {})[outcome] = entry
    return out


def run_zip(run_dir: str) -> bytes:
    """The run's config, summary, loadings, scores and metrics (+ data report, truth) as a zip. A
    run whose pinned data changed or is gone is refused (:func:`verify_run_data`)."""
    verify_run_data(run_dir)
    model = _model(run_dir)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in RF.EXPORTED:
            p = RF.path(run_dir, f)
            if os.path.exists(p):
                z.write(p, f)
        z.writestr(RF.SUMMARY, safe_csv(model.summary()))
        z.writestr("loadings.csv", safe_csv(loadings_table(model)))
        sc = scores_table(run_dir)
        if sc is not None:
            z.writestr("scores.csv", safe_csv(sc))
        z.writestr("metrics.json", json.dumps(run_metrics(run_dir, model), indent=1, default=str))
    return buf.getvalue()


def run_html(run_dir: str, title: str | None = None) -> str:
    """One HTML file with the run's figures and tables; plotly.js is embedded once (works offline).
    A run whose pinned data changed or is gone is refused (:func:`verify_run_data`)."""
    from . import figures
    from .io import truth_ranks
    from .predict import PredictionReport

    verify_run_data(run_dir)
    model = _model(run_dir)
    cfg = runs.read_json(RF.path(run_dir, RF.CONFIG), {}) or {}
    name = (cfg.get("dataset") or {}).get("name", "")
    stab = runs.read_stability(os.path.dirname(os.path.dirname(run_dir)), os.path.basename(run_dir)) \
        if os.path.exists(RF.path(run_dir, RF.STABILITY)) else None
    figs = [("Recovered hierarchy", figures.model_hierarchy(model, stability=stab, width=1000))]
    if len(model.modalities_) >= figures.MATRIX_FROM:
        figs.append(("Nodes found (modality × node)", figures.model_matrix(model, stability=stab, width=1000)))
    figs.append(("How each modality's variance splits", figures.variance_figure(model)))
    for n in [n for n in model.nodes_ if model.ranks_[n] > 0][:6]:
        figs.append((f"Top loadings of {node_label(n)}", figures.loadings_figure(model, n, top=15)))
    tr = runs.read_json(RF.path(run_dir, RF.TRUTH), None)
    if tr:
        true = {n: r for n, r in truth_ranks(tr).items() if n in model.lattice_}
        figs.append(("Truth vs recovered", figures.true_vs_recovered(model.lattice_, true, model)))
    preds = []
    for outcome, p in read_predictions(run_dir).items():
        rep = PredictionReport.from_dict(p)
        rep.outcome = rep.outcome or outcome
        preds.append(rep)
        figs.append((f"Prediction of {rep.outcome}", figures.curves_figure(rep)))
        figs.append((f"HCL vs baselines: {rep.outcome}", figures.metrics_figure(rep)))  # task's own metrics
    parts = [f"<h1>{html.escape(title or 'hcl-explore report')}</h1>",
             f"<p>Run <code>{html.escape(os.path.basename(run_dir))}</code> · dataset {html.escape(name)} · "
             f"{model.n_samples_:,} samples · modalities {html.escape(', '.join(model.modalities_))}</p>",
             "<h2>Summary</h2>", model.summary().round(3).to_html(index=False, na_rep="", border=0)]
    warns = run_dims_warnings(run_dir, model) + stability_warnings(stab, model)
    if warns:
        parts.append("<h2>Warnings</h2>" + "".join(f"<p class='warn'>{html.escape(w)}</p>" for w in warns))
    for rep in preds:
        classes = getattr(rep, "classes", None) or []
        what = (f"positive class: {rep.positive_label}" if getattr(rep, "positive_label", None) is not None
                else f"classes: {', '.join(map(str, classes))}" if classes else "")
        parts += [f"<h2>Prediction of {html.escape(str(rep.outcome))} ({rep.task})</h2>",
                  f"<p>{html.escape(what)}</p>" if what else "",
                  "".join(f"<p class='warn'>{html.escape(str(w))}</p>" for w in (getattr(rep, "warnings", None) or [])),
                  f"<p>Selected nodes: {html.escape(', '.join(node_label(n) for n in rep.selected_nodes) or 'none')}</p>",
                  rep.baselines.round(3).to_html(index=False, border=0),
                  "".join(f"<p class='note'>{html.escape(n)}</p>" for n in rep.notes)]
    for i, (h, fig) in enumerate(figs):
        parts.append(f"<h2>{html.escape(h)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False}))
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #ddd}"
             ".note{color:#555;font-size:13px}.warn{background:#fff4e5;border-left:4px solid #e69f00;padding:4px 8px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title or 'hcl-explore report')}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def run_dims_warnings(run_dir: str, model) -> list[str]:
    """The p > n warnings of a finished run (:func:`dims_warnings` of the model's modalities, with the
    samples per modality from the run's saved data report when it has one), for the Structure page
    and the HTML report."""
    dr = runs.read_json(RF.path(run_dir, RF.DATA_REPORT), None)
    return _report_dims_warnings(dr if isinstance(dr, dict) else {}, model)


def _report_dims_warnings(data_report: dict, model) -> list[str]:
    """p > n warnings from a run's saved data report (samples per modality) and the model's dims."""
    mods = data_report.get("modalities") or {}
    counts = {}
    for m in model.modalities_:
        r = mods.get(m) or {}
        for k in ("samples", "n_samples", "rows"):
            if isinstance(r.get(k), (int, float)):
                counts[m] = int(r[k])
                break
    return dims_warnings(int(model.n_samples_), dict(model.dims_), counts)
