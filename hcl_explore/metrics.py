"""Rotation-invariant recovery measures of an estimated hierarchy against a ground truth.

No global Procrustes: every measure is invariant to the per-node rotation under which HCL is
identified. Loadings are dicts ``{(modality, node): (d_m, r_S)}``; ranks are ``{node: int}``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .lattice import Node, node_label
from .layout import block_slices

Loadings = Mapping[tuple[str, Node], np.ndarray]


def _projector(B: np.ndarray) -> np.ndarray:
    U, s, _ = np.linalg.svd(B, full_matrices=False)
    k = int(np.sum(s > s.max() * 1e-10)) if s.size and s.max() > 0 else 0
    U = U[:, :k]
    return U @ U.T


def subspace_distance(B_true: np.ndarray | None, B_est: np.ndarray | None) -> float:
    """sin theta = ||P_true - P_est||_F / sqrt(r_true + r_est) (= /sqrt(2r) for equal ranks).

    A block present on one side only scores 1; absent on both sides scores 0.
    """
    rt = 0 if B_true is None else B_true.shape[1]
    re = 0 if B_est is None else B_est.shape[1]
    if rt == 0 and re == 0:
        return 0.0
    if rt == 0 or re == 0:
        return 1.0
    Pt, Pe = _projector(B_true), _projector(B_est)
    return float(np.linalg.norm(Pt - Pe) / np.sqrt(rt + re))


def _nodes_of(loadings: Loadings) -> set[Node]:
    return {node for (_, node), B in loadings.items() if B.shape[1] > 0}


def block_distances(true: Loadings, est: Loadings) -> pd.DataFrame:
    """Subspace distance of every (modality, node) block present in either side."""
    keys = sorted({k for k, B in true.items() if B.shape[1] > 0} | {k for k, B in est.items() if B.shape[1] > 0},
                  key=lambda k: (len(k[1]), k[1], k[0]))
    rows = []
    for m, node in keys:
        Bt, Be = true.get((m, node)), est.get((m, node))
        Bt = Bt if Bt is not None and Bt.shape[1] > 0 else None
        Be = Be if Be is not None and Be.shape[1] > 0 else None
        rows.append({
            "modality": m,
            "node": node_label(node),
            "rank_true": 0 if Bt is None else Bt.shape[1],
            "rank_est": 0 if Be is None else Be.shape[1],
            "sin_theta": subspace_distance(Bt, Be),
        })
    return pd.DataFrame(rows)


def mean_sin_theta(true: Loadings, est: Loadings) -> float:
    """Mean subspace distance over all blocks present in the truth or the estimate."""
    df = block_distances(true, est)
    return float(df["sin_theta"].mean()) if len(df) else 0.0


def _stack_node(loadings: Loadings, node: Node, row_of: Mapping[str, slice], D: int) -> np.ndarray | None:
    blocks = [loadings.get((m, node)) for m in node]
    if any(b is None for b in blocks) or blocks[0].shape[1] == 0:  # type: ignore[union-attr]
        return None
    r = blocks[0].shape[1]  # type: ignore[union-attr]
    W = np.zeros((D, r))
    for m, b in zip(node, blocks):
        W[row_of[m]] = b
    return W


def _layout(true: Loadings, est: Loadings) -> tuple[list[str], dict[str, slice], int]:
    dims: dict[str, int] = {}
    for (m, _), B in list(true.items()) + list(est.items()):
        if m in dims and dims[m] != B.shape[0]:
            raise ValueError(f"Modality {m!r} has {dims[m]} features in one block and {B.shape[0]} in another.")
        dims[m] = B.shape[0]
    mods = sorted(dims)
    return mods, block_slices(mods, dims), sum(dims.values())


def node_gram_errors(true: Loadings, est: Loadings) -> pd.DataFrame:
    """Per node: ||W_S W_S^T - W*_S W*_S^T||_F / ||W*_S W*_S^T||_F over the stacked rows of S.

    This sees whether a node's factors are tied across its modalities (cross-modal blocks of the
    Gram). A node absent from the truth but present in the estimate has relative error 1 against
    its own norm.
    """
    _, row_of, D = _layout(true, est)
    nodes = sorted(_nodes_of(true) | _nodes_of(est), key=lambda n: (len(n), n))
    rows = []
    for node in nodes:
        Wt = _stack_node(true, node, row_of, D)
        We = _stack_node(est, node, row_of, D)
        Gt = Wt @ Wt.T if Wt is not None else np.zeros((D, D))
        Ge = We @ We.T if We is not None else np.zeros((D, D))
        denom = np.linalg.norm(Gt) if Wt is not None else np.linalg.norm(Ge)
        err = float(np.linalg.norm(Ge - Gt) / denom) if denom > 0 else 0.0
        rows.append({"node": node_label(node), "gram_error": err})
    return pd.DataFrame(rows)


def overall_gram_error(true: Loadings, est: Loadings) -> float:
    """||W W^T - W* W*^T||_F / ||W* W*^T||_F over all modalities."""
    _, row_of, D = _layout(true, est)
    Gt, Ge = np.zeros((D, D)), np.zeros((D, D))
    for node in _nodes_of(true):
        W = _stack_node(true, node, row_of, D)
        if W is not None:
            Gt += W @ W.T
    for node in _nodes_of(est):
        W = _stack_node(est, node, row_of, D)
        if W is not None:
            Ge += W @ W.T
    nt = np.linalg.norm(Gt)
    return float(np.linalg.norm(Ge - Gt) / nt) if nt > 0 else float(np.linalg.norm(Ge))


def structure_scores(true_ranks: Mapping[Node, int], est_ranks: Mapping[Node, int]) -> dict[str, float]:
    """Precision, recall and F1 of the set of present nodes (rank > 0)."""
    T = {n for n, r in true_ranks.items() if r > 0}
    E = {n for n, r in est_ranks.items() if r > 0}
    tp = len(T & E)
    precision = tp / len(E) if E else (1.0 if not T else 0.0)
    recall = tp / len(T) if T else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def rank_accuracy(true_ranks: Mapping[Node, int], est_ranks: Mapping[Node, int], nodes: Sequence[Node] | None = None) -> float:
    """Fraction of nodes (default: union of both dicts' keys) whose estimated rank is exact."""
    ns = list(nodes) if nodes is not None else sorted(set(true_ranks) | set(est_ranks), key=lambda n: (len(n), n))
    if not ns:
        return 1.0
    return float(np.mean([true_ranks.get(n, 0) == est_ranks.get(n, 0) for n in ns]))


def recovery_report(truth, model) -> dict:
    """All measures for a fitted model against a simulation truth (``hx.simulate``)."""
    est = model.loadings_
    tr = truth.loadings
    out = {
        "mean_sin_theta": mean_sin_theta(tr, est),
        "overall_gram_error": overall_gram_error(tr, est),
        "rank_accuracy": rank_accuracy(truth.ranks, model.ranks_),
        **structure_scores(truth.ranks, model.ranks_),
    }
    out["blocks"] = block_distances(tr, est)
    out["nodes"] = node_gram_errors(tr, est)
    return out


def probe_r2(scores: Mapping[Node, np.ndarray], Z: Mapping[Node, np.ndarray], rows: np.ndarray | None = None,
             fit_fraction: float = 0.5) -> pd.DataFrame:
    """Linear-probe recovery of the true factors from learned node blocks (any estimator).

    ``scores``: learned ``{node: (n, r_hat)}`` (``model.transform(data)``); ``Z``: true factors
    ``{node: (n, r)}`` (``truth.Z``); ``rows``: the samples to probe on (default all; pass samples
    the model was not fitted on). A least-squares probe with intercept is fitted on the first
    ``fit_fraction`` of ``rows`` and scored on the rest.

    Returns a frame indexed by learned node with one column per true node: entry (S, T) is the
    mean over T's factors of the held-out R^2 of predicting them from S's block (a node the
    model lacks scores 0). The diagonal is recovery; off-diagonal entries are leakage. Column
    ``"others"`` holds, for learned node S = true node T, the R^2 from the blocks of *all other*
    learned nodes together (leakage into T from anywhere else).
    """
    nodes = list(Z)
    n = next(iter(Z.values())).shape[0]
    rows = np.arange(n) if rows is None else np.asarray(rows)
    k = int(round(fit_fraction * rows.size))
    if k < 2 or rows.size - k < 2:
        raise ValueError(f"probe_r2 needs at least 4 rows, got {rows.size}.")
    fit, test = rows[:k], rows[k:]

    def r2(F: np.ndarray, T: np.ndarray) -> float:
        A = np.c_[np.ones(n), F]
        B = np.linalg.lstsq(A[fit], T[fit], rcond=None)[0]
        res = T[test] - A[test] @ B
        return float(np.mean(1.0 - res.var(0) / T[test].var(0)))

    empty = np.zeros((n, 0))
    out = pd.DataFrame(0.0, index=[node_label(s) for s in nodes], columns=[node_label(t) for t in nodes] + ["others"])
    for s in nodes:
        F = np.asarray(scores.get(s, empty), dtype=float)
        for t in nodes:
            out.loc[node_label(s), node_label(t)] = r2(F, Z[t])
        rest = [np.asarray(v, dtype=float) for u, v in scores.items() if u != s]
        out.loc[node_label(s), "others"] = r2(np.concatenate(rest, axis=1) if rest else empty, Z[s])
    return out


def probe_summary(table: pd.DataFrame) -> dict[str, float]:
    """Diagonal mean / min, off-diagonal mean / max and mean "others" R^2 of a :func:`probe_r2` frame."""
    R = table.drop(columns="others").to_numpy()
    off = R[~np.eye(len(R), dtype=bool)]
    return {"diag_mean": float(R.diagonal().mean()), "diag_min": float(R.diagonal().min()),
            "off_mean": float(off.mean()) if off.size else 0.0, "off_max": float(off.max()) if off.size else 0.0,
            "others_mean": float(table["others"].mean())}
