"""Downstream prediction from the hierarchy: group-sparse selection of the task-relevant nodes.

The node blocks of a fitted HCL are the features; a group lasso with one group per lattice node
(logistic loss for binary outcomes, multinomial loss for multiclass ones, squared loss for
continuous ones) picks the nodes that predict the outcome. :func:`evaluate_prediction` runs the
honest protocol: split the labelled samples, refit the representation's loadings on everything but
the test samples (keeping the fitted model's nodes and ranks), choose the penalty by
cross-validation on the training part only, report held-out metrics with bootstrap intervals and
plain-language warnings, and compare with baselines on the same split. What kind an outcome is and
which level is positive is decided by :mod:`hcl_explore.outcomes` (the rule the loader and the app
use too; README.md, section "Prediction").
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from .blas import one_blas_thread as _one_blas_thread
from .data import MultimodalData
from .lattice import Lattice, Node, node_label, node_level
from .outcomes import OutcomeCoding, outcome_kind

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


def _softmax(E: np.ndarray) -> np.ndarray:
    E = E - E.max(axis=1, keepdims=True)
    P = np.exp(E)
    return P / P.sum(axis=1, keepdims=True)


def _multiclass_metrics(y: np.ndarray, P: np.ndarray) -> dict[str, float]:
    """Multiclass metrics of probabilities ``P`` (n, K) for codes ``y`` (n,): ``auroc`` (one-vs-rest,
    macro over the classes present with both outcomes), ``f1_macro`` (over the classes that occur
    in ``y`` or the predictions), ``accuracy`` (predicted class = most probable) and ``brier``
    (mean over samples of the squared distance between P and the one-hot outcome)."""
    yi = y.astype(int)
    K = P.shape[1]
    pred = np.argmax(P, axis=1)
    aucs, f1s = [], []
    for k in range(K):
        yk = yi == k
        if 0 < yk.sum() < yk.size:
            aucs.append(roc_auc(yk, P[:, k]))
        pk = pred == k
        tp, fp, fn = float(np.sum(pk & yk)), float(np.sum(pk & ~yk)), float(np.sum(~pk & yk))
        if tp + fp + fn > 0:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    onehot = np.zeros_like(P)
    onehot[np.arange(yi.size), yi] = 1.0
    return {
        "auroc": float(np.mean(aucs)) if aucs else float("nan"),
        "f1_macro": float(np.mean(f1s)) if f1s else float("nan"),
        "accuracy": float(np.mean(pred == yi)),
        "brier": float(np.mean(np.sum((P - onehot) ** 2, axis=1))),
    }


def confusion_matrix(y: np.ndarray, pred: np.ndarray, labels: Sequence[str]) -> pd.DataFrame:
    """Counts of (true class, predicted class) for codes 0..K-1: rows = true, columns = predicted,
    both named by ``labels``."""
    K = len(labels)
    m = np.zeros((K, K), dtype=int)
    np.add.at(m, (np.asarray(y, dtype=int), np.asarray(pred, dtype=int)), 1)
    return pd.DataFrame(m, index=pd.Index([str(x) for x in labels], name="true"),
                        columns=pd.Index([str(x) for x in labels], name="predicted"))


def _continuous_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    res = y - p
    ss = float(np.sum((y - y.mean()) ** 2))
    return {
        "r2": 1 - float(np.sum(res**2)) / ss if ss > 0 else float("nan"),
        "mse": float(np.mean(res**2)),
        "mae": float(np.mean(np.abs(res))),
    }


def _metrics(task: str, y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    if task == "multiclass":
        return _multiclass_metrics(y, p)
    return _binary_metrics(y, p, threshold) if task == "binary" else _continuous_metrics(y, p)


def _bootstrap(task: str, y: np.ndarray, p: np.ndarray, threshold: float, n_boot: int, rng: np.random.Generator) -> dict[str, tuple[float, float]]:
    """Percentile 95 % intervals of each metric over bootstrap resamples of the test set."""
    if n_boot <= 0:
        return {}
    vals: dict[str, list[float]] = {}
    n = y.size
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        if task in ("binary", "multiclass") and (y[idx].min() == y[idx].max()):
            continue
        for k, v in _metrics(task, y[idx], p[idx], threshold).items():
            vals.setdefault(k, []).append(v)
    return {k: (float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))) for k, v in vals.items()
            if np.isfinite(v).any()}


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


@dataclass
class _MultiProblem:
    """Multinomial logistic loss with one group per node over all classes: theta = (B (p, K)
    flattened row-major, intercepts b (K,)); ``gidx`` index the flattened B.

    :meth:`path` is the fast solver (active set with strong-rule screening and a KKT check,
    accelerated proximal gradient with an adaptive step); :meth:`path_reference` the plain one
    (every group, the global Lipschitz step), kept to check the fast one against (tests)."""

    X: np.ndarray
    y: np.ndarray  # codes 0..K-1
    K: int
    gidx: list[np.ndarray]
    w: np.ndarray
    sample_weight: np.ndarray
    task: str = "multiclass"
    noise_cov: np.ndarray | None = None

    def __post_init__(self) -> None:
        n, p = self.X.shape
        self.Y = np.zeros((n, self.K))
        self.Y[np.arange(n), self.y.astype(int)] = 1.0
        sw = self.sample_weight
        self._Yw = self.Y * (sw / n)[:, None]
        self._swn = sw / n
        # The multinomial Hessian is at most 1/2 of the weighted Gram matrix (per class).
        self._gram = self.X.T @ (self.X * sw[:, None]) / n if p else np.zeros((0, 0))
        self.L = 0.5 * float(np.linalg.eigvalsh(self._gram).max()) + 1e-12 if p else 1.0
        self.L = max(self.L, 0.5 * float(np.mean(sw)))
        # Column -> group (the groups of the flattened B are whole rows of B: a node's columns).
        self._cg = np.full(p, -1, dtype=int)
        for k, idx in enumerate(self.gidx):
            self._cg[np.unique(idx // self.K)] = k

    def _b0(self) -> np.ndarray:
        prior = np.average(self.Y, axis=0, weights=self.sample_weight)
        return np.log(np.maximum(prior, 1e-12))

    def grad(self, theta: np.ndarray) -> np.ndarray:
        n, p = self.X.shape
        B, b = theta[: p * self.K].reshape(p, self.K), theta[p * self.K:]
        E = self.X @ B + b
        E -= E.max(axis=1, keepdims=True)
        np.exp(E, out=E)
        E *= (self.sample_weight / (n * E.sum(axis=1)))[:, None]
        R = E - self._Yw  # sample_weight * (softmax - onehot) / n
        return np.concatenate(((self.X.T @ R).ravel(), R.sum(axis=0)))

    def loss(self, theta: np.ndarray) -> float:
        """The smooth part: the weighted mean multinomial deviance / 2."""
        p = self.X.shape[1]
        return self._loss_eta(self.X @ theta[: p * self.K].reshape(p, self.K) + theta[p * self.K:])

    def _loss_eta(self, E: np.ndarray) -> float:
        mx = E.max(axis=1)
        lse = mx + np.log(np.exp(E - mx[:, None]).sum(axis=1))
        return float(self._swn @ lse - np.vdot(self._Yw, E))

    def _residual_loss(self, E: np.ndarray) -> tuple[np.ndarray, float]:
        """(:meth:`_residual`, :meth:`_loss_eta`) of ``E`` with one exponential."""
        mx = E.max(axis=1)
        P = np.exp(E - mx[:, None])
        tot = P.sum(axis=1)
        loss = float(self._swn @ (mx + np.log(tot)) - np.vdot(self._Yw, E))
        P *= (self._swn / tot)[:, None]
        return P - self._Yw, loss

    def objective(self, theta: np.ndarray, lam: float) -> float:
        """Loss plus ``lam`` times the weighted group norms (infinite weight: the group must be 0)."""
        pen = 0.0
        for k, idx in enumerate(self.gidx):
            nrm = float(np.linalg.norm(theta[idx]))
            if nrm > 0:
                pen += math.inf if not np.isfinite(self.w[k]) else self.w[k] * nrm
        return self.loss(theta) + lam * pen

    def lambda_max(self) -> float:
        p = self.X.shape[1]
        g = self.grad(np.r_[np.zeros(p * self.K), self._b0()])[: p * self.K]
        vals = [np.linalg.norm(g[idx]) / self.w[k] for k, idx in enumerate(self.gidx) if np.isfinite(self.w[k])]
        return float(max(vals)) if vals else 1.0

    def path_reference(self, lambdas: np.ndarray, tol: float = 1e-7, max_iter: int = 5000) -> np.ndarray:
        p = self.X.shape[1]
        out = np.zeros((len(lambdas), p * self.K + self.K))
        theta = np.r_[np.zeros(p * self.K), self._b0()]
        for i, lam in enumerate(lambdas):
            thr = np.where(np.isfinite(self.w), lam * self.w, np.inf)
            theta = _fista(self.grad, self.L, theta, self.gidx, thr, tol, max_iter, self.K)
            out[i] = theta
        return out

    def path(self, lambdas: np.ndarray, tol: float = 1e-7, max_iter: int = 5000) -> np.ndarray:
        """Coefficients along decreasing ``lambdas`` (n_lambda, p * K + K), each warm-started from
        the previous one (:meth:`path_iter`)."""
        p = self.X.shape[1]
        out = np.zeros((len(lambdas), p * self.K + self.K))
        for i, theta in enumerate(self.path_iter(lambdas, tol, max_iter)):
            out[i] = theta
        return out

    def path_iter(self, lambdas: np.ndarray, tol: float = 1e-7, max_iter: int = 5000) -> Iterator[np.ndarray]:
        """:meth:`path` one penalty at a time (the caller may stop early). Per penalty: the groups
        active before plus those the sequential strong rule keeps (||grad_g|| >= w_g (2 lam -
        lam_prev)) are solved alone; groups whose KKT condition fails at that solution are added
        and it is solved again, so the result is the full problem's solution (to ``tol``)."""
        X, K = self.X, self.K
        n, p = X.shape
        ng = len(self.gidx)
        B = np.zeros((p, K))
        b = self._b0()
        finite = np.isfinite(self.w)
        active = np.zeros(ng, dtype=bool)
        lam_prev = None
        # Gradient of the loss at the current solution (all columns): for screening and KKT.
        G = self._grad_B(X @ B + b)
        for i, lam in enumerate(lambdas):
            gn = np.sqrt(np.bincount(self._cg[self._cg >= 0], weights=(G[self._cg >= 0] ** 2).sum(axis=1),
                                     minlength=ng))
            lp = lambdas[0] if lam_prev is None else lam_prev
            strong = finite & (gn >= np.where(finite, self.w, 0.0) * max(2 * lam - lp, 0.0))
            cand = active | strong
            for _ in range(ng + 1):
                cols = np.flatnonzero(np.isin(self._cg, np.flatnonzero(cand)))
                if cols.size:
                    Bc, b = self._solve(cols, B[cols], b, lam, tol, max_iter)
                    B[:] = 0.0
                    B[cols] = Bc
                else:
                    B[:] = 0.0
                    b = self._intercepts_only(b, tol, max_iter)
                G = self._grad_B(X @ B + b)
                gn = np.sqrt(np.bincount(self._cg[self._cg >= 0], weights=(G[self._cg >= 0] ** 2).sum(axis=1),
                                         minlength=ng))
                viol = finite & ~cand & (gn > np.where(finite, self.w, 0.0) * lam * (1 + 1e-6) + 1e-12)
                if not viol.any():
                    break
                cand |= viol
            bn = np.sqrt(np.bincount(self._cg[self._cg >= 0], weights=(B[self._cg >= 0] ** 2).sum(axis=1),
                                     minlength=ng))
            active = bn > 0
            yield np.concatenate((B.ravel(), b))
            lam_prev = lam

    def _grad_B(self, E: np.ndarray) -> np.ndarray:
        return self.X.T @ self._residual(E)

    def _residual(self, E: np.ndarray) -> np.ndarray:
        P = E - E.max(axis=1, keepdims=True)
        np.exp(P, out=P)
        P *= (self._swn / P.sum(axis=1))[:, None]
        return P - self._Yw

    def _intercepts_only(self, b: np.ndarray, tol: float, max_iter: int) -> np.ndarray:
        # With every coefficient at zero the weighted class shares are the intercepts' optimum.
        return self._b0()

    def _solve(self, cols: np.ndarray, B: np.ndarray, b: np.ndarray, lam: float, tol: float,
               max_iter: int) -> tuple[np.ndarray, np.ndarray]:
        """FISTA on the columns ``cols`` (B (c, K), b (K,)), with restarts and an adaptive step: the
        step grows by 1/0.8 each iteration and halves while the quadratic upper bound fails
        (Scheinberg, Goldfarb & Bai's momentum for varying steps); the loss's curvature is far below
        the global bound once the classes separate. Same stopping rule as :func:`_fista`."""
        X = self.X[:, cols]
        cg_local = np.unique(self._cg[cols], return_inverse=True)[1]
        thr = lam * self.w[np.unique(self._cg[cols])]
        sub = self._gram[np.ix_(cols, cols)]
        L_max = max(0.5 * float(np.linalg.eigvalsh(sub).max()) + 1e-12, 0.5 * float(np.mean(self.sample_weight)))
        L = L_max * 0.25
        x_B, x_b = B.copy(), b.copy()
        Ex = X @ x_B + x_b
        y_B, y_b, Ey = x_B, x_b, Ex
        t = 1.0
        ng = thr.size
        for _ in range(max_iter):
            R, fy = self._residual_loss(Ey)
            gB, gb = X.T @ R, R.sum(axis=0)
            L_try = max(L * 0.8, 1e-12)
            while True:
                Z = y_B - gB / L_try
                nrm = np.sqrt(np.bincount(cg_local, weights=(Z ** 2).sum(axis=1), minlength=ng))
                scale = np.maximum(0.0, 1.0 - thr / (L_try * np.maximum(nrm, 1e-300)))
                nB = Z * scale[cg_local][:, None]
                nb = y_b - gb / L_try
                En = X @ nB + nb
                dB, db = nB - y_B, nb - y_b
                quad = fy + float(np.vdot(gB, dB) + gb @ db) + 0.5 * L_try * float(np.vdot(dB, dB) + db @ db)
                if self._loss_eta(En) <= quad + 1e-12 * abs(fy) or L_try >= L_max:
                    break
                L_try = min(2.0 * L_try, L_max)
            tn = (1 + math.sqrt(1 + 4 * (L_try / L) * t * t)) / 2
            L = L_try
            step = max(float(np.max(np.abs(nB - x_B))) if nB.size else 0.0, float(np.max(np.abs(nb - x_b))))
            big = max(1.0, float(np.max(np.abs(nB))) if nB.size else 0.0, float(np.max(np.abs(nb))))
            # Restart the momentum when it points uphill (O'Donoghue & Candes).
            if float(np.vdot(y_B - nB, nB - x_B) + (y_b - nb) @ (nb - x_b)) > 0:
                tn = 1.0
                y_B, y_b, Ey = nB, nb, En
            else:
                beta = (t - 1) / tn
                y_B, y_b, Ey = nB + beta * (nB - x_B), nb + beta * (nb - x_b), En + beta * (En - Ex)
            x_B, x_b, Ex, t = nB, nb, En, tn
            if step <= tol * big:
                break
        return x_B, x_b


