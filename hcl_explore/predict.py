"""Downstream prediction from the hierarchy: group-sparse selection of the task-relevant nodes.

The node blocks of a fitted HCL are the features; a group lasso with one group per lattice node
(logistic loss for binary outcomes, squared loss for continuous ones) picks the nodes that predict
the outcome. :func:`evaluate_prediction` runs the honest protocol: split the labelled samples, fit
the representation on everything but the test samples, choose the penalty by cross-validation on
the training part only, report held-out metrics with bootstrap intervals, and compare with
baselines on the same split.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .data import MultimodalData
from .lattice import Lattice, Node, node_label, node_level

# ---------------------------------------------------------------------------------------------
# metrics (numpy only)


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half)."""
    y = np.asarray(y, dtype=bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = pd.Series(s).rank(method="average").to_numpy()
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _curve_points(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative true / false positives at each distinct threshold, highest score first."""
    order = np.argsort(-s, kind="mergesort")
    ys, ss = np.asarray(y, dtype=np.float64)[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(ss) != 0), ys.size - 1]
    tp = np.cumsum(ys)[last]
    fp = (last + 1) - tp
    return tp, fp, ss[last]


def roc_curve(y: np.ndarray, s: np.ndarray) -> pd.DataFrame:
    """ROC points: columns ``fpr``, ``tpr``, ``threshold`` (starting at (0, 0))."""
    tp, fp, thr = _curve_points(y, s)
    P, N = max(tp[-1], 1), max(fp[-1], 1)
    return pd.DataFrame({"fpr": np.r_[0, fp / N], "tpr": np.r_[0, tp / P], "threshold": np.r_[np.inf, thr]})


def pr_curve(y: np.ndarray, s: np.ndarray) -> pd.DataFrame:
    """Precision-recall points: columns ``recall``, ``precision``, ``threshold``."""
    tp, fp, thr = _curve_points(y, s)
    P = max(tp[-1], 1)
    prec = tp / np.maximum(tp + fp, 1)
    return pd.DataFrame({"recall": np.r_[0, tp / P], "precision": np.r_[1, prec], "threshold": np.r_[np.inf, thr]})


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the precision-recall curve as the step sum ``sum (R_k - R_{k-1}) P_k``."""
    y = np.asarray(y, dtype=bool)
    if y.sum() == 0:
        return float("nan")
    tp, fp, _ = _curve_points(y, s)
    rec = tp / tp[-1]
    prec = tp / (tp + fp)
    return float(np.sum(np.diff(np.r_[0, rec]) * prec))


def _binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    pred = p >= threshold
    yb = y.astype(bool)
    tp = float(np.sum(pred & yb))
    fp = float(np.sum(pred & ~yb))
    fn = float(np.sum(~pred & yb))
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else 0.0
    return {
        "auroc": roc_auc(y, p),
        "auprc": average_precision(y, p),
        "f1": f1,
        "accuracy": float(np.mean(pred == yb)),
        "brier": float(np.mean((p - y) ** 2)),
    }


def _continuous_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    res = y - p
    ss = float(np.sum((y - y.mean()) ** 2))
    return {
        "r2": 1 - float(np.sum(res**2)) / ss if ss > 0 else float("nan"),
        "mse": float(np.mean(res**2)),
        "mae": float(np.mean(np.abs(res))),
    }


def _metrics(task: str, y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    return _binary_metrics(y, p, threshold) if task == "binary" else _continuous_metrics(y, p)


def _bootstrap(task: str, y: np.ndarray, p: np.ndarray, threshold: float, n_boot: int, rng: np.random.Generator) -> dict[str, tuple[float, float]]:
    """Percentile 95 % intervals of each metric over bootstrap resamples of the test set."""
    if n_boot <= 0:
        return {}
    vals: dict[str, list[float]] = {}
    n = y.size
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        if task == "binary" and (y[idx].min() == y[idx].max()):
            continue
        for k, v in _metrics(task, y[idx], p[idx], threshold).items():
            vals.setdefault(k, []).append(v)
    return {k: (float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))) for k, v in vals.items()}


def _best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    tp, fp, thr = _curve_points(y, p)
    P = tp[-1]
    f1 = 2 * tp / np.maximum(P + tp + fp, 1)
    k = int(np.argmax(f1))
    # Midway to the next lower score, so that the threshold is not glued to one training sample.
    lower = thr[k + 1] if k + 1 < thr.size else thr[k] - 1e-6
    return float((thr[k] + lower) / 2)


# ---------------------------------------------------------------------------------------------
# group lasso


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def _group_index(groups: Sequence[int]) -> list[np.ndarray]:
    g = np.asarray(groups)
    return [np.flatnonzero(g == k) for k in range(int(g.max()) + 1)] if g.size else []


def _prox(beta: np.ndarray, gidx: list[np.ndarray], thr: np.ndarray) -> np.ndarray:
    out = beta.copy()
    for k, idx in enumerate(gidx):
        nrm = float(np.linalg.norm(beta[idx]))
        out[idx] = 0.0 if nrm <= thr[k] else beta[idx] * (1 - thr[k] / nrm)
    return out


def _fista(grad: Callable[[np.ndarray], np.ndarray], L: float, beta0: np.ndarray, gidx: list[np.ndarray],
           thr: np.ndarray, tol: float, max_iter: int, n_free: int) -> np.ndarray:
    """Proximal gradient with Nesterov momentum (and restarts); the last ``n_free`` coefficients
    (intercepts) are not penalized."""
    x = beta0.copy()
    yk = x.copy()
    t = 1.0
    pen = thr
    for _ in range(max_iter):
        g = grad(yk)
        z = yk - g / L
        xn = z.copy()
        if n_free:
            xn[:-n_free] = _prox(z[:-n_free], gidx, pen / L)
        else:
            xn = _prox(z, gidx, pen / L)
        tn = (1 + math.sqrt(1 + 4 * t * t)) / 2
        # Restart momentum when it points uphill (O'Donoghue & Candes).
        if np.dot(yk - xn, xn - x) > 0:
            tn, yk = 1.0, xn.copy()
        else:
            yk = xn + ((t - 1) / tn) * (xn - x)
        step = float(np.max(np.abs(xn - x))) if xn.size else 0.0
        x, t = xn, tn
        if step <= tol * max(1.0, float(np.max(np.abs(x)))):
            break
    return x


@dataclass
class _Problem:
    """A standardized design (n, p) with groups, an outcome and the loss."""

    task: str
    X: np.ndarray
    y: np.ndarray
    gidx: list[np.ndarray]
    w: np.ndarray  # group weights (n_groups,)
    sample_weight: np.ndarray  # (n,), mean 1
    noise_cov: np.ndarray | None = None  # (p, p) score-error covariance to subtract (continuous only)

    def __post_init__(self) -> None:
        n = self.X.shape[0]
        sw = self.sample_weight
        if self.task == "continuous":
            self.ybar = float(np.average(self.y, weights=sw))
            Xs = self.X * sw[:, None]
            self.S = self.X.T @ Xs / n
            if self.noise_cov is not None:
                # Corrected Gram (errors-in-variables): S - Sigma_E, clipped to stay convex.
                S = self.S - self.noise_cov
                ev, V = np.linalg.eigh((S + S.T) / 2)
                self.S = (V * np.maximum(ev, 1e-3 * max(ev.max(), 1e-12))) @ V.T
            self.c = Xs.T @ (self.y - self.ybar) / n
            self.L = float(np.linalg.eigvalsh(self.S).max()) if self.S.size else 1.0
        else:
            self.L = float(np.linalg.eigvalsh(self.X.T @ (self.X * sw[:, None]) / n).max()) / 4 + 1e-12 if self.X.shape[1] else 1.0
            self.L = max(self.L, 0.25 * float(np.mean(sw)))

    def grad(self, theta: np.ndarray) -> np.ndarray:
        if self.task == "continuous":
            return self.S @ theta - self.c
        beta, b = theta[:-1], theta[-1]
        p = _sigmoid(self.X @ beta + b)
        r = self.sample_weight * (p - self.y) / self.X.shape[0]
        return np.r_[self.X.T @ r, r.sum()]

    def lambda_max(self) -> float:
        if self.task == "continuous":
            g = -self.c
        else:
            pbar = float(np.average(self.y, weights=self.sample_weight))
            b0 = math.log(max(pbar, 1e-12) / max(1 - pbar, 1e-12))
            g = self.grad(np.r_[np.zeros(self.X.shape[1]), b0])[:-1]
        vals = [np.linalg.norm(g[idx]) / self.w[k] for k, idx in enumerate(self.gidx) if np.isfinite(self.w[k])]
        return float(max(vals)) if vals else 1.0

    def path(self, lambdas: np.ndarray, tol: float = 1e-7, max_iter: int = 5000) -> np.ndarray:
        """Coefficients along decreasing ``lambdas``: (n_lambda, p + 1), last column = intercept."""
        p = self.X.shape[1]
        out = np.zeros((len(lambdas), p + 1))
        if self.task == "continuous":
            theta = np.zeros(p)
        else:
            pbar = float(np.average(self.y, weights=self.sample_weight))
            theta = np.r_[np.zeros(p), math.log(max(pbar, 1e-12) / max(1 - pbar, 1e-12))]
        for i, lam in enumerate(lambdas):
            thr = np.where(np.isfinite(self.w), lam * self.w, np.inf)  # infinite weight = group excluded
            theta = _fista(self.grad, self.L, theta, self.gidx, thr, tol, max_iter, 0 if self.task == "continuous" else 1)
            if self.task == "continuous":
                out[i, :p], out[i, p] = theta, self.ybar
            else:
                out[i] = theta
        return out


def _predict_linear(task: str, X: np.ndarray, coef: np.ndarray) -> np.ndarray:
    eta = X @ coef[:-1] + coef[-1]
    return _sigmoid(eta) if task == "binary" else eta


def _loss(task: str, y: np.ndarray, pred: np.ndarray, sw: np.ndarray) -> float:
    if task == "binary":
        p = np.clip(pred, 1e-12, 1 - 1e-12)
        return float(np.average(-(y * np.log(p) + (1 - y) * np.log(1 - p)), weights=sw))
    return float(np.average((y - pred) ** 2, weights=sw))


def _folds(y: np.ndarray, task: str, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold label per sample; stratified by class for binary outcomes."""
    f = np.empty(y.size, dtype=int)
    if task == "binary":
        for cls in (0.0, 1.0):
            idx = rng.permutation(np.flatnonzero(y == cls))
            f[idx] = np.arange(idx.size) % k
    else:
        idx = rng.permutation(y.size)
        f[idx] = np.arange(idx.size) % k
    return f


def _balanced_weights(task: str, y: np.ndarray, class_weight: str | None) -> np.ndarray:
    if task != "binary" or class_weight != "balanced":
        return np.ones(y.size)
    p = float(y.mean())
    return np.where(y == 1, 0.5 / p, 0.5 / (1 - p))


def _standardize(X: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = X[rows].mean(axis=0)
    sd = X[rows].std(axis=0)
    return mu, np.where(sd > 1e-12, sd, 1.0)


@dataclass
class GroupLassoFit:
    """A fitted group lasso (on standardized features).

    ``coef`` (p,) and ``intercept`` act on standardized features ``(X - mean) / scale``;
    ``lambda_`` is the chosen penalty, ``cv`` the cross-validation table (lambda, mean, se).
    """

    task: str
    coef: np.ndarray
    intercept: float
    mean: np.ndarray
    scale: np.ndarray
    groups: np.ndarray
    lambda_: float
    cv: pd.DataFrame
    prior_shift: float = 0.0

    def decision(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean) / self.scale) @ self.coef + self.intercept + self.prior_shift

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Probabilities (binary) or values (continuous), shape (n,)."""
        e = self.decision(X)
        return _sigmoid(e) if self.task == "binary" else e

    def group_norms(self) -> np.ndarray:
        return np.array([np.linalg.norm(self.coef[self.groups == g]) for g in range(int(self.groups.max()) + 1)])


def fit_group_lasso(
    X: np.ndarray,
    y: np.ndarray,
    groups: Sequence[int],
    task: str,
    *,
    cv: int = 5,
    n_lambda: int = 30,
    lambda_min_ratio: float = 1e-3,
    rule: str = "1se",
    adaptive: bool = True,
    relax: bool = True,
    class_weight: str | None = "balanced",
    noise_cov: np.ndarray | None = None,
    random_state: int = 0,
) -> GroupLassoFit:
    """Group lasso over column groups with the penalty chosen by K-fold cross-validation.

    Parameters
    ----------
    X : (n, p) features; y : (n,) outcome (0/1 for binary); groups : (p,) group id per column.
    task : "binary" (logistic loss) or "continuous" (squared loss)
    rule : "1se" (the sparsest model within one standard error of the best) or "min"
    adaptive : reweight each group by 1 / ||beta_g|| of a first group-lasso fit (adaptive group
        lasso: consistent selection of the relevant groups)
    relax : with rule "1se", refit the selected groups alone at their CV-best penalty (the
        selection stays, the coefficients lose the extra shrinkage)
    class_weight : "balanced" weighs classes equally in the loss; probabilities are shifted back
        to the training prevalence afterwards
    noise_cov : (p, p), optional, continuous only: the covariance of the errors in X (estimated
        scores), subtracted from the Gram matrix (bias-corrected estimator)
    """
    cv = _check_int("cv", cv, 2)
    n_lambda = _check_int("n_lambda", n_lambda, 1)
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    g = np.asarray(groups, dtype=int)
    n, p = X.shape
    rng = np.random.default_rng(random_state)
    gidx = _group_index(g)
    base_w = np.array([math.sqrt(idx.size) for idx in gidx])
    folds = _folds(y, task, cv, rng)
    all_rows = np.arange(n)

    def problem(rows: np.ndarray, w: np.ndarray) -> tuple[_Problem, np.ndarray, np.ndarray]:
        mu, sd = _standardize(X, rows)
        Xs = (X[rows] - mu) / sd
        nc = None
        if noise_cov is not None and task == "continuous":
            nc = noise_cov / np.outer(sd, sd)
        sw = _balanced_weights(task, y[rows], class_weight)
        return _Problem(task, Xs, y[rows], gidx, w, sw, nc), mu, sd

    def cv_path(w: np.ndarray) -> tuple[np.ndarray, pd.DataFrame, int]:
        full, _, _ = problem(all_rows, w)
        lam = full.lambda_max() * np.logspace(0, math.log10(lambda_min_ratio), n_lambda)
        losses = cv_losses(w, lam)
        mean, se = losses.mean(axis=0), losses.std(axis=0, ddof=1) / math.sqrt(cv)
        best = int(np.argmin(mean))
        if rule == "1se":
            ok = np.flatnonzero(mean <= mean[best] + se[best])
            chosen = int(ok.min())  # largest lambda within one SE
        elif rule == "min":
            chosen = best
        else:
            raise ValueError(f"rule must be '1se' or 'min', got {rule!r}.")
        table = pd.DataFrame({"lambda": lam, "cv_loss": mean, "cv_se": se})
        return lam, table, chosen

    def cv_losses(w: np.ndarray, lam: np.ndarray) -> np.ndarray:
        losses = np.zeros((cv, lam.size))
        for k in range(cv):
            tr, va = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
            prob, mu, sd = problem(tr, w)
            path = prob.path(lam)
            Xv = (X[va] - mu) / sd
            swv = _balanced_weights(task, y[va], class_weight) if task == "binary" else np.ones(va.size)
            if prob.noise_cov is not None:
                # Validation loss with the same correction (unbiased for the loss on the error-free
                # features); plain prediction error would pull the penalty back to the attenuated fit.
                r = y[va] - path[0, -1]
                Sv = Xv.T @ Xv / va.size - prob.noise_cov
                cv_ = Xv.T @ r / va.size
                for i in range(lam.size):
                    b = path[i, :-1]
                    losses[k, i] = float(r @ r / va.size - 2 * b @ cv_ + b @ Sv @ b)
            else:
                for i in range(lam.size):
                    losses[k, i] = _loss(task, y[va], _predict_linear(task, Xv, path[i]), swv)
        return losses

    w = base_w
    if adaptive:
        lam, table, chosen = cv_path(base_w)
        full, _, _ = problem(all_rows, base_w)
        # First stage at the CV-best penalty, not 1-SE: keep every group that might matter.
        best = int(np.argmin(table.cv_loss.to_numpy()))
        first = full.path(lam[: best + 1])[-1]
        norms = np.array([np.linalg.norm(first[idx]) for idx in gidx])
        w = np.where(norms > 1e-10, base_w / np.maximum(norms, 1e-10), np.inf)
        if not np.isfinite(w).any():
            w = base_w
    lam, table, chosen = cv_path(w)
    full, mu, sd = problem(all_rows, w)
    coef = full.path(lam[: chosen + 1])[-1]
    if relax and rule == "1se":
        # Relaxed fit: the 1-SE penalty chooses the nodes, then the chosen nodes alone are refitted
        # with the CV-best penalty, so the selection's extra shrinkage does not cost accuracy.
        keep = np.array([np.linalg.norm(coef[idx]) > 1e-10 for idx in gidx])
        if keep.any():
            w_sel = np.where(keep, base_w, np.inf)
            lam2, _, _ = cv_path(w_sel)
            losses2 = cv_losses(w_sel, lam2)
            best2 = int(np.argmin(losses2.mean(axis=0)))
            full2, mu, sd = problem(all_rows, w_sel)
            coef = full2.path(lam2[: best2 + 1])[-1]
    shift = 0.0
    if task == "binary" and class_weight == "balanced":
        prev = float(y.mean())
        shift = math.log(prev / (1 - prev))  # back from equal class priors to the training prevalence
    return GroupLassoFit(task, coef[:-1], float(coef[-1]), mu, sd, g, float(lam[chosen]), table, shift)


# ---------------------------------------------------------------------------------------------
# ridge / L2-logistic baselines


def _ridge_path(Xtr: np.ndarray, ytr: np.ndarray, lams: np.ndarray) -> np.ndarray:
    """Ridge coefficients (n_lambda, p + 1) on centred data by one SVD."""
    mu, yb = Xtr.mean(axis=0), ytr.mean()
    U, s, Vt = np.linalg.svd(Xtr - mu, full_matrices=False)
    uty = U.T @ (ytr - yb)
    n = Xtr.shape[0]
    out = np.zeros((len(lams), Xtr.shape[1] + 1))
    for i, lam in enumerate(lams):
        b = Vt.T @ (s / (s**2 + n * lam) * uty)
        out[i, :-1], out[i, -1] = b, yb - mu @ b
    return out


def _logistic_l2(X: np.ndarray, y: np.ndarray, lam: float, sw: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
    """L2-penalized logistic regression by L-BFGS (torch, float64); returns (p + 1,)."""
    import torch

    Xt = torch.from_numpy(np.ascontiguousarray(X))
    yt = torch.from_numpy(y)
    wt = torch.from_numpy(sw)
    theta = torch.zeros(X.shape[1] + 1, dtype=torch.float64) if init is None else torch.from_numpy(init.copy())
    theta.requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=200, tolerance_grad=1e-8, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")
    n = X.shape[0]

    def closure():
        opt.zero_grad()
        eta = Xt @ theta[:-1] + theta[-1]
        loss = (wt * torch.nn.functional.softplus(eta) - wt * yt * eta).sum() / n + 0.5 * lam * (theta[:-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return theta.detach().numpy().copy()


@dataclass
class _Dense:
    """A tuned ridge / L2-logistic model on standardized features."""

    task: str
    coef: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    lambda_: float
    prior_shift: float = 0.0

    def predict(self, X: np.ndarray) -> np.ndarray:
        e = ((X - self.mean) / self.scale) @ self.coef[:-1] + self.coef[-1] + self.prior_shift
        return _sigmoid(e) if self.task == "binary" else e


def fit_ridge(X: np.ndarray, y: np.ndarray, task: str, *, cv: int = 5, n_lambda: int = 12,
              class_weight: str | None = "balanced", random_state: int = 0) -> _Dense:
    """Ridge regression (continuous) or L2-logistic regression (binary) with the penalty chosen by
    K-fold cross-validation (minimum validation loss)."""
    cv = _check_int("cv", cv, 2)
    n_lambda = _check_int("n_lambda", n_lambda, 1)
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    rng = np.random.default_rng(random_state)
    folds = _folds(y, task, cv, rng)
    lams = np.logspace(1, -5, n_lambda)
    losses = np.zeros((cv, n_lambda))
    for k in range(cv):
        tr, va = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        mu, sd = _standardize(X, tr)
        Xtr, Xva = (X[tr] - mu) / sd, (X[va] - mu) / sd
        if task == "continuous":
            path = _ridge_path(Xtr, y[tr], lams)
            for i in range(n_lambda):
                losses[k, i] = _loss(task, y[va], Xva @ path[i, :-1] + path[i, -1], np.ones(va.size))
        else:
            sw = _balanced_weights(task, y[tr], class_weight)
            swv = _balanced_weights(task, y[va], class_weight)
            theta = None
            for i, lam in enumerate(lams):
                theta = _logistic_l2(Xtr, y[tr], lam, sw, theta)
                losses[k, i] = _loss(task, y[va], _sigmoid(Xva @ theta[:-1] + theta[-1]), swv)
    best = int(np.argmin(losses.mean(axis=0)))
    mu, sd = _standardize(X, np.arange(X.shape[0]))
    Xs = (X - mu) / sd
    shift = 0.0
    if task == "continuous":
        coef = _ridge_path(Xs, y, lams[best : best + 1])[0]
    else:
        theta = None
        for lam in lams[: best + 1]:
            theta = _logistic_l2(Xs, y, lam, _balanced_weights(task, y, class_weight), theta)
        coef = theta
        if class_weight == "balanced":
            prev = float(y.mean())
            shift = math.log(prev / (1 - prev))
    return _Dense(task, coef, mu, sd, float(lams[best]), shift)


# ---------------------------------------------------------------------------------------------
# the report


@dataclass
class PredictionReport:
    """What :func:`evaluate_prediction` found.

    Attributes
    ----------
    task : "binary" or "continuous"
    metrics : DataFrame (metric, value, ci_low, ci_high) for HCL on the held-out test part
    selected_nodes : list of node tuples with a non-zero coefficient block
    node_importance : DataFrame (node, level, rank, coef_norm, share, selected)
    baselines : DataFrame, one row per model (HCL first) with the same metrics
    curves : {model: {"roc": DataFrame, "pr": DataFrame}} (binary) or {model: {"scatter": ...}}
    threshold : the probability threshold for F1/accuracy, chosen on the training part
    counts : labelled / train / test / unlabelled / missing-outcome sample counts
    notes : how the evaluation was done (leakage protocol, class balance, ...)
    """

    task: str
    metrics: pd.DataFrame
    selected_nodes: list[Node]
    node_importance: pd.DataFrame
    baselines: pd.DataFrame
    curves: dict[str, dict[str, pd.DataFrame]]
    threshold: float | None
    counts: dict[str, int]
    notes: list[str]
    lambda_: float
    cv: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)
    outcome: str | None = None

    def metric(self, name: str, model: str = "HCL") -> float:
        """One metric of one model (``"HCL"`` or a baseline's name)."""
        return float(self.baselines.set_index("model").loc[model, name])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able content (curves as lists)."""
        return {
            "task": self.task,
            "outcome": self.outcome,
            "metrics": self.metrics.to_dict(orient="records"),
            "selected_nodes": [node_label(n) for n in self.selected_nodes],
            "node_importance": self.node_importance.assign(node=[node_label(n) for n in self.node_importance.node]).to_dict(orient="records"),
            "baselines": self.baselines.to_dict(orient="records"),
            "curves": {m: {k: df.replace([np.inf, -np.inf], None).to_dict(orient="list") for k, df in c.items()} for m, c in self.curves.items()},
            "threshold": self.threshold,
            "counts": self.counts,
            "notes": self.notes,
            "lambda": self.lambda_,
            "timings": self.timings,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PredictionReport":
        """Rebuild a report from :meth:`to_dict` output (e.g. a run's prediction JSON)."""
        from .lattice import parse_node_label

        def frame(x: Any) -> pd.DataFrame:
            return pd.DataFrame(x).replace({None: np.nan})

        imp = frame(d["node_importance"])
        if len(imp):
            imp["node"] = [parse_node_label(x) if isinstance(x, str) and "+" in x else
                           (tuple(x) if isinstance(x, (list, tuple)) else _node_from_repr(x)) for x in imp["node"]]
        curves = {m: {k: frame(v) for k, v in c.items()} for m, c in d.get("curves", {}).items()}
        for c in curves.values():
            for df in c.values():
                if "threshold" in df:
                    df["threshold"] = df["threshold"].astype(float).fillna(np.inf)
        return cls(d["task"], frame(d["metrics"]), [parse_node_label(x) for x in d["selected_nodes"]], imp,
                   frame(d["baselines"]), curves, d.get("threshold"), dict(d.get("counts", {})), list(d.get("notes", [])),
                   float(d.get("lambda", np.nan)), pd.DataFrame(), dict(d.get("timings", {})), d.get("outcome"))

    def _repr_html_(self) -> str:
        from . import display

        lines = [f"{self.task} outcome {self.outcome or ''}; " + ", ".join(f"{k} {v:,}" for k, v in self.counts.items()),
                 "selected nodes: " + (", ".join(node_label(n) for n in self.selected_nodes) or "none")]
        body = "<b>HCL on the test part (95 % bootstrap intervals)</b>" + display.table(self.metrics)
        body += "<b>HCL vs baselines</b>" + display.table(self.baselines)
        imp = self.node_importance.assign(node=[node_label(n) for n in self.node_importance.node])
        body += "<b>Node importance</b>" + display.table(imp)
        return display.block("PredictionReport", lines, body)

    def plot_curves(self):
        """ROC and precision-recall curves (binary) or observed vs predicted (continuous), HCL vs baselines."""
        from .figures import curves_figure

        return curves_figure(self)

    def plot_metrics(self):
        """HCL vs baselines on the main metrics, with HCL's bootstrap intervals (plotly Figure)."""
        from .figures import metrics_figure

        return metrics_figure(self)

    def __str__(self) -> str:
        lines = [f"Prediction of {self.outcome or 'the outcome'} ({self.task}); "
                 + ", ".join(f"{k} {v}" for k, v in self.counts.items())]
        lines.append("selected nodes: " + (", ".join(node_label(n) for n in self.selected_nodes) or "none"))
        with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 3):
            lines.append("\nHCL on the test part (95 % bootstrap intervals):")
            lines.append(self.metrics.to_string(index=False))
            lines.append("\nnode importance:")
            imp = self.node_importance.assign(node=[node_label(n) for n in self.node_importance.node])
            lines.append(imp.to_string(index=False))
            lines.append("\nHCL vs baselines (test part):")
            lines.append(self.baselines.to_string(index=False))
        lines += ["", *(f"note: {n}" for n in self.notes)]
        return "\n".join(lines)

    __repr__ = __str__


def _node_from_repr(x: Any) -> Node:
    s = str(x).strip("()").replace("'", "").replace('"', "")
    return tuple(p.strip() for p in s.split(",") if p.strip())


def _check_int(name: str, value: Any, low: int) -> int:
    """``value`` as an int >= ``low``, or a ValueError naming the argument."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or int(value) < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    return int(value)


def _check_options(*, cv: Any, test_size: Any, n_bootstrap: Any, min_labelled: Any, task: Any, rule: Any,
                   class_weight: Any) -> None:
    """The options of :func:`evaluate_prediction`, checked before any work, each error naming its
    argument (``cv=1`` used to end in "Eigenvalues did not converge")."""
    _check_int("cv", cv, 2)
    _check_int("n_bootstrap", n_bootstrap, 0)
    _check_int("min_labelled", min_labelled, 1)
    if isinstance(test_size, (bool, np.bool_)) or not isinstance(test_size, (int, float, np.integer, np.floating)) \
            or not 0 < float(test_size) < 1:
        raise ValueError(f"test_size must be a number strictly between 0 and 1, got {test_size!r}.")
    if task not in ("auto", "binary", "continuous"):
        raise ValueError(f"task must be 'auto', 'binary' or 'continuous', got {task!r}.")
    if rule not in ("1se", "min"):
        raise ValueError(f"rule must be '1se' or 'min', got {rule!r}.")
    if class_weight not in ("balanced", None):
        raise ValueError(f"class_weight must be 'balanced' or None, got {class_weight!r}.")


def _task_of(y: np.ndarray, task: str) -> str:
    vals = np.unique(y)
    if task == "auto":
        return "binary" if vals.size <= 2 else "continuous"
    if task not in ("binary", "continuous"):
        raise ValueError(f"task must be 'auto', 'binary' or 'continuous', got {task!r}.")
    return task


def _as_outcome(y: Any, data: MultimodalData) -> tuple[np.ndarray, str | None]:
    name = None
    if isinstance(y, pd.Series):
        name = str(y.name) if y.name is not None else None
        if not isinstance(y.index, pd.RangeIndex) or len(y) != data.n_samples:
            y = y.reindex(pd.Index(np.asarray(data.ids)))
        y = y.to_numpy()
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != data.n_samples:
        raise ValueError(f"y must have one value per sample ({data.n_samples}), got shape {arr.shape}.")
    if arr.dtype.kind in "OUSb":
        s = pd.Series(arr)
        num = pd.to_numeric(s, errors="coerce")
        if num.notna().sum() < s.notna().sum():
            levels = s.dropna().unique()
            if len(levels) == 2:
                arr = (s == sorted(map(str, levels))[-1]).astype(float).where(s.notna()).to_numpy()
            else:
                raise ValueError(f"The outcome has {len(levels)} text levels; only binary and continuous outcomes are "
                                 "supported (make one level the positive class).")
        else:
            arr = num.to_numpy(dtype=np.float64)
    return np.asarray(arr, dtype=np.float64), name


def node_features(model, data: MultimodalData) -> tuple[np.ndarray, np.ndarray, list[Node]]:
    """Scores of a fitted HCL stacked as features: (X (n, R), group id per column (R,), nodes)."""
    Z = model.transform(data)
    nodes = [n for n in model.nodes_ if model.ranks_[n] > 0]
    if not nodes:
        return np.zeros((data.n_samples, 0)), np.zeros(0, dtype=int), []
    X = np.concatenate([Z[n] for n in nodes], axis=1)
    groups = np.concatenate([np.full(model.ranks_[n], k) for k, n in enumerate(nodes)])
    return X, groups, nodes


def _raw_features(data: MultimodalData) -> np.ndarray:
    """All modalities side by side (n, D); absent modalities as NaN (imputed by the caller)."""
    return np.concatenate([np.asarray(data.X[m], dtype=np.float64) for m in data.modalities], axis=1)


def _impute(X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    mu = np.nanmean(X[rows], axis=0)
    mu = np.where(np.isfinite(mu), mu, 0.0)
    return np.where(np.isnan(X), mu, X)


def evaluate_prediction(
    model,
    data: MultimodalData,
    y: Any,
    task: str = "auto",
    test_size: float = 0.25,
    cv: int = 5,
    random_state: int = 0,
    *,
    refit: bool = True,
    baselines: bool | Sequence[str] = True,
    bias_correction: bool = False,
    adaptive: bool = True,
    rule: str = "1se",
    class_weight: str | None = "balanced",
    n_bootstrap: int = 500,
    min_labelled: int = 20,
    callback: Callable[[str, dict], None] | None = None,
) -> PredictionReport:
    """Predict an outcome from the node blocks of HCL and compare with baselines, without leakage.

    Parameters
    ----------
    model : HCL
        Its parameters define the representation. With ``refit=True`` (default) a copy is fitted
        on every sample except the test samples (unlabelled ones included), so test samples never
        shape the representation; with ``refit=False`` the fitted model is used as is (the report
        says that the test samples may have been seen).
    data : MultimodalData
    y : array (n_samples,) or Series indexed by sample id; NaN = no label (skipped and counted).
        ``inf``/``-inf`` is an error (a ValueError giving their count), not a label: one of them
        would make every fitted mean, R^2 and MSE inf or NaN. Set them to NaN to skip those samples
        (:func:`~hcl_explore.io.load_outcomes` does so when it reads them from a file).
    task : "auto", "binary" or "continuous"
    test_size, cv, random_state : held-out share, folds for choosing the penalty, seed
    baselines : True, False or a subset of {"raw", "pca", "shared_private", "global_only"}
    bias_correction : continuous outcomes: subtract the score-error covariance from the Gram
        matrix (the paper's bias-corrected estimator)
    adaptive, rule, class_weight : see :func:`fit_group_lasso`
    n_bootstrap : resamples of the test part for the 95 % intervals

    Returns
    -------
    PredictionReport
    """
    from .model import HCL

    _check_options(cv=cv, test_size=test_size, n_bootstrap=n_bootstrap, min_labelled=min_labelled, task=task,
                   rule=rule, class_weight=class_weight)
    cv, n_bootstrap, test_size = int(cv), int(n_bootstrap), float(test_size)
    t0 = time.perf_counter()
    yv, name = _as_outcome(y, data)
    n_inf = int(np.isinf(yv).sum())
    if n_inf:
        raise ValueError(f"The outcome holds {n_inf} infinite value(s) (inf or -inf), e.g. at sample "
                         f"{np.asarray(data.ids)[np.flatnonzero(np.isinf(yv))[0]]!r}; set them to NaN (no label) "
                         "or correct them.")
    labelled = np.flatnonzero(~np.isnan(yv))
    n_missing = int(data.n_samples - labelled.size)
    if labelled.size < min_labelled:
        raise ValueError(f"Only {labelled.size} sample(s) have an outcome; at least {min_labelled} are needed.")
    vals = np.unique(yv[labelled])
    if vals.size < 2:
        raise ValueError(f"The outcome is constant ({vals[0]:g}) over the labelled samples; nothing to predict.")
    tk = _task_of(yv[labelled], task)
    if tk == "binary":
        if vals.size != 2:
            raise ValueError(f"task='binary' needs two outcome values, found {vals.size}.")
        if not np.array_equal(vals, [0.0, 1.0]):
            yv = np.where(np.isnan(yv), np.nan, (yv == vals[1]).astype(float))
        minority = int(min((yv[labelled] == 0).sum(), (yv[labelled] == 1).sum()))
        if minority < max(cv, 4):
            raise ValueError(f"Only {minority} sample(s) in the smaller outcome class; at least {max(cv, 4)} are needed "
                             "for cross-validation and a test part.")
    if not 0 < test_size < 1:
        raise ValueError("test_size must be between 0 and 1.")
    rng = np.random.default_rng(random_state)
    # Stratified split of the labelled samples.
    test = []
    strata = [labelled[yv[labelled] == v] for v in (0.0, 1.0)] if tk == "binary" else [labelled]
    for s in strata:
        perm = rng.permutation(s)
        test.append(perm[: max(1, int(round(test_size * s.size)))])
    test_idx = np.sort(np.concatenate(test))
    is_test = np.zeros(data.n_samples, dtype=bool)
    is_test[test_idx] = True
    train_idx = np.setdiff1d(labelled, test_idx)
    notes: list[str] = []
    timings: dict[str, float] = {}

    def emit(stage: str, **info: Any) -> None:
        if callback is not None:
            callback(stage, info)

    def representation(mdl, label: str):
        if refit:
            params = mdl.get_params() if hasattr(mdl, "get_params") else {}
            if isinstance(params.get("lattice"), dict):
                params["lattice"] = Lattice.from_dict(params["lattice"])
            fresh = HCL(**params)
            emit("representation", model=label)
            return fresh.fit(data.subset(~is_test))
        return mdl

    if model is None:
        model = HCL()
    if not refit and not hasattr(model, "W_"):
        raise ValueError("refit=False needs a fitted model.")
    t = time.perf_counter()
    rep_model = representation(model, "HCL")
    timings["representation"] = time.perf_counter() - t
    if refit:
        notes.append(f"No leakage: the HCL representation was fitted on the {int((~is_test).sum())} non-test samples "
                     f"(labelled training and unlabelled); the {test_idx.size} test samples were only transformed. "
                     "Feature standardization and the penalty (by cross-validation) used training samples only.")
    else:
        notes.append("refit=False: the given fitted representation was used; if it was fitted on all samples the test "
                     "samples shaped it (transductive; no outcome leakage).")
    X, groups, nodes = node_features(rep_model, data)
    if X.shape[1] == 0:
        raise ValueError("The fitted HCL found no factors; there is nothing to predict from.")
    noise_cov = None
    if bias_correction:
        if tk != "continuous":
            notes.append("bias_correction applies to continuous outcomes only; ignored.")
        else:
            noise_cov = rep_model.score_error_cov(data.subset(train_idx))
            notes.append("Bias-corrected estimator: the mean score-error covariance was subtracted from the Gram matrix.")
    t = time.perf_counter()
    gl = fit_group_lasso(X[train_idx], yv[train_idx], groups, tk, cv=cv, rule=rule, adaptive=adaptive,
                         class_weight=class_weight, noise_cov=noise_cov, random_state=random_state)
    timings["group_lasso"] = time.perf_counter() - t
    emit("group_lasso", lambda_=gl.lambda_)
    norms = gl.group_norms()
    contrib = np.array([np.var(((X[train_idx] - gl.mean) / gl.scale)[:, groups == k] @ gl.coef[groups == k])
                        for k in range(len(nodes))])
    share = contrib / contrib.sum() if contrib.sum() > 0 else np.zeros_like(contrib)
    selected = [n for n, v in zip(nodes, norms) if v > 1e-10]
    M = len(data.modalities)
    importance = pd.DataFrame({
        "node": nodes,
        "level": [node_level(n, M) for n in nodes],
        "rank": [int(rep_model.ranks_[n]) for n in nodes],
        "coef_norm": norms,
        "share": share,
        "selected": norms > 1e-10,
    }).sort_values("coef_norm", ascending=False, kind="mergesort").reset_index(drop=True)

    threshold = None
    if tk == "binary":
        # Threshold for F1/accuracy from the training part, never the test part (same rule for baselines).
        threshold = _best_f1_threshold(yv[train_idx], gl.predict(X[train_idx]))
        notes.append(f"Classes weighted equally in the loss (training prevalence {yv[train_idx].mean():.1%}); "
                     f"probabilities shifted back to it; F1/accuracy threshold {threshold:.3f} chosen (best F1) on the "
                     "training part." if class_weight == "balanced" else
                     f"F1/accuracy threshold {threshold:.3f} chosen (best F1) on the training part.")

    yt = yv[test_idx]
    brng = np.random.default_rng(random_state + 2)
    rows: list[dict] = []
    curves: dict[str, dict[str, pd.DataFrame]] = {}

    def score(label: str, pred: np.ndarray, n_features: int, thr: float | None) -> None:
        m = _metrics(tk, yt, pred, thr if thr is not None else 0.5)
        rows.append({"model": label, "n_features": n_features, **m})
        if tk == "binary":
            curves[label] = {"roc": roc_curve(yt, pred), "pr": pr_curve(yt, pred)}
        else:
            curves[label] = {"scatter": pd.DataFrame({"observed": yt, "predicted": pred})}

    p_hcl = gl.predict(X[test_idx])
    score("HCL", p_hcl, int(X.shape[1]), threshold)
    ci = _bootstrap(tk, yt, p_hcl, threshold if threshold is not None else 0.5, n_bootstrap, brng)
    metrics = pd.DataFrame([{"metric": k, "value": v, "ci_low": ci.get(k, (np.nan, np.nan))[0],
                             "ci_high": ci.get(k, (np.nan, np.nan))[1]} for k, v in rows[0].items()
                            if k not in ("model", "n_features")])

    wanted = {"raw", "pca", "shared_private", "global_only"} if baselines is True else set(baselines or [])
    unknown = wanted - {"raw", "pca", "shared_private", "global_only"}
    if unknown:
        raise ValueError(f"Unknown baselines {sorted(unknown)}.")
    t = time.perf_counter()
    if wanted & {"raw", "pca"}:
        R = _impute(_raw_features(data), np.setdiff1d(np.arange(data.n_samples), test_idx))
        if "raw" in wanted:
            emit("baseline", model="raw")
            dense = fit_ridge(R[train_idx], yv[train_idx], tk, cv=cv, class_weight=class_weight, random_state=random_state)
            score("raw features (ridge)" if tk == "continuous" else "raw features (L2-logistic)",
                  dense.predict(R[test_idx]), R.shape[1], _dense_threshold(dense, R[train_idx], yv[train_idx], tk))
        if "pca" in wanted:
            emit("baseline", model="pca")
            k = int(X.shape[1])
            fit_rows = np.setdiff1d(np.arange(data.n_samples), test_idx)
            mu, sd = _standardize(R, fit_rows)
            Rs = (R - mu) / sd
            _, _, Vt = np.linalg.svd(Rs[fit_rows], full_matrices=False)
            P = Rs @ Vt[:k].T
            dense = fit_ridge(P[train_idx], yv[train_idx], tk, cv=cv, class_weight=class_weight, random_state=random_state)
            score(f"PCA ({k} components)", dense.predict(P[test_idx]), k,
                  _dense_threshold(dense, P[train_idx], yv[train_idx], tk))
    for key, label in (("shared_private", "HCL shared-private lattice"), ("global_only", "HCL global node only")):
        if key not in wanted:
            continue
        emit("baseline", model=key)
        params = model.get_params()
        mods = list(data.modalities)
        params["lattice"] = Lattice.shared_private(mods) if key == "shared_private" else Lattice(mods, [tuple(mods)])
        params["ranks"] = "auto"
        alt = HCL(**params).fit(data.subset(~is_test) if refit else data)
        Xa, ga, na = node_features(alt, data)
        if Xa.shape[1] == 0:
            rows.append({"model": label, "n_features": 0})
            continue
        gla = fit_group_lasso(Xa[train_idx], yv[train_idx], ga, tk, cv=cv, rule=rule, adaptive=adaptive,
                              class_weight=class_weight, random_state=random_state)
        thr = _dense_threshold(gla, Xa[train_idx], yv[train_idx], tk, groups=ga, class_weight=class_weight)
        score(label, gla.predict(Xa[test_idx]), int(Xa.shape[1]), thr)
    timings["baselines"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    counts = {
        "labelled": int(labelled.size),
        "train": int(train_idx.size),
        "test": int(test_idx.size),
        "unlabelled": int(data.n_samples - labelled.size),
        "missing_outcome": n_missing,
    }
    if n_missing:
        notes.append(f"{n_missing} sample(s) without an outcome were skipped for the regression "
                     f"({'used for the representation only' if refit else 'not used'}).")
    return PredictionReport(tk, metrics, selected, importance, pd.DataFrame(rows), curves, threshold, counts, notes,
                            gl.lambda_, gl.cv, timings, name)


def _dense_threshold(model, X: np.ndarray, y: np.ndarray, task: str, groups=None, class_weight=None) -> float | None:
    """F1 threshold for a baseline from its training predictions (baselines get the same rule)."""
    if task != "binary":
        return None
    return _best_f1_threshold(y, model.predict(X))