def _expand_groups(gidx: list[np.ndarray], K: int) -> list[np.ndarray]:
    """Column groups -> index groups of the flattened (p, K) coefficient matrix."""
    return [(idx[:, None] * K + np.arange(K)[None, :]).ravel() for idx in gidx]


def _predict_linear(task: str, X: np.ndarray, coef: np.ndarray) -> np.ndarray:
    if task == "multiclass":
        K = int(round((coef.size) / (X.shape[1] + 1)))
        p = X.shape[1]
        return _softmax(X @ coef[: p * K].reshape(p, K) + coef[p * K:])
    eta = X @ coef[:-1] + coef[-1]
    return _sigmoid(eta) if task == "binary" else eta


def _loss(task: str, y: np.ndarray, pred: np.ndarray, sw: np.ndarray) -> float:
    if task == "multiclass":
        pk = np.clip(pred[np.arange(y.size), y.astype(int)], 1e-12, 1.0)
        return float(np.average(-np.log(pk), weights=sw))
    if task == "binary":
        p = np.clip(pred, 1e-12, 1 - 1e-12)
        return float(np.average(-(y * np.log(p) + (1 - y) * np.log(1 - p)), weights=sw))
    return float(np.average((y - pred) ** 2, weights=sw))


def _folds(y: np.ndarray, task: str, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold label per sample; stratified by class for binary and multiclass outcomes."""
    f = np.empty(y.size, dtype=int)
    if task in ("binary", "multiclass"):
        for cls in ((0.0, 1.0) if task == "binary" else np.unique(y)):
            idx = rng.permutation(np.flatnonzero(y == cls))
            f[idx] = np.arange(idx.size) % k
    else:
        idx = rng.permutation(y.size)
        f[idx] = np.arange(idx.size) % k
    return f


def _balanced_weights(task: str, y: np.ndarray, class_weight: str | None, n_classes: int | None = None) -> np.ndarray:
    if task == "multiclass" and class_weight == "balanced":
        K = int(n_classes or (int(y.max()) + 1))
        freq = np.bincount(y.astype(int), minlength=K) / y.size
        present = int(np.sum(freq > 0))
        return 1.0 / (present * np.maximum(freq, 1e-12))[y.astype(int)]
    if task != "binary" or class_weight != "balanced":
        return np.ones(y.size)
    p = float(y.mean())
    return np.where(y == 1, 0.5 / p, 0.5 / (1 - p))


#: A cross-validated path stops after this many rises of the mean CV loss in a row ...
CV_STOP_RISES = 3
#: ... once the loss is this many standard errors (at the minimum) above its minimum.
CV_STOP_SE = 2.0


def _cv_turned_up(losses: np.ndarray) -> bool:
    """Whether the mean CV loss (folds x penalties so far) has clearly passed its minimum: it rose
    :data:`CV_STOP_RISES` times in a row and lies :data:`CV_STOP_SE` standard errors above the
    minimum. Neither rule ("min", "1se") can then choose a later penalty unless the curve came
    back down by more than that, which a validation deviance does not do as the penalty weakens."""
    mean = losses.mean(axis=0)
    i, j = mean.size - 1, int(np.argmin(mean))
    if i - j < CV_STOP_RISES or not np.all(np.diff(mean[-CV_STOP_RISES - 1:]) > 0):
        return False
    se = float(losses[:, j].std(ddof=1)) / math.sqrt(losses.shape[0]) if losses.shape[0] > 1 else 0.0
    return bool(mean[i] > mean[j] + CV_STOP_SE * se)


def _standardize(X: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = X[rows].mean(axis=0)
    sd = X[rows].std(axis=0)
    return mu, np.where(sd > 1e-12, sd, 1.0)


@dataclass
class GroupLassoFit:
    """A fitted group lasso (on standardized features).

    ``coef`` (p,) and ``intercept`` act on standardized features ``(X - mean) / scale``
    (multiclass: ``coef`` (p, K), ``intercept`` and ``prior_shift`` (K,));
    ``lambda_`` is the chosen penalty, ``cv`` the cross-validation table (lambda, mean, se).
    """

    task: str
    coef: np.ndarray
    intercept: Any
    mean: np.ndarray
    scale: np.ndarray
    groups: np.ndarray
    lambda_: float
    cv: pd.DataFrame
    prior_shift: Any = 0.0

    def decision(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean) / self.scale) @ self.coef + self.intercept + self.prior_shift

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Probabilities (binary, shape (n,); multiclass, shape (n, K)) or values (continuous, (n,))."""
        e = self.decision(X)
        if self.task == "multiclass":
            return _softmax(e)
        return _sigmoid(e) if self.task == "binary" else e

    def group_norms(self) -> np.ndarray:
        return np.array([np.linalg.norm(self.coef[self.groups == g]) for g in range(int(self.groups.max()) + 1)])


@_one_blas_thread()
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
    X : (n, p) features; y : (n,) outcome (0/1 for binary, codes 0..K-1 for multiclass);
    groups : (p,) group id per column.
    task : "binary" (logistic loss), "multiclass" (multinomial loss; a node's group holds its
        coefficients for every class) or "continuous" (squared loss)
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
    K = int(y.max()) + 1 if task == "multiclass" else 1
    pidx = _expand_groups(gidx, K) if task == "multiclass" else gidx  # groups of the coefficient vector
    # Multinomial paths converge slowly to 1e-7 (K x the coefficients, weaker curvature); 1e-5 keeps
    # the same selection at a fraction of the iterations (10 classes x 256 node factors).
    path_tol = 1e-5 if task == "multiclass" else 1e-7

    def problem(rows: np.ndarray, w: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
        mu, sd = _standardize(X, rows)
        Xs = (X[rows] - mu) / sd
        nc = None
        if noise_cov is not None and task == "continuous":
            nc = noise_cov / np.outer(sd, sd)
        sw = _balanced_weights(task, y[rows], class_weight, K)
        if task == "multiclass":
            return _MultiProblem(Xs, y[rows], K, pidx, w, sw), mu, sd
        return _Problem(task, Xs, y[rows], gidx, w, sw, nc), mu, sd

    def cv_path(w: np.ndarray) -> tuple[np.ndarray, pd.DataFrame, int]:
        full, _, _ = problem(all_rows, w)
        lam = full.lambda_max() * np.logspace(0, math.log10(lambda_min_ratio), n_lambda)
        losses = cv_losses(w, lam)
        lam = lam[: losses.shape[1]]  # multiclass: the path stops once the CV loss has clearly turned up
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
        if task == "multiclass":
            # The folds walk the path together, and stop where the mean CV loss has clearly turned
            # up (the weakest penalties, where the classes separate, cost the most iterations).
            walk = []
            for k in range(cv):
                tr, va = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
                prob, mu, sd = problem(tr, w)
                walk.append((prob.path_iter(lam, tol=path_tol), (X[va] - mu) / sd, y[va],
                             _balanced_weights(task, y[va], class_weight, K)))
            for i in range(lam.size):
                for k, (steps, Xv, yk, swv) in enumerate(walk):
                    losses[k, i] = _loss(task, yk, _predict_linear(task, Xv, next(steps)), swv)
                if _cv_turned_up(losses[:, : i + 1]):
                    return losses[:, : i + 1]
            return losses
        for k in range(cv):
            tr, va = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
            prob, mu, sd = problem(tr, w)
            path = prob.path(lam, tol=path_tol)
            Xv = (X[va] - mu) / sd
            swv = _balanced_weights(task, y[va], class_weight, K) if task != "continuous" else np.ones(va.size)
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
        first = full.path(lam[: best + 1], tol=path_tol)[-1]
        norms = np.array([np.linalg.norm(first[idx]) for idx in pidx])
        w = np.where(norms > 1e-10, base_w / np.maximum(norms, 1e-10), np.inf)
        if not np.isfinite(w).any():
            w = base_w
    lam, table, chosen = cv_path(w)
    full, mu, sd = problem(all_rows, w)
    coef = full.path(lam[: chosen + 1], tol=path_tol)[-1]
    if relax and rule == "1se":
        # Relaxed fit: the 1-SE penalty chooses the nodes, then the chosen nodes alone are refitted
        # with the CV-best penalty, so the selection's extra shrinkage does not cost accuracy.
        keep = np.array([np.linalg.norm(coef[idx]) > 1e-10 for idx in pidx])
        if keep.any():
            w_sel = np.where(keep, base_w, np.inf)
            lam2, table2, _ = cv_path(w_sel)  # its table holds the mean CV losses (no second pass)
            best2 = int(np.argmin(table2.cv_loss.to_numpy()))
            full2, mu, sd = problem(all_rows, w_sel)
            coef = full2.path(lam2[: best2 + 1], tol=path_tol)[-1]
    shift: Any = 0.0
    if task == "binary" and class_weight == "balanced":
        prev = float(y.mean())
        shift = math.log(prev / (1 - prev))  # back from equal class priors to the training prevalence
    if task == "multiclass":
        if class_weight == "balanced":
            shift = np.log(np.maximum(np.bincount(y.astype(int), minlength=K) / y.size, 1e-12))
        return GroupLassoFit(task, coef[: p * K].reshape(p, K), coef[p * K:].copy(), mu, sd, g, float(lam[chosen]),
                             table, shift)
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


def _lbfgs_l2(X: np.ndarray, target, shape: tuple[int, ...], lam: float, sw: np.ndarray, init: np.ndarray | None,
              sample_loss) -> np.ndarray:
    """Weighted mean of ``sample_loss(eta, target)`` plus ``lam/2 |W|^2`` (intercept row ``theta[-1]``
    not penalized), minimized by L-BFGS (torch, float64) over ``theta`` of ``shape``."""
    import torch

    Xt = torch.from_numpy(np.ascontiguousarray(X))
    wt = torch.from_numpy(sw)
    theta = torch.zeros(shape, dtype=torch.float64) if init is None else torch.from_numpy(init.copy())
    theta.requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=200, tolerance_grad=1e-8, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")
    n = X.shape[0]

    def closure():
        opt.zero_grad()
        eta = Xt @ theta[:-1] + theta[-1]
        loss = (wt * sample_loss(eta, target)).sum() / n + 0.5 * lam * (theta[:-1] ** 2).sum()
        loss.backward()
        return loss

    # One intra-op thread: these small problems ran ~80x slower with 2 threads on a busy 2-core
    # machine (8.5 s vs 0.1 s for 900 x 45, 4 classes), the threads waiting on each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        opt.step(closure)
    finally:
        torch.set_num_threads(threads)
    return theta.detach().numpy().copy()


def _logistic_l2(X: np.ndarray, y: np.ndarray, lam: float, sw: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
    """L2-penalized logistic regression by L-BFGS (torch, float64); returns (p + 1,)."""
    import torch

    return _lbfgs_l2(X, torch.from_numpy(y), (X.shape[1] + 1,), lam, sw, init,
                     lambda eta, yt: torch.nn.functional.softplus(eta) - yt * eta)


def _logistic_multi(X: np.ndarray, y: np.ndarray, K: int, lam: float, sw: np.ndarray,
                    init: np.ndarray | None = None) -> np.ndarray:
    """L2-penalized multinomial logistic regression by L-BFGS (torch, float64); returns (p + 1, K)
    (last row = intercepts)."""
    import torch

    return _lbfgs_l2(X, torch.from_numpy(y.astype(np.int64)), (X.shape[1] + 1, K), lam, sw, init,
                     lambda eta, yt: torch.nn.functional.cross_entropy(eta, yt, reduction="none"))


@dataclass
class _Dense:
    """A tuned ridge / L2-logistic model on standardized features."""

    task: str
    coef: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    lambda_: float
    prior_shift: Any = 0.0

    def predict(self, X: np.ndarray) -> np.ndarray:
        e = ((X - self.mean) / self.scale) @ self.coef[:-1] + self.coef[-1] + self.prior_shift
        if self.task == "multiclass":
            return _softmax(e)
        return _sigmoid(e) if self.task == "binary" else e


@_one_blas_thread()
def fit_ridge(X: np.ndarray, y: np.ndarray, task: str, *, cv: int = 5, n_lambda: int = 12,
              class_weight: str | None = "balanced", random_state: int = 0) -> _Dense:
    """Ridge regression (continuous), L2-logistic (binary) or L2-multinomial (multiclass, codes
    0..K-1) regression with the penalty chosen by K-fold cross-validation (minimum validation loss)."""
    cv = _check_int("cv", cv, 2)
    n_lambda = _check_int("n_lambda", n_lambda, 1)
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    rng = np.random.default_rng(random_state)
    folds = _folds(y, task, cv, rng)
    lams = np.logspace(1, -5, n_lambda)
    K = int(y.max()) + 1 if task == "multiclass" else 1
    losses = np.zeros((cv, n_lambda))
    for k in range(cv):
        tr, va = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        mu, sd = _standardize(X, tr)
        Xtr, Xva = (X[tr] - mu) / sd, (X[va] - mu) / sd
        if task == "continuous":
            path = _ridge_path(Xtr, y[tr], lams)
            for i in range(n_lambda):
                losses[k, i] = _loss(task, y[va], Xva @ path[i, :-1] + path[i, -1], np.ones(va.size))
        elif task == "multiclass":
            sw = _balanced_weights(task, y[tr], class_weight, K)
            swv = _balanced_weights(task, y[va], class_weight, K)
            theta = None
            for i, lam in enumerate(lams):
                theta = _logistic_multi(Xtr, y[tr], K, lam, sw, theta)
                losses[k, i] = _loss(task, y[va], _softmax(Xva @ theta[:-1] + theta[-1]), swv)
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
    elif task == "multiclass":
        theta = None
        for lam in lams[: best + 1]:
            theta = _logistic_multi(Xs, y, K, lam, _balanced_weights(task, y, class_weight, K), theta)
        coef = theta
        if class_weight == "balanced":
            shift = np.log(np.maximum(np.bincount(y.astype(int), minlength=K) / y.size, 1e-12))
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

#: Baselines of :func:`evaluate_prediction`. ``"global_node"`` is HCL with the global node alone
#: (no partial, no private node); it is not the lattice preset ``"global_only"`` (global node plus
#: the private nodes), whence the different name.
BASELINES = ("raw", "pca", "shared_private", "global_node")
_BASELINE_ALIASES = {"global_only": "global_node"}  # the prediction baseline's name before it was renamed

#: Warning thresholds of :func:`evaluate_prediction` (see :func:`prediction_warnings`).
MIN_TEST_SAMPLES = 30
MIN_TEST_CASES = 10
MAX_MISSING_SHARE = 0.2


@dataclass
class PredictionReport:
    """What :func:`evaluate_prediction` found.

    Attributes
    ----------
    task : "binary", "multiclass" or "continuous" (the kind by :mod:`hcl_explore.outcomes`)
    metrics : DataFrame (metric, value, ci_low, ci_high) for HCL on the held-out test part
        (binary: auroc, auprc, f1, accuracy, brier; multiclass: auroc (one-vs-rest, macro),
        f1_macro, accuracy, brier; continuous: r2, mse, mae)
    selected_nodes : list of node tuples with a non-zero coefficient block
    node_importance : DataFrame (node, level, rank, coef_norm, share, selected)
    baselines : DataFrame, one row per model (HCL first) with the same metrics
    curves : {model: {"roc": DataFrame, "pr": DataFrame}} (binary), {model: {"roc": DataFrame with
        a ``class`` column, one-vs-rest}} (multiclass) or {model: {"scatter": ...}} (continuous)
    threshold : the probability threshold for F1/accuracy, chosen on the training part (binary)
    counts : labelled / train / test / unlabelled / missing-outcome sample counts
    notes : how the evaluation was done (leakage protocol, class balance, ...)
    positive_label : the outcome's original label taken as positive (binary; e.g. ``"readmitted"``)
    classes : the original labels in code order (binary: negative, positive; multiclass: all)
    confusion : DataFrame (true x predicted counts, named by ``classes``) of HCL on the test part
    warnings : plain-language cautions (tiny test part, few minority cases, a metric at its
        ceiling, many missing outcomes, more features than samples, a structure not kept)
    structure : the representation's structure: ``kept`` (the refit has the fitted model's nodes
        and ranks), ``fitted`` and ``used`` ({node label: rank}) and ``note``
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
    positive_label: str | None = None
    classes: list[str] = field(default_factory=list)
    confusion: pd.DataFrame | None = None
    warnings: list[str] = field(default_factory=list)
    structure: dict[str, Any] = field(default_factory=dict)

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
            "positive_label": self.positive_label,
            "classes": list(self.classes),
            "confusion": None if self.confusion is None else {
                "labels": [str(x) for x in self.confusion.index], "matrix": self.confusion.to_numpy().astype(int).tolist()},
            "warnings": list(self.warnings),
            "structure": self.structure,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PredictionReport":
        """Rebuild a report from :meth:`to_dict` output (e.g. a run's prediction JSON; files saved
        before the multiclass, warning and structure fields read with those empty)."""
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
        conf = d.get("confusion")
        confusion = None
        if isinstance(conf, Mapping) and conf.get("labels") is not None:
            lab = [str(x) for x in conf["labels"]]
            confusion = pd.DataFrame(np.asarray(conf["matrix"], dtype=int).reshape(len(lab), len(lab)),
                                     index=pd.Index(lab, name="true"), columns=pd.Index(lab, name="predicted"))
        return cls(d["task"], frame(d["metrics"]), [parse_node_label(x) for x in d["selected_nodes"]], imp,
                   frame(d["baselines"]), curves, d.get("threshold"), dict(d.get("counts", {})), list(d.get("notes", [])),
                   float(d.get("lambda", np.nan)), pd.DataFrame(), dict(d.get("timings", {})), d.get("outcome"),
                   d.get("positive_label"), [str(x) for x in d.get("classes") or []], confusion,
                   list(d.get("warnings") or []), dict(d.get("structure") or {}))

    def _headline(self) -> str:
        kind = self.task
        if self.task == "binary" and self.positive_label is not None:
            kind += f", positive = {self.outcome or 'outcome'} = {self.positive_label}"
        elif self.task == "multiclass" and self.classes:
            kind += f", {len(self.classes)} classes: " + ", ".join(self.classes[:12]) + (" ..." if len(self.classes) > 12 else "")
        return kind

    def _repr_html_(self) -> str:
        from . import display

        lines = [f"{self._headline()} outcome {self.outcome or ''}; " + ", ".join(f"{k} {v:,}" for k, v in self.counts.items()),
                 "selected nodes: " + (", ".join(node_label(n) for n in self.selected_nodes) or "none")]
        lines += [f"warning: {w}" for w in self.warnings]
        body = "<b>HCL on the test part (95 % bootstrap intervals)</b>" + display.table(self.metrics)
        body += "<b>HCL vs baselines</b>" + display.table(self.baselines)
        if self.confusion is not None:
            body += "<b>Confusion matrix of HCL (rows: true, columns: predicted)</b>" + display.table(self.confusion.reset_index())
        imp = self.node_importance.assign(node=[node_label(n) for n in self.node_importance.node])
        body += "<b>Node importance</b>" + display.table(imp)
        return display.block("PredictionReport", lines, body)

    def plot_curves(self):
        """ROC and precision-recall curves (binary) or observed vs predicted (continuous), HCL vs
        baselines; multiclass: the confusion matrix (:meth:`plot_confusion`)."""
        if self.task == "multiclass":
            return self.plot_confusion()
        from .figures import curves_figure

        return curves_figure(self)

    def plot_confusion(self):
        """HCL's confusion matrix on the test part as a heatmap, axes named by the original labels."""
        return confusion_figure(self)

    def plot_metrics(self):
        """HCL vs baselines on the main metrics, with HCL's bootstrap intervals (plotly Figure)."""
        from .figures import metrics_figure

        return metrics_figure(self, metrics=main_metrics(self.task))

    def __str__(self) -> str:
        lines = [f"Prediction of {self.outcome or 'the outcome'} ({self._headline()}); "
                 + ", ".join(f"{k} {v}" for k, v in self.counts.items())]
        lines.append("selected nodes: " + (", ".join(node_label(n) for n in self.selected_nodes) or "none"))
        with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 3):
            lines.append("\nHCL on the test part (95 % bootstrap intervals):")
            lines.append(self.metrics.to_string(index=False))
            if self.confusion is not None:
                lines.append("\nconfusion matrix of HCL (rows: true, columns: predicted):")
                lines.append(self.confusion.to_string())
            lines.append("\nnode importance:")
            imp = self.node_importance.assign(node=[node_label(n) for n in self.node_importance.node])
            lines.append(imp.to_string(index=False))
            lines.append("\nHCL vs baselines (test part):")
            lines.append(self.baselines.to_string(index=False))
        lines += ["", *(f"warning: {w}" for w in self.warnings), *(f"note: {n}" for n in self.notes)]
        return "\n".join(lines)

    __repr__ = __str__


def main_metrics(task: str) -> list[str]:
    """The metrics shown first for a task (figures, the Prediction page)."""
    return {"binary": ["auroc", "auprc", "f1", "accuracy"], "multiclass": ["auroc", "f1_macro", "accuracy"]}.get(task, ["r2"])


def confusion_figure(report: PredictionReport):
    """Heatmap of ``report.confusion`` (rows: true class, columns: predicted), counts in the cells
    and each row's share in the hover; the axes carry the outcome's own labels."""
    import plotly.graph_objects as go

    fig = go.Figure()
    cm = report.confusion
    what = report.outcome or "outcome"
    if cm is None or cm.size == 0:
        fig.update_layout(title=f"Confusion matrix of {what}", template="plotly_white", height=360)
        fig.add_annotation(text="No confusion matrix (continuous outcome).", showarrow=False, x=0.5, y=0.5,
                           xref="paper", yref="paper")
        return fig
    labels = [str(x) for x in cm.index]
    z = cm.to_numpy().astype(float)
    share = z / np.maximum(z.sum(axis=1, keepdims=True), 1)
    fig.add_trace(go.Heatmap(
        z=share, x=labels, y=labels, colorscale="Blues", zmin=0, zmax=1, customdata=z,
        text=[[f"{int(v)}" for v in row] for row in z], texttemplate="%{text}",
        colorbar=dict(title=dict(text="share of row", side="right"), thickness=14),
        hovertemplate=f"true {what} = %{{y}}<br>predicted = %{{x}}<br>%{{customdata:.0f}} samples "
                      "(%{z:.0%} of the row)<extra></extra>",
    ))
    fig.update_xaxes(title_text=f"predicted {what}", type="category", side="bottom")
    fig.update_yaxes(title_text=f"true {what}", type="category", autorange="reversed")
    fig.update_layout(title=f"HCL's predictions of {what} on the held-out samples (counts; colour = share of the row)",
                      template="plotly_white", height=max(360, 60 + 36 * len(labels)),
                      margin=dict(l=20, r=20, t=60, b=40))
    return fig


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
    if task not in ("auto", "binary", "multiclass", "continuous"):
        raise ValueError(f"task must be 'auto', 'binary', 'multiclass' or 'continuous', got {task!r}.")
    if rule not in ("1se", "min"):
        raise ValueError(f"rule must be '1se' or 'min', got {rule!r}.")
    if class_weight not in ("balanced", None):
        raise ValueError(f"class_weight must be 'balanced' or None, got {class_weight!r}.")


def _check_baselines(baselines: Any) -> set[str]:
    if baselines is True:
        return set(BASELINES)
    wanted = set()
    for b in (baselines or []):
        if b in _BASELINE_ALIASES:
            warnings.warn(f"The prediction baseline {b!r} is now called {_BASELINE_ALIASES[b]!r} (HCL with the global "
                          "node alone; the lattice preset 'global_only' is the global node plus the private nodes).",
                          FutureWarning, stacklevel=3)
            b = _BASELINE_ALIASES[b]
        wanted.add(b)
    unknown = wanted - set(BASELINES)
    if unknown:
        raise ValueError(f"Unknown baselines {sorted(unknown)}; choose from {list(BASELINES)}.")
    return wanted


def _as_outcome(y: Any, data: MultimodalData, task: str) -> tuple[np.ndarray, str | None, pd.Series]:
    """(missing mask, the outcome's name, the values as a Series aligned to the samples); infinities are an error."""
    name = None
    if isinstance(y, pd.Series):
        name = str(y.name) if y.name is not None else None
        if not isinstance(y.index, pd.RangeIndex) or len(y) != data.n_samples:
            y = y.reindex(pd.Index(np.asarray(data.ids)))
        ser = y.reset_index(drop=True)
    elif isinstance(y, pd.Categorical):
        ser = pd.Series(y)
    else:
        arr = np.asarray(y)
        if arr.ndim != 1 or arr.shape[0] != data.n_samples:
            raise ValueError(f"y must have one value per sample ({data.n_samples}), got shape {arr.shape}.")
        ser = pd.Series(arr)
    if len(ser) != data.n_samples:
        raise ValueError(f"y must have one value per sample ({data.n_samples}), got {len(ser)}.")
    if not isinstance(ser.dtype, pd.CategoricalDtype):
        num = ser.astype(np.float64) if ser.dtype.kind in "iuf" else pd.to_numeric(ser, errors="coerce")
        inf = np.isinf(num.to_numpy(dtype=np.float64, na_value=np.nan))
        if inf.any():
            raise ValueError(f"The outcome holds {int(inf.sum())} infinite value(s) (inf or -inf), e.g. at sample "
                             f"{np.asarray(data.ids)[np.flatnonzero(inf)[0]]!r}; set them to NaN (no label) "
                             "or correct them.")
    missing = ser.isna().to_numpy().copy()
    if ser.dtype.kind == "O":
        missing |= np.array([isinstance(x, str) and not x.strip() for x in ser], dtype=bool)
    return missing, name, ser


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


def _present_ranks(model) -> dict[str, int]:
    return {node_label(n): int(r) for n, r in model.ranks_.items() if int(r) > 0}


def _thin_roc(df: pd.DataFrame, k: int = 101) -> pd.DataFrame:
    if len(df) <= k:
        return df
    idx = np.unique(np.r_[np.linspace(0, len(df) - 1, k).round().astype(int)])
    return df.iloc[idx].reset_index(drop=True)


def prediction_warnings(*, task: str, metrics: Mapping[str, float], n_test: int, test_counts: Mapping[str, int],
                        labelled_counts: Mapping[str, int], n_samples: int, n_missing: int, outcome: str | None,
                        features: Mapping[str, tuple[int, int]], n_train: int, n_raw: int) -> list[str]:
    """The cautions a careful analyst would give about an evaluation, in plain words.

    * fewer than :data:`MIN_TEST_SAMPLES` test samples;
    * few minority cases: a class with fewer than :data:`MIN_TEST_CASES` test samples (binary) or
      fewer than 5 (multiclass);
    * a metric at its ceiling (AUROC, AUPRC or accuracy 1.000; R² >= 0.999);
    * many missing outcomes (more than :data:`MAX_MISSING_SHARE` of the samples);
    * more features than samples (p > n): a modality with more features than the samples that fit
      the representation (``features``: {modality: (features, samples)}), or the raw-feature
      baseline with more features (``n_raw``) than training samples.
    """
    out: list[str] = []
    what = repr(outcome) if outcome else "the outcome"
    if n_test < MIN_TEST_SAMPLES:
        out.append(f"Small test part: only {n_test} held-out samples (fewer than {MIN_TEST_SAMPLES}). The metrics can "
                   "swing widely with a few samples; read the 95 % intervals, not the point values.")
    if task in ("binary", "multiclass") and test_counts:
        floor = MIN_TEST_CASES if task == "binary" else 5
        few = {k: v for k, v in test_counts.items() if v < floor}
        if few:
            lst = ", ".join(f"{k!r}: {v}" for k, v in few.items())
            tot = ", ".join(f"{k!r}: {v}" for k, v in labelled_counts.items() if k in few)
            out.append(f"Few minority cases: the test part has {lst} sample(s) of {what} (fewer than {floor}; labelled in "
                       f"all: {tot}). Sensitivity, precision and F1 rest on these few cases.")
    ceil = []
    for m, name in (("auroc", "AUROC"), ("auprc", "AUPRC"), ("accuracy", "accuracy")):
        v = metrics.get(m)
        if v is not None and np.isfinite(v) and v >= 0.9995:
            ceil.append(f"{name} {v:.3f}")
    v = metrics.get("r2")
    if v is not None and np.isfinite(v) and v >= 0.999:
        ceil.append(f"R² {v:.3f}")
    if ceil:
        out.append(f"{' and '.join(ceil)} on {n_test} test samples: a metric at its ceiling. A perfect score "
                   + ("on so few samples says little about new ones; " if n_test < MIN_TEST_SAMPLES else "is rare on real data; ")
                   + "check that no feature encodes the outcome and that related samples are not split between "
                     "training and test.")
    if n_samples and n_missing / n_samples > MAX_MISSING_SHARE:
        out.append(f"Many missing outcomes: {n_missing:,} of {n_samples:,} samples ({n_missing / n_samples:.0%}) have no "
                   f"value of {what}. The evaluation uses the labelled ones only; if whether a sample is labelled "
                   "depends on the outcome, the metrics may not carry over.")
    wide = {m: (p, n) for m, (p, n) in features.items() if p > n}
    if wide:
        lst = "; ".join(f"{m}: {p:,} features, {n:,} samples" for m, (p, n) in wide.items())
        out.append(f"More features than samples (p > n) — {lst}. The loadings of such a modality are not pinned down "
                   "by the data alone; prefer few factors per node and check the structure's stability.")
    if n_raw > n_train:
        out.append(f"The raw-feature baseline has {n_raw:,} features for {n_train:,} training samples (p > n): its "
                   "score depends on the penalty more than on the data.")
    return out


@_one_blas_thread()
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
        Fitted: its structure (lattice nodes and ranks, ``model.ranks_``) is kept. With
        ``refit=True`` (default) a copy with those fixed ranks is refitted on every sample except
        the test samples (unlabelled ones included): the loadings come from the training part, the
        test samples never shape the representation, and the Prediction and Structure pages show
        the same nodes. Where the fixed-rank refit fails, the structure is searched again on the
        training part, and ``report.structure`` and ``report.warnings`` say so and carry both
        structures. Unfitted: the structure is searched on the training part. With
        ``refit=False`` the fitted model is used as is (the report says that the test samples may
        have been seen).
    data : MultimodalData
    y : array (n_samples,), Series indexed by sample id, or Categorical; NaN / None = no label
        (skipped and counted). Text, booleans and numbers alike: the kind and, for two levels,
        the positive level come from :mod:`hcl_explore.outcomes` (the same rule as
        :func:`~hcl_explore.io.load_outcomes`; a Categorical, as ``Outcomes.y`` returns, keeps the
        loader's decision). ``inf``/``-inf`` is an error (a ValueError giving their count), not a
        label: set them to NaN to skip those samples (:func:`~hcl_explore.io.load_outcomes` does
        so when it reads them from a file).
    task : "auto", "binary", "multiclass" or "continuous"
    test_size, cv, random_state : held-out share, folds for choosing the penalty, seed
    baselines : True, False or a subset of {"raw", "pca", "shared_private", "global_node"}
        (``"global_node"``: HCL with the global node alone; the old name ``"global_only"`` is read
        with a FutureWarning)
    bias_correction : continuous outcomes: subtract the score-error covariance from the Gram
        matrix (the paper's bias-corrected estimator)
    adaptive, rule, class_weight : see :func:`fit_group_lasso`
    n_bootstrap : resamples of the test part for the 95 % intervals

    Returns
    -------
    PredictionReport
        Multiclass outcomes: a multinomial group lasso; one-vs-rest AUROC (macro), macro-F1,
        accuracy and Brier score with bootstrap intervals, and the confusion matrix, all named by
        the outcome's own labels.
    """
    from .model import HCL

    _check_options(cv=cv, test_size=test_size, n_bootstrap=n_bootstrap, min_labelled=min_labelled, task=task,
                   rule=rule, class_weight=class_weight)
    wanted = _check_baselines(baselines)
    cv, n_bootstrap, test_size = int(cv), int(n_bootstrap), float(test_size)
    t0 = time.perf_counter()
    missing, name, ser = _as_outcome(y, data, task)
    labelled = np.flatnonzero(~missing)
    n_missing = int(data.n_samples - labelled.size)
    if labelled.size < min_labelled:
        raise ValueError(f"Only {labelled.size} sample(s) have an outcome; at least {min_labelled} are needed.")
    coding = outcome_kind(ser.iloc[labelled] if not isinstance(ser.dtype, pd.CategoricalDtype) else ser, task, name=name)
    tk = coding.kind
    yv = coding.encode(ser.where(~pd.Series(missing), None) if ser.dtype.kind == "O" else ser)
    yv[missing] = np.nan
    classes = coding.classes
    if tk in ("binary", "multiclass"):
        present = np.unique(yv[labelled]).astype(int)
        if tk == "multiclass" and present.size < len(classes):  # categories with no labelled sample
            keep = [classes[k] for k in present]
            remap = {int(k): i for i, k in enumerate(present)}
            yv = np.array([np.nan if np.isnan(v) else remap[int(v)] for v in yv])
            classes = keep
            coding = OutcomeCoding("multiclass", tuple(coding.labels[k] for k in present))
        if len(classes) < 2:
            raise ValueError(f"The outcome is constant ({classes[0]}) over the labelled samples; nothing to predict.")
        if tk == "multiclass" and len(classes) == 2:
            tk = "binary"
            coding = OutcomeCoding("binary", coding.labels)
        per = {classes[k]: int((yv[labelled] == k).sum()) for k in range(len(classes))}
        need = max(cv, 4)
        if tk == "binary":
            minority = min(per.values())
            if minority < need:
                raise ValueError(f"Only {minority} sample(s) in the smaller outcome class; at least {need} are needed "
                                 "for cross-validation and a test part.")
        else:
            small = {k: v for k, v in per.items() if v < need}
            if small:
                raise ValueError(f"Outcome classes with fewer than {need} labelled samples (needed for cross-validation "
                                 f"and a test part): {', '.join(f'{k!r} ({v})' for k, v in small.items())}. Merge or "
                                 "drop those classes" + (", or use task='continuous' for a numeric scale."
                                                         if all(isinstance(v, (int, float)) for v in coding.labels) else "."))
    else:
        per = {}
    rng = np.random.default_rng(random_state)
    # Stratified split of the labelled samples.
    test = []
    if tk == "binary":
        strata = [labelled[yv[labelled] == v] for v in (0.0, 1.0)]
    elif tk == "multiclass":
        strata = [labelled[yv[labelled] == v] for v in range(len(classes))]
    else:
        strata = [labelled]
    for s in strata:
        perm = rng.permutation(s)
        test.append(perm[: max(1, int(round(test_size * s.size)))])
    test_idx = np.sort(np.concatenate(test))
    is_test = np.zeros(data.n_samples, dtype=bool)
    is_test[test_idx] = True
    train_idx = np.setdiff1d(labelled, test_idx)
    notes: list[str] = []
    warns: list[str] = []
    timings: dict[str, float] = {}

    def emit(stage: str, **info: Any) -> None:
        if callback is not None:
            callback(stage, info)

    if model is None:
        model = HCL()
    if not refit and not hasattr(model, "W_"):
        raise ValueError("refit=False needs a fitted model.")
    fitted = hasattr(model, "ranks_") and hasattr(model, "lattice_")
    structure: dict[str, Any] = {"fitted": _present_ranks(model) if fitted else None}
    t = time.perf_counter()
    if refit:
        cls = type(model) if isinstance(model, HCL) else HCL
        params = model.get_params() if hasattr(model, "get_params") else {}
        if isinstance(params.get("lattice"), dict):
            params["lattice"] = Lattice.from_dict(params["lattice"])
        emit("representation", model="HCL")
        rep_model = None
        if fitted:
            # Keep the fitted structure: the same nodes and ranks, loadings from the training part.
            fixed = dict(params, lattice=model.lattice_, ranks={n: int(r) for n, r in model.ranks_.items()})
            try:
                rep_model = cls(**fixed).fit(data.subset(~is_test))
            except (ValueError, RuntimeError, np.linalg.LinAlgError) as exc:
                structure["note"] = (f"The fitted structure could not be refitted on the {int((~is_test).sum())} "
                                     f"non-test samples ({exc}); the structure was searched again on them.")
        if rep_model is None:
            rep_model = cls(**params).fit(data.subset(~is_test))
    else:
        rep_model = model
    timings["representation"] = time.perf_counter() - t
    structure["used"] = _present_ranks(rep_model)
    if not fitted:
        structure["kept"] = None
        structure.setdefault("note", "The model was not fitted: its structure (nodes and ranks) was chosen on the "
                                     "non-test samples.")
    else:
        structure["kept"] = structure["used"] == structure["fitted"]
        if structure["kept"]:
            structure["note"] = ("Same structure as the fitted model: the same nodes and ranks"
                                 + ("; the loadings were refitted on the non-test samples." if refit else "."))
        else:
            structure.setdefault("note", "The refit on the non-test samples has other nodes or ranks than the fitted "
                                         "model.")
            diff = sorted(set(structure["used"]) ^ set(structure["fitted"]) |
                          {k for k in structure["used"] if structure["fitted"].get(k) != structure["used"][k]})
            warns.append(f"Structure not kept: {structure['note']} The prediction uses the refitted structure "
                         f"({', '.join(f'{k} {v}' for k, v in structure['used'].items()) or 'no node'}), the fitted "
                         f"model has {', '.join(f'{k} {v}' for k, v in structure['fitted'].items()) or 'no node'} "
                         f"(differing: {', '.join(diff)}).")
    if refit:
        notes.append(f"No leakage: the HCL representation was fitted on the {int((~is_test).sum())} non-test samples "
                     f"(labelled training and unlabelled); the {test_idx.size} test samples were only transformed. "
                     "Feature standardization and the penalty (by cross-validation) used training samples only.")
    else:
        notes.append("refit=False: the given fitted representation was used; if it was fitted on all samples the test "
                     "samples shaped it (transductive; no outcome leakage).")
    notes.append(structure["note"])
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
    Xs_tr = (X[train_idx] - gl.mean) / gl.scale
    contrib = np.array([float(np.sum(np.var(Xs_tr[:, groups == k] @ gl.coef[groups == k], axis=0)))
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
        notes.append(f"Positive class: {name or 'outcome'} = {coding.positive_label!r} (the other level: "
                     f"{coding.classes[0]!r}); AUROC, AUPRC and F1 are about finding it.")
        notes.append(f"Classes weighted equally in the loss (training prevalence {yv[train_idx].mean():.1%}); "
                     f"probabilities shifted back to it; F1/accuracy threshold {threshold:.3f} chosen (best F1) on the "
                     "training part." if class_weight == "balanced" else
                     f"F1/accuracy threshold {threshold:.3f} chosen (best F1) on the training part.")
    elif tk == "multiclass":
        notes.append(f"{len(classes)} classes ({', '.join(classes)}): multinomial group lasso (one group per node over "
                     "all classes)" + (", classes weighted equally in the loss, probabilities shifted back to the training "
                                       "prevalence" if class_weight == "balanced" else "")
                     + "; predicted class = the most probable; AUROC is one-vs-rest averaged over classes, F1 the "
                       "macro average.")

    yt = yv[test_idx]
    brng = np.random.default_rng(random_state + 2)
    rows: list[dict] = []
    curves: dict[str, dict[str, pd.DataFrame]] = {}

    def score(label: str, pred: np.ndarray, n_features: int, thr: float | None) -> None:
        m = _metrics(tk, yt, pred, thr if thr is not None else 0.5)
        rows.append({"model": label, "n_features": n_features, **m})
        if tk == "binary":
            curves[label] = {"roc": roc_curve(yt, pred), "pr": pr_curve(yt, pred)}
        elif tk == "multiclass":
            parts = []
            for k, c in enumerate(classes):
                yk = yt == k
                if 0 < yk.sum() < yk.size:
                    parts.append(_thin_roc(roc_curve(yk, pred[:, k])).assign(**{"class": c}))
            curves[label] = {"roc": pd.concat(parts, ignore_index=True) if parts else
                             pd.DataFrame(columns=["fpr", "tpr", "threshold", "class"])}
        else:
            curves[label] = {"scatter": pd.DataFrame({"observed": yt, "predicted": pred})}

    p_hcl = gl.predict(X[test_idx])
    score("HCL", p_hcl, int(X.shape[1]), threshold)
    ci = _bootstrap(tk, yt, p_hcl, threshold if threshold is not None else 0.5, n_bootstrap, brng)
    metrics = pd.DataFrame([{"metric": k, "value": v, "ci_low": ci.get(k, (np.nan, np.nan))[0],
                             "ci_high": ci.get(k, (np.nan, np.nan))[1]} for k, v in rows[0].items()
                            if k not in ("model", "n_features")])
    confusion = None
    if tk == "binary":
        confusion = confusion_matrix(yt, (p_hcl >= threshold).astype(int), classes)
    elif tk == "multiclass":
        confusion = confusion_matrix(yt, np.argmax(p_hcl, axis=1), classes)

    t = time.perf_counter()
    if wanted & {"raw", "pca"}:
        R = _impute(_raw_features(data), np.setdiff1d(np.arange(data.n_samples), test_idx))
        if "raw" in wanted:
            emit("baseline", model="raw")
            dense = fit_ridge(R[train_idx], yv[train_idx], tk, cv=cv, class_weight=class_weight, random_state=random_state)
            score({"continuous": "raw features (ridge)", "binary": "raw features (L2-logistic)"}.get(
                      tk, "raw features (L2-multinomial)"),
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
    for key, label in (("shared_private", "HCL shared-private lattice"), ("global_node", "HCL global node only")):
        if key not in wanted:
            continue
        emit("baseline", model=key)
        params = model.get_params()
        mods = list(data.modalities)
        params["lattice"] = Lattice.shared_private(mods) if key == "shared_private" else Lattice(mods, [tuple(mods)])
        params["ranks"] = "auto"
        try:
            alt = HCL(**params).fit(data.subset(~is_test) if refit else data)
        except ValueError as exc:  # e.g. the structure search rules out every node of this lattice
            notes.append(f"Baseline {label!r} could not be fitted ({exc}); it has no scores.")
            rows.append({"model": label, "n_features": 0})
            continue
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
    fit_rows = ~is_test if refit else np.ones(data.n_samples, dtype=bool)
    obs = np.asarray(data.observed, dtype=bool)
    features = {m: (len(data.feature_names[m]), int(obs[fit_rows, j].sum())) for j, m in enumerate(data.modalities)}
    test_counts = {classes[k]: int((yt == k).sum()) for k in range(len(classes))} if tk != "continuous" else {}
    warns += prediction_warnings(task=tk, metrics=rows[0], n_test=int(test_idx.size), test_counts=test_counts,
                                 labelled_counts=per, n_samples=data.n_samples, n_missing=n_missing, outcome=name,
                                 features=features, n_train=int(train_idx.size),
                                 n_raw=sum(len(data.feature_names[m]) for m in data.modalities) if "raw" in wanted else 0)
    return PredictionReport(tk, metrics, selected, importance, pd.DataFrame(rows), curves, threshold, counts, notes,
                            gl.lambda_, gl.cv, timings, name, coding.positive_label, list(classes), confusion, warns,
                            structure)


def _dense_threshold(model, X: np.ndarray, y: np.ndarray, task: str, groups=None, class_weight=None) -> float | None:
    """F1 threshold for a baseline from its training predictions (baselines get the same rule)."""
    if task != "binary":
        return None
    return _best_f1_threshold(y, model.predict(X))
