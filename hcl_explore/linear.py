"""The linear HCL estimator as pure functions (DESIGN §3).

Pipeline: streamed pairwise-complete block covariance -> noise per modality from the bulk of the
spectrum -> ranks per node by lattice peeling (Schur complements + canonical correlations) ->
peeling initializer -> masked least-squares factorization to convergence -> GLS scores.

Shapes: D = sum of d_m, R = sum of node ranks. ``W`` (D, R) is zero outside the node supports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from .lattice import Lattice, Node

Callback = Callable[[str, dict], None]


# ============================================================================ covariance
@dataclass
class CovStats:
    """Pairwise-complete second-order statistics of the (transformed) data.

    Attributes
    ----------
    modalities : list of str
    dims : dict modality -> d_m
    mean : ndarray (D,)
        Per-feature mean over the samples that observe the modality.
    cov : ndarray (D, D)
        Block covariance; block (m, m') from the samples observing both modalities.
    counts : ndarray (M, M) int
        Samples observing both modalities.
    n_samples : int
    """

    modalities: list[str]
    dims: dict[str, int]
    mean: np.ndarray
    cov: np.ndarray
    counts: np.ndarray
    n_samples: int

    @property
    def offsets(self) -> dict[str, slice]:
        return block_slices(self.modalities, self.dims)


def block_slices(modalities: Sequence[str], dims: Mapping[str, int]) -> dict[str, slice]:
    """Row slice of each modality in the stacked feature vector."""
    out, start = {}, 0
    for m in modalities:
        out[m] = slice(start, start + dims[m])
        start += dims[m]
    return out


def covariance_stats(
    source,
    chunk_size: int = 16384,
    device: torch.device | str = "cpu",
    callback: Callback | None = None,
) -> CovStats:
    """One streamed pass over ``source.iter_chunks`` accumulating pairwise-complete statistics.

    Per chunk: ``G += Xc^T Xc`` (float32 GEMM, float64 accumulation), ``Sx += Xc^T O`` and
    ``N += O^T O``, where ``Xc`` is the chunk shifted by the first chunk's means with missing
    rows zeroed and ``O`` the (c, M) observed mask. Only one chunk is held at a time; the sums can
    be all-reduced across processes.
    """
    mods = list(source.modalities)
    dims = {m: len(source.feature_names[m]) for m in mods}
    sl = block_slices(mods, dims)
    D, M = sum(dims.values()), len(mods)
    dev = torch.device(device)
    use_numpy = dev.type == "cpu"
    # CPU: the chunk buffer is [Xc | O] (c, D + M), so one syrk per chunk yields Xc^T Xc, Xc^T O
    # (and O^T O) together: no second pass over the chunk for the sums.
    Daug = D + M if use_numpy else D
    if use_numpy:
        G = np.zeros((Daug, Daug), dtype=np.float64)
        Sx = None
    else:
        G = torch.zeros((D, D), dtype=torch.float64, device=dev)
        Sx = torch.zeros((D, M), dtype=torch.float64, device=dev)
    N = np.zeros((M, M), dtype=np.int64)
    shift: np.ndarray | None = None
    shift_m: dict[str, np.ndarray] = {}
    n_total = 0
    buf: np.ndarray | None = None
    for chunk in source.iter_chunks(chunk_size):
        obs = chunk.observed
        c = obs.shape[0]
        if c == 0:
            continue
        if shift is None:
            shift = np.zeros(D)
            for j, m in enumerate(mods):
                x = chunk.X[m]
                rows = x if obs[:, j].all() else x[obs[:, j]]
                if rows.shape[0]:
                    if rows.dtype == np.float32:
                        # A shift only needs to be near the mean: a float32 BLAS sum suffices.
                        mu = (np.ones(rows.shape[0], dtype=np.float32) @ rows).astype(np.float64) / rows.shape[0]
                    else:
                        mu = rows.mean(axis=0, dtype=np.float64)
                    if not np.isfinite(mu).all():
                        # A missing cell is reported below, at its row; keep the shift finite.
                        with np.errstate(all="ignore"):
                            mu = np.nan_to_num(np.nanmean(np.asarray(rows, dtype=np.float64), axis=0))
                    # A float32-representable shift: subtracting it in float32 is exact math.
                    shift[sl[m]] = mu.astype(np.float32)
            for m in mods:
                shift_m[m] = shift[sl[m]].astype(np.float32)
        if buf is None or buf.shape[0] < c:
            buf = np.empty((c, Daug), dtype=np.float32)
        Z = buf[:c]
        Xc = Z[:, :D]
        for j, m in enumerate(mods):
            block = Xc[:, sl[m]]
            x = chunk.X[m]
            np.subtract(x, shift_m[m] if x.dtype == np.float32 else shift[sl[m]], out=block, casting="unsafe")
            if not obs[:, j].all():
                block[~obs[:, j]] = 0.0
        if use_numpy:
            Z[:, D:] = obs
            # numpy's Z.T @ Z on one buffer dispatches to syrk: half the flops of a GEMM.
            Gc = Z.T @ Z
            G += Gc
            Sx_c = Gc[:D, D:]
        else:
            Of = obs.astype(np.float32)
            xt = torch.from_numpy(np.ascontiguousarray(Xc)).to(dev)
            ot = torch.from_numpy(Of).to(dev)
            G += (xt.T @ xt).double()
            Sx_c = (xt.T @ ot).double().cpu().numpy()
            Sx += torch.from_numpy(Sx_c).to(dev)
        if np.isnan(Sx_c).any():
            _raise_nan_cell(Xc, obs, mods, sl, n_total)
        ob = obs.astype(np.int64)
        N += ob.T @ ob
        n_total += c
        if callback is not None:
            callback("covariance", {"rows": n_total, "n_samples": getattr(source, "n_samples", None)})
    if shift is None or n_total == 0:
        raise ValueError("No samples to fit.")
    G_np = G[:D, :D] if use_numpy else G.cpu().numpy()
    Sx_np = G[:D, D:] if use_numpy else Sx.cpu().numpy()
    for j, m in enumerate(mods):
        if N[j, j] < 2:
            raise ValueError(f"Modality {m!r} is observed in {N[j, j]} sample(s); at least 2 are needed.")
    mean = shift.copy()
    for j, m in enumerate(mods):
        mean[sl[m]] += Sx_np[sl[m], j] / N[j, j]
    cov = np.zeros((D, D))
    for a, ma in enumerate(mods):
        for b, mb in enumerate(mods):
            if b < a:
                continue
            nab = N[a, b]
            if nab < 2:
                raise ValueError(
                    f"Modalities {ma!r} and {mb!r} share {nab} sample(s); a covariance between them "
                    "needs more. Drop one of them or the nodes that join them."
                )
            mu_a = Sx_np[sl[ma], b] / nab
            mu_b = Sx_np[sl[mb], a] / nab
            block = G_np[sl[ma], sl[mb]] / nab - np.outer(mu_a, mu_b)
            cov[sl[ma], sl[mb]] = block
            cov[sl[mb], sl[ma]] = block.T
    return CovStats(mods, dims, mean, cov, N, n_total)


def _raise_nan_cell(Xc: np.ndarray, obs: np.ndarray, mods: Sequence[str], sl: Mapping[str, slice], offset: int) -> None:
    r, col = np.argwhere(np.isnan(Xc))[0]
    m = next(m for m in mods if sl[m].start <= col < sl[m].stop)
    raise ValueError(
        f"Modality {m!r}: missing cell at row {offset + r}, column {col - sl[m].start} of an "
        "observed row; impute it or mark the whole row missing."
    )


# ============================================================================ random matrix helpers
@lru_cache(maxsize=512)
def mp_median(gamma: float) -> float:
    """Median of the Marchenko-Pastur law with ratio ``gamma`` <= 1 and unit variance."""
    gamma = float(min(max(gamma, 1e-12), 1.0))
    lo, hi = (1 - math.sqrt(gamma)) ** 2, (1 + math.sqrt(gamma)) ** 2
    # Substituting x = lo + t^2 (dx = 2t dt, sqrt(x - lo) = t) removes the 1/sqrt(x) singularity
    # at lo = 0 (gamma = 1) and the square-root cusp at lo, so a trapezoid rule is accurate.
    ts = np.linspace(0.0, math.sqrt(hi - lo), 8001)
    xs = lo + ts**2
    t2_over_x = np.where(xs > 0, ts**2 / np.maximum(xs, 1e-300), 1.0)
    dens = np.sqrt(np.clip(hi - xs, 0, None)) * t2_over_x / (math.pi * gamma)
    cdf = np.concatenate([[0.0], np.cumsum((dens[1:] + dens[:-1]) / 2 * np.diff(ts))])
    cdf /= cdf[-1]
    return float(np.interp(0.5, cdf, xs))


def mp_edge(gamma: float) -> float:
    """Upper edge (1 + sqrt(gamma))^2 of the unit-variance Marchenko-Pastur law."""
    return (1.0 + math.sqrt(gamma)) ** 2


def wachter_edge(p: float, q: float) -> float:
    """Upper edge of squared sample canonical correlations between independent sets.

    ``p = d_a / n``, ``q = d_b / n`` (Wachter 1980).
    """
    p, q = min(p, 1.0), min(q, 1.0)
    return min(1.0, (math.sqrt(p * (1 - q)) + math.sqrt(q * (1 - p))) ** 2)


def debias_spike(lam: np.ndarray, gamma: float) -> np.ndarray:
    """Population spike ``l`` from a sample eigenvalue ``lam`` of unit-noise covariance.

    Inverts ``lam = (1 + l)(1 + gamma / l)``; eigenvalues at or below the edge map to 0.
    """
    lam = np.asarray(lam, dtype=float)
    b = lam - 1.0 - gamma
    disc = b * b - 4.0 * gamma
    out = np.where((lam > mp_edge(gamma)) & (disc > 0), (b + np.sqrt(np.maximum(disc, 0))) / 2.0, 0.0)
    return out


def estimate_noise(cov_mm: np.ndarray, n: int, margin: float = 0.1, max_iter: int = 50) -> tuple[float, int]:
    """Noise variance of one modality from the bulk of its spectrum.

    Iterates: noise = median(bulk eigenvalues) / MP median; signal rank = number of eigenvalues
    above the noise edge ``noise * (1 + sqrt(d/n))^2 * (1 + margin)``; bulk = the rest.

    Returns
    -------
    noise_var : float
    k : int
        Number of eigenvalues above the edge (the modality's signal rank).
    """
    d = cov_mm.shape[0]
    lam = np.sort(np.linalg.eigvalsh(cov_mm))[::-1]
    lam = np.maximum(lam, 0.0)
    if d < 2:
        return float(max(lam[0], 1e-12)) * 0.5, 0
    k = 0
    sigma2 = float(np.median(lam))
    for _ in range(max_iter):
        m_eff = max(d - k, 1)
        n_eff = max(n - k, 1)
        if m_eff <= n_eff:
            bulk = lam[k:]
            sigma2 = float(np.median(bulk)) / mp_median(m_eff / n_eff)
        else:
            # d > n: only n_eff eigenvalues are non-zero; they follow MP(n/d) scaled by d/n.
            bulk = lam[k : k + n_eff]
            sigma2 = float(np.median(bulk)) / (mp_median(n_eff / m_eff) * m_eff / n_eff)
        sigma2 = max(sigma2, 1e-12 * max(lam[0], 1e-300))
        edge = sigma2 * mp_edge(d / n) * (1 + margin)
        k_new = int(np.sum(lam > edge))
        k_new = min(k_new, max(d - 2, 0), max(n - 2, 0))
        if k_new == k:
            break
        k = k_new
    return sigma2, k


# ============================================================================ rank selection + init
@dataclass
class PeelResult:
    ranks: dict[Node, int]
    loadings: dict[Node, np.ndarray]  # node -> (sum_{m in node} d_m, r)
    diagnostics: dict[str, dict] = field(default_factory=dict)


def top_eigs(A: np.ndarray, r: int, oversample: int = 10, iters: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """The r largest eigenpairs of a symmetric matrix, descending: (r,), (d, r).

    Small matrices: LAPACK. Large ones: block subspace iteration with Rayleigh-Ritz (only GEMMs
    of d x (r + oversample)); the matrices here are a few well separated signal eigenvalues over
    a small bulk, where a few iterations are exact to working precision for what follows.
    """
    d = A.shape[0]
    r = min(r, d)
    if r == 0:
        return np.zeros(0), np.zeros((d, 0))
    A = (A + A.T) / 2
    k = r + oversample
    if d <= 256 or k >= d // 3:
        lam, V = np.linalg.eigh(A)
        return lam[::-1][:r], V[:, ::-1][:, :r]
    # Shift so the wanted (most positive) end dominates in magnitude.
    shift = max(0.0, -float(np.min(np.diag(A))))
    rng = np.random.default_rng(0)
    Q = np.linalg.qr(A @ rng.standard_normal((d, k)))[0]
    for _ in range(iters):
        Q = np.linalg.qr(A @ Q + shift * Q)[0]
    lam, V = np.linalg.eigh(Q.T @ A @ Q)
    order = np.argsort(lam)[::-1][:r]
    return lam[order], Q @ V[:, order]


def eigs_above(A: np.ndarray, threshold: float, k_max: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs of a symmetric matrix with eigenvalue > threshold, descending.

    ``k_max`` bounds how many there can be (it lets large matrices use subspace iteration);
    when the bound is reached it is doubled until the count is below it.
    """
    d = A.shape[0]
    if k_max is None or d <= 256:
        lam, V = np.linalg.eigh((A + A.T) / 2)
        keep = lam > threshold
        return lam[keep][::-1], V[:, keep][:, ::-1]
    k = max(k_max, 1)
    while True:
        lam, V = top_eigs(A, min(k, d))
        keep = lam > threshold
        if keep.sum() < k or k >= d:
            return lam[keep], V[:, keep]
        k *= 2


def _tri_inv(Lc: np.ndarray) -> np.ndarray:
    """Inverse of a non-singular lower-triangular matrix."""
    # numpy's LAPACK, not scipy's: scipy bundles a second OpenBLAS whose threads fight numpy's.
    return np.tril(np.linalg.inv(Lc))


def _whitener(A: np.ndarray, floor: float) -> np.ndarray:
    """Lower-triangular L with L L^T = A (A clamped at ``floor`` if it is not positive definite),
    returned as L^{-1}, shape (d, d)."""
    try:
        Lc = np.linalg.cholesky((A + A.T) / 2)
    except np.linalg.LinAlgError:
        lam, V = np.linalg.eigh((A + A.T) / 2)
        return (V / np.sqrt(np.maximum(lam, floor))).T
    return _tri_inv(Lc)


def _full_col_rank(U: np.ndarray) -> bool:
    """Whether ``_orth_complement`` would drop exactly U's columns (same rank test)."""
    if U.shape[1] > U.shape[0]:
        return False
    diag = np.abs(np.diag(np.linalg.qr(U, mode="r")))
    return bool(diag.size) and int(np.sum(diag > diag.max() * 1e-10)) == U.shape[1]


def _orth_complement(U: np.ndarray | None, d: int) -> np.ndarray:
    """Orthonormal basis (d, d - k) of the complement of span(U)."""
    if U is None or U.shape[1] == 0:
        return np.eye(d)
    Q, R = np.linalg.qr(U, mode="complete")
    diag = np.abs(np.diag(R))
    k = int(np.sum(diag > diag.max() * 1e-10)) if diag.size else 0
    return Q[:, k:]


class _Peeler:
    """Lattice peeling on the block covariance: conditional covariances given the modalities
    outside a node, smaller nodes projected out, canonical correlations counted against Wachter's
    edge (|S| >= 2) or eigenvalues against the Marchenko-Pastur edge (|S| = 1)."""

    def __init__(self, stats: CovStats, noise: Mapping[str, float], margin_eig: float, margin_cca: float,
                 signal_rank: Mapping[str, int] | None = None):
        self.signal_rank = dict(signal_rank or {})
        self.stats = stats
        self.noise = dict(noise)
        self.sl = stats.offsets
        self.mods = stats.modalities
        self.idx = {m: i for i, m in enumerate(self.mods)}
        self.margin_eig = margin_eig
        self.margin_cca = margin_cca
        self._cond_cache: dict[tuple[str, ...], tuple] = {}
        self._shared_cache: dict = {}
        self._whiteners: dict[str, np.ndarray] = {}
        self._chols: dict[str, np.ndarray | None] = {}
        self._cross: dict[tuple[str, str], np.ndarray] = {}

    def _rows(self, mods: Iterable[str]) -> np.ndarray | slice:
        mods = list(mods)
        if len(mods) == 1:
            return self.sl[mods[0]]
        if all(self.sl[a].stop == self.sl[b].start for a, b in zip(mods[:-1], mods[1:])):
            return slice(self.sl[mods[0]].start, self.sl[mods[-1]].stop)
        return np.concatenate([np.arange(self.sl[m].start, self.sl[m].stop) for m in mods])

    def _block(self, r1, r2) -> np.ndarray:
        if isinstance(r1, slice) and isinstance(r2, slice):
            return self.stats.cov[r1, r2]
        r1 = np.arange(r1.start, r1.stop) if isinstance(r1, slice) else r1
        r2 = np.arange(r2.start, r2.stop) if isinstance(r2, slice) else r2
        return self.stats.cov[np.ix_(r1, r2)]

    def _len(self, rows) -> int:
        return rows.stop - rows.start if isinstance(rows, slice) else len(rows)

    def whitener(self, m: str) -> np.ndarray:
        if m not in self._whiteners:
            Lc = self.chol(m)
            if Lc is not None:
                self._whiteners[m] = _tri_inv(Lc)
            else:
                self._whiteners[m] = _whitener(self.stats.cov[self.sl[m], self.sl[m]], 0.5 * self.noise[m])
        return self._whiteners[m]

    def chol(self, m: str) -> np.ndarray | None:
        """Lower Cholesky factor of modality m's covariance block, or None if it is not positive
        definite (cached)."""
        if m not in self._chols:
            A = self.stats.cov[self.sl[m], self.sl[m]]
            try:
                self._chols[m] = np.linalg.cholesky((A + A.T) / 2)
            except np.linalg.LinAlgError:
                self._chols[m] = None
        return self._chols[m]

    def whiten(self, m: str, Y: np.ndarray) -> np.ndarray:
        """``whitener(m) @ Y``."""
        return self.whitener(m) @ Y

    def whitened_cross(self, a: str, b: str) -> np.ndarray:
        """``L_a^{-1} S_ab L_b^{-T}`` (d_a, d_b), the cross-covariance of the whitened modalities
        (cached; both blocks must be positive definite)."""
        key = (a, b)
        if key not in self._cross:
            self._cross[key] = (self.whitener(a) @ self.stats.cov[self.sl[a], self.sl[b]]) @ self.whitener(b).T
        return self._cross[key]

    def _n(self, mods: Sequence[str]) -> int:
        ii = [self.idx[m] for m in mods]
        return int(self.stats.counts[np.ix_(ii, ii)].min())

    def _whitened_spectrum(self, O: tuple[str, ...]):
        """Eigen-decomposition of the noise-whitened covariance of modalities O, with the count
        of eigenvalues above the Marchenko-Pastur edge (cached)."""
        if O in self._cond_cache:
            return self._cond_cache[O]
        rows = self._rows(O)
        S = self._block(rows, rows)
        psi = np.concatenate([np.full(self.stats.dims[m], self.noise[m]) for m in O])
        s = 1.0 / np.sqrt(psi)
        St = S * s[:, None] * s[None, :]
        n = self._n(O)
        gamma = self._len(rows) / n
        k_max = sum(self.signal_rank.get(m, 0) for m in O) + 5 if self.signal_rank else None
        lam, V = eigs_above(St, mp_edge(gamma) * (1 + self.margin_eig), k_max)
        k = lam.shape[0]
        out = (s, lam, V, k, gamma)
        self._cond_cache[O] = out
        return out

    def conditional(self, S: Node) -> np.ndarray:
        """Noisy covariance of the modalities in S given the signal of the others, (d_S, d_S)."""
        rows = self._rows(S)
        C = self._block(rows, rows)
        O = tuple(m for m in self.mods if m not in S)
        if not O:
            return C.copy()
        ro = self._rows(O)
        Cso = self._block(rows, ro)
        # Cso G Cso^T with G = (s V) diag(1 / l) (s V)^T of rank k: a rank-k update.
        s, lam, V, k, gamma = self._whitened_spectrum(O)
        vals = debias_spike(lam[:k], gamma)
        keep = vals > 0
        B = Cso @ ((s[:, None] * V[:, :k][:, keep]) / np.sqrt(vals[keep]))
        return C - B @ B.T

    def shared_subspace(self, m: str, O: tuple[str, ...]) -> tuple[np.ndarray | None, dict]:
        """Orthonormal basis (d_m, k) of the directions of modality m that carry factors shared
        with any modality in O: canonical correlations between m and the top principal
        components of O, counted against Wachter's edge."""
        if not O:
            return None, {}
        key = (m, O)
        if key in self._shared_cache:
            return self._shared_cache[key]
        rm, ro = self._rows((m,)), self._rows(O)
        SmO = self._block(rm, ro)
        s_, lam, V, k_O, _ = self._whitened_spectrum(O)
        # Regression of m on the top principal components of O: E = Y Y^T with Y (d_m, k_O).
        Y = SmO @ ((s_[:, None] * V[:, :k_O]) / np.sqrt(lam[:k_O]))
        mu = np.sort(np.linalg.svd(self.whiten(m, Y), compute_uv=False) ** 2)[::-1] if k_O else np.zeros(0)
        n = self._n((m,) + O)
        thr = wachter_edge(self._len(rm) / n, k_O / n) * (1 + self.margin_cca)
        k = int(np.sum(mu > thr))
        U = np.linalg.svd(Y, full_matrices=False)[0][:, :k] if k else None
        out = (U, {"k": k, "rho2": mu[: k + 2].round(5).tolist(), "threshold": thr})
        self._shared_cache[key] = out
        return out

    def _pair_cca(self, a: str, b: str, Ua: np.ndarray | None, Ub: np.ndarray | None) -> tuple[np.ndarray, int, int]:
        """Squared canonical correlations (descending) between the parts of modalities a and b
        orthogonal to span(Ua) and span(Ub), with the dimensions of those parts.

        CCA is invariant to a change of basis within each set, so with ``x_a = L_a z_a`` (Cholesky)
        the directions ``v`` orthogonal to ``Ua`` are the whitened directions orthogonal to
        ``L_a^{-1} Ua``: the correlations are the singular values of the cached whitened
        cross-covariance deflated by two rank-k projections (no d x d complement, no per-pair
        factorization).
        """
        da, db = self.stats.dims[a], self.stats.dims[b]
        fast = self.chol(a) is not None and self.chol(b) is not None
        fast = fast and (Ua is None or _full_col_rank(Ua)) and (Ub is None or _full_col_rank(Ub))
        if fast:
            M = self.whitened_cross(a, b)
            da_eff, db_eff = da, db
            if Ua is not None:
                Va = np.linalg.qr(self.whiten(a, Ua))[0]
                M = M - Va @ (Va.T @ M)
                da_eff -= Va.shape[1]
            if Ub is not None:
                Vb = np.linalg.qr(self.whiten(b, Ub))[0]
                M = M - (M @ Vb) @ Vb.T
                db_eff -= Vb.shape[1]
            Gm = M.T @ M if db <= da else M @ M.T
            rho2 = np.linalg.eigvalsh((Gm + Gm.T) / 2)[::-1][: max(min(da_eff, db_eff), 0)]
            return np.clip(rho2, 0.0, 1.0), da_eff, db_eff
        Qa = _orth_complement(Ua, da)
        Qb = _orth_complement(Ub, db)
        ra, rb = self.sl[a], self.sl[b]
        cov = self.stats.cov
        A = Qa.T @ cov[ra, ra] @ Qa
        Bm = Qb.T @ cov[rb, rb] @ Qb
        K = Qa.T @ cov[ra, rb] @ Qb
        Wa = _whitener(A, 0.5 * self.noise[a])
        Wb = _whitener(Bm, 0.5 * self.noise[b])
        rho = np.linalg.svd(Wa @ K @ Wb.T, compute_uv=False)
        return np.minimum(rho**2, 1.0), Qa.shape[1], Qb.shape[1]

    def run(self, lattice: Lattice, fixed: Mapping[Node, int | None], callback: Callback | None = None) -> PeelResult:
        ranks: dict[Node, int] = {}
        loads: dict[Node, np.ndarray] = {}
        diag: dict[str, dict] = {}
        dims = self.stats.dims
        for node in lattice.nodes:
            local = block_slices(node, dims)
            smaller = [t for t in ranks if ranks[t] > 0 and set(t) < set(node)]
            O = tuple(m for m in self.mods if m not in node)
            given = fixed.get(node)
            info: dict = {}
            if given is None:
                if len(node) == 1:
                    m = node[0]
                    U, _ = self.shared_subspace(m, O)
                    Smm = self.stats.cov[self.sl[m], self.sl[m]]
                    if U is None or U.shape[1] == 0:
                        dq = dims[m]
                        lam = np.linalg.eigvalsh((Smm + Smm.T) / 2)[::-1]
                    elif _full_col_rank(U):
                        # Spectrum of Q^T S Q (Q an orthonormal basis of span(U)'s complement) =
                        # that of P S P, P = I - V V^T, less its k zero eigenvalues.
                        V = np.linalg.qr(U)[0]
                        dq = dims[m] - V.shape[1]
                        PS = Smm - V @ (V.T @ Smm)
                        PSP = PS - (PS @ V) @ V.T
                        lam = np.linalg.eigvalsh((PSP + PSP.T) / 2)[::-1][:dq]
                    else:
                        Q = _orth_complement(U, dims[m])
                        dq = Q.shape[1]
                        lam = np.linalg.eigvalsh(Q.T @ Smm @ Q)[::-1]
                    n = self._n(node)
                    edge = self.noise[m] * mp_edge(dq / n) * (1 + self.margin_eig)
                    r = int(np.sum(lam > edge))
                    info = {"eigenvalues": lam[: r + 3].round(5).tolist(), "threshold": edge}
                else:
                    counts, pairs_info = [], {}
                    for a, b in combinations(node, 2):
                        inner = [t for t in smaller if a in t and b in t]
                        Ua = _hstack([self.shared_subspace(a, O)[0], _stack_sub([loads[t] for t in inner], inner, a, dims)])
                        Ub = _hstack([self.shared_subspace(b, O)[0], _stack_sub([loads[t] for t in inner], inner, b, dims)])
                        rho2, da_eff, db_eff = self._pair_cca(a, b, Ua, Ub)
                        n = self._n((a, b))
                        thr = wachter_edge(da_eff / n, db_eff / n) * (1 + self.margin_cca)
                        c = int(np.sum(rho2 > thr))
                        counts.append(c)
                        pairs_info[f"{a}+{b}"] = {"rho2": rho2[: c + 3].round(5).tolist(), "threshold": thr, "count": c}
                    r = int(np.floor(np.median(counts)))
                    info = {"pairs": pairs_info}
            else:
                r = int(given)
            ranks[node] = r
            info["rank"] = r
            diag["+".join(node)] = info
            if r > 0:
                Dn = self.conditional(node)
                for m in node:
                    Dn[local[m], local[m]] -= self.noise[m] * np.eye(dims[m])
                for t in smaller:
                    Wt = _embed(loads[t], t, node, dims)
                    Dn -= Wt @ Wt.T
                lam, V = top_eigs(Dn, r)
                lam_r = np.maximum(lam, 1e-8 * max(abs(lam[0]), 1e-12))
                loads[node] = V * np.sqrt(lam_r)
            if callback is not None:
                callback("ranks", {"node": node, "rank": r})
        return PeelResult(ranks, loads, diag)


def _hstack(parts: list[np.ndarray | None]) -> np.ndarray | None:
    parts = [p for p in parts if p is not None and p.shape[1] > 0]
    return np.concatenate(parts, axis=1) if parts else None


def _stack_sub(blocks: list[np.ndarray], nodes: list[Node], m: str, dims: Mapping[str, int]) -> np.ndarray | None:
    """Rows of modality m from each node's stacked loadings, side by side (d_m, sum r)."""
    if not blocks:
        return None
    parts = []
    for B, t in zip(blocks, nodes):
        sl = block_slices(t, dims)[m]
        parts.append(B[sl])
    return np.concatenate(parts, axis=1)


def _embed(B: np.ndarray, t: Node, node: Node, dims: Mapping[str, int]) -> np.ndarray:
    """Node t's stacked loadings (d_t, r) placed in node's row space (d_node, r)."""
    src = block_slices(t, dims)
    dst = block_slices(node, dims)
    out = np.zeros((sum(dims[m] for m in node), B.shape[1]))
    for m in t:
        out[dst[m]] = B[src[m]]
    return out


def peel(
    stats: CovStats,
    noise: Mapping[str, float],
    lattice: Lattice,
    fixed: Mapping[Node, int | None],
    margin_eig: float = 0.1,
    margin_cca: float = 0.25,
    callback: Callback | None = None,
    signal_rank: Mapping[str, int] | None = None,
) -> PeelResult:
    """Ranks (where not fixed) and initial loadings for every lattice node, smallest nodes first.

    ``signal_rank`` (modality -> number of eigenvalues above its noise edge) only bounds
    eigen-searches for speed.
    """
    return _Peeler(stats, noise, margin_eig, margin_cca, signal_rank).run(lattice, fixed, callback)


# ============================================================================ masked factorization
@dataclass
class FitResult:
    W: np.ndarray  # (D, R)
    objective: float
    n_iter: int
    converged: bool
    history: list[float]


def node_columns(nodes: Sequence[Node], ranks: Mapping[Node, int]) -> dict[Node, slice]:
    """Column slice of each node in the stacked W (nodes in the given order)."""
    out, start = {}, 0
    for node in nodes:
        out[node] = slice(start, start + ranks[node])
        start += ranks[node]
    return out


def support_mask(modalities: Sequence[str], dims: Mapping[str, int], nodes: Sequence[Node], ranks: Mapping[Node, int]) -> np.ndarray:
    """Bool (D, R): entry (i, j) may be non-zero iff feature i's modality is in column j's node."""
    sl = block_slices(modalities, dims)
    mask = np.zeros((sum(dims[m] for m in modalities), sum(ranks[n] for n in nodes)), dtype=bool)
    for node, cols in node_columns(nodes, ranks).items():
        for m in node:
            mask[sl[m], cols] = True
    return mask


def stack_loadings(
    loadings: Mapping[tuple[str, Node], np.ndarray],
    modalities: Sequence[str],
    dims: Mapping[str, int],
    nodes: Sequence[Node],
    ranks: Mapping[Node, int],
) -> np.ndarray:
    """Stack per-(modality, node) blocks into W of shape (sum d_m, sum_S r_S); inverse of
    :func:`split_loadings`."""
    sl = block_slices(modalities, dims)
    W = np.zeros((sum(dims[m] for m in modalities), sum(ranks[n] for n in nodes)))
    for node, cols in node_columns(nodes, ranks).items():
        for m in node:
            W[sl[m], cols] = loadings[(m, node)]
    return W


def split_loadings(
    W: np.ndarray,
    modalities: Sequence[str],
    dims: Mapping[str, int],
    nodes: Sequence[Node],
    ranks: Mapping[Node, int],
) -> dict[tuple[str, Node], np.ndarray]:
    """Blocks ``{(modality, node): (d_m, r_S)}`` (views) of a stacked W (D, R)."""
    sl = block_slices(modalities, dims)
    return {(m, node): W[sl[m], cols] for node, cols in node_columns(nodes, ranks).items() for m in node}


def _masked_gram_product(T: np.ndarray, mask: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``P -> (T @ P) * mask`` computed block by block from the mask's support.

    Columns with the same support (a node) are grouped; for a group with rows ``I`` only
    ``T[I, I] @ P[I, cols]`` is formed, from contiguous runs of ``I`` (views of T, no copies).
    Falls back to one full product when that would not save work.
    """
    D, R = mask.shape
    groups: list[tuple[list[slice], int, int]] = []
    c = 0
    work = 0
    while c < R:
        c1 = c + 1
        while c1 < R and np.array_equal(mask[:, c1], mask[:, c]):
            c1 += 1
        rows = np.flatnonzero(mask[:, c])
        runs: list[slice] = []
        if rows.size:
            breaks = np.flatnonzero(np.diff(rows) != 1)
            starts = np.concatenate([[0], breaks + 1])
            stops = np.concatenate([breaks + 1, [rows.size]])
            runs = [slice(int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, stops)]
        groups.append((runs, c, c1))
        work += rows.size ** 2 * (c1 - c)
        c = c1
    n_gemm = sum(len(g[0]) ** 2 for g in groups)
    if work >= 0.6 * D * D * R or n_gemm > 400:
        Mf = mask.astype(np.float64)
        return lambda P: (T @ P) * Mf

    def apply(P: np.ndarray) -> np.ndarray:
        out = np.zeros((D, R))
        for runs, c0, c1 in groups:
            if len(runs) == 1:
                r = runs[0]
                out[r, c0:c1] = T[r, r] @ P[r, c0:c1]
                continue
            for ri in runs:
                acc = T[ri, runs[0]] @ P[runs[0], c0:c1]
                for rj in runs[1:]:
                    acc += T[ri, rj] @ P[rj, c0:c1]
                out[ri, c0:c1] = acc
        return out

    return apply


def _quartic_step(A: np.ndarray, W: np.ndarray, P: np.ndarray, TW: np.ndarray, TP: np.ndarray) -> float:
    """Exact minimiser over t > 0 of ``f(W + t P)``, f(W) = 0.5 ||W W^T - T||^2 (a quartic in t).

    ``A = W^T W``, ``TW = T W`` and ``TP = T P`` (masked; P is zero off the mask). Returns 0 when
    P is not a descent direction.
    """
    B = W.T @ P
    C = P.T @ P
    E = B + B.T
    AC = float(np.vdot(A, C))
    EC = float(np.vdot(E, C))
    CC = float(np.vdot(C, C))
    EE = float(np.vdot(E, E))
    AE = float(np.vdot(A, E))
    PTW = float(np.vdot(P, TW))
    PTP = float(np.vdot(P, TP))
    # f(t) - f(0) = a1 t + a2 t^2 + a3 t^3 + a4 t^4
    a1 = AE - 2.0 * PTW
    a2 = 0.5 * (EE + 2.0 * AC) - PTP
    a3 = EC
    a4 = 0.5 * CC
    if not a1 < 0:
        return 0.0
    roots = np.roots([4.0 * a4, 3.0 * a3, 2.0 * a2, a1]) if a4 > 0 else np.roots([3.0 * a3, 2.0 * a2, a1])
    best_t, best_f = 0.0, 0.0
    for z in roots:
        if abs(z.imag) > 1e-8 * max(abs(z.real), 1e-300):
            continue
        t = float(z.real)
        if t <= 0:
            continue
        ft = ((a4 * t + a3) * t + a2) * t * t + a1 * t
        if ft < best_f:
            best_t, best_f = t, ft
    return best_t


def _stop(f_prev: float, f: float, gnorm: float, wnorm: float, tol: float, const: float) -> bool:
    """The refinement's stopping rule: relative objective change below ``tol`` and masked
    gradient norm below ``sqrt(tol) * ||target||_F * ||W||_F`` (``const = ||target||_F^2``)."""
    rel = abs(f_prev - f) / max(abs(f), 1e-300 + 1e-12 * const)
    tnorm = math.sqrt(const) if const > 0 else 1.0
    return rel < tol and gnorm <= math.sqrt(tol) * tnorm * max(wnorm, 1e-12)


def masked_factorization(
    target: np.ndarray,
    W0: np.ndarray,
    mask: np.ndarray,
    device: torch.device | str = "cpu",
    tol: float = 1e-10,
    max_iter: int = 5000,
    callback: Callback | None = None,
    history_size: int = 20,
) -> FitResult:
    """Minimise ``0.5 * ||W W^T - target||_F^2`` over W with ``W[~mask] = 0`` by L-BFGS.

    Stops when the relative change of the objective over an L-BFGS step falls below ``tol``
    *and* the masked gradient norm is below ``sqrt(tol)`` relative to ``||target|| * ||W||``,
    or at ``max_iter`` function evaluations. The objective uses
    ``||W W^T||^2 = ||W^T W||^2`` so each evaluation costs O(D^2 R), never O(D^2 R) twice.

    On the CPU the objective along a search direction is a quartic polynomial, so each L-BFGS
    step uses an exact line search at the cost of one product ``T @ P`` (an "evaluation");
    ``T @ W`` is then updated, not recomputed, and products only touch the mask's support.
    """
    dev = torch.device(device)
    if dev.type != "cpu":
        return _masked_factorization_torch(target, W0, mask, dev, tol, max_iter, callback)
    T = np.asarray(target, dtype=np.float64)
    T = (T + T.T) / 2
    mask = np.asarray(mask, dtype=bool)
    Mf = mask.astype(np.float64)
    W = np.asarray(W0, dtype=np.float64) * Mf
    const = float(np.vdot(T, T))
    if W.shape[1] == 0:
        return FitResult(np.array(W0, dtype=np.float64)[:, :0].copy(), 0.5 * const, 0, True, [0.5 * const])
    apply = _masked_gram_product(T, mask)

    def state(TW: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        A = W.T @ W
        f = 0.5 * (float(np.vdot(A, A)) - 2.0 * float(np.vdot(W, TW)) + const)
        g = 2.0 * (W @ A - TW) * Mf
        return A, f, g

    TW = apply(W)
    n_eval = 1
    A, f, g = state(TW)
    history = [f]
    converged = False
    S_hist: list[np.ndarray] = []
    Y_hist: list[np.ndarray] = []
    rho_hist: list[float] = []
    f_prev = f
    since_refresh = 0
    while n_eval < max_iter and math.isfinite(f):
        # Two-loop recursion.
        q = g.copy()
        alphas = []
        for s_, y_, r_ in zip(reversed(S_hist), reversed(Y_hist), reversed(rho_hist)):
            a = r_ * float(np.vdot(s_, q))
            alphas.append(a)
            q -= a * y_
        if S_hist:
            q *= float(np.vdot(S_hist[-1], Y_hist[-1])) / float(np.vdot(Y_hist[-1], Y_hist[-1]))
        for (s_, y_, r_), a in zip(zip(S_hist, Y_hist, rho_hist), reversed(alphas)):
            b = r_ * float(np.vdot(y_, q))
            q += (a - b) * s_
        P = -q
        TP = apply(P)
        n_eval += 1
        t = _quartic_step(A, W, P, TW, TP)
        if t == 0.0 and S_hist:
            # Not a descent direction: restart from steepest descent.
            S_hist, Y_hist, rho_hist = [], [], []
            P = -g
            TP = apply(P)
            n_eval += 1
            t = _quartic_step(A, W, P, TW, TP)
        if t == 0.0:
            converged = bool(float(np.linalg.norm(g)) == 0.0)
            break
        W += t * P
        since_refresh += 1
        if since_refresh >= 25:
            TW = apply(W)  # bound the drift of the running update
            n_eval += 1
            since_refresh = 0
        else:
            TW += t * TP
        g_old = g
        A, f, g = state(TW)
        history.append(f)
        s_vec = t * P
        y_vec = g - g_old
        sy = float(np.vdot(s_vec, y_vec))
        if sy > 1e-12 * float(np.vdot(y_vec, y_vec)) and sy > 0:
            S_hist.append(s_vec)
            Y_hist.append(y_vec)
            rho_hist.append(1.0 / sy)
            if len(S_hist) > history_size:
                S_hist.pop(0), Y_hist.pop(0), rho_hist.pop(0)
        if callback is not None:
            callback("refine", {"iteration": n_eval, "objective": f})
        if _stop(f_prev, f, float(np.linalg.norm(g)), float(np.linalg.norm(W)), tol, const):
            converged = True
            break
        f_prev = f
    return FitResult(W, f, n_eval, converged, history)


def _masked_factorization_torch(target, W0, mask, dev, tol, max_iter, callback) -> FitResult:
    """The same problem with torch's L-BFGS (strong Wolfe line search) on an accelerator."""
    dt = torch.float64
    T = torch.as_tensor(target, dtype=dt, device=dev)
    T = (T + T.T) / 2
    Mk = torch.as_tensor(mask, dtype=dt, device=dev)
    W = torch.as_tensor(W0 * mask, dtype=dt, device=dev).clone().requires_grad_(True)
    const = float((T * T).sum())
    if W.shape[1] == 0:
        return FitResult(W0[:, :0].copy(), 0.5 * const, 0, True, [0.5 * const])
    opt = torch.optim.LBFGS([W], lr=1.0, max_iter=50, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=0.0, tolerance_change=0.0)
    n_eval = [0]

    def closure():
        n_eval[0] += 1
        with torch.no_grad():
            SW = T @ W
            G = W.T @ W
            f = 0.5 * ((G * G).sum() - 2.0 * (W * SW).sum() + const)
            grad = 2.0 * (W @ G - SW) * Mk
        W.grad = grad
        return f

    history: list[float] = []
    f_prev = float(closure())
    history.append(f_prev)
    converged = False
    while n_eval[0] < max_iter:
        opt.step(closure)
        with torch.no_grad():
            f = float(closure())
            gnorm = float(W.grad.norm())
            wnorm = float(W.norm())
        history.append(f)
        if callback is not None:
            callback("refine", {"iteration": n_eval[0], "objective": f})
        if _stop(f_prev, f, gnorm, wnorm, tol, const):
            converged = True
            break
        if not math.isfinite(f):
            break
        f_prev = f
    return FitResult(W.detach().cpu().numpy(), f, n_eval[0], converged, history)


# ============================================================================ scores
def gls_scores(
    X: Mapping[str, np.ndarray],
    observed: np.ndarray,
    modalities: Sequence[str],
    W: np.ndarray,
    col_nodes: Sequence[Node],
    noise: Mapping[str, float],
    dims: Mapping[str, int],
    fill: float = 0.0,
) -> np.ndarray:
    """Generalised least squares (Bartlett) scores, shape (n, R).

    Each sample uses only the modalities it has: for observed set P, columns of nodes touching
    P are solved from ``(W_P^T Psi_P^-1 W_P)^-1 W_P^T Psi_P^-1 x_P``; columns of nodes with no
    observed modality get ``fill`` (0 = their prior mean). ``X`` must already be transformed
    (centred/scaled); rows of unobserved modalities are ignored.
    """
    sl = block_slices(modalities, dims)
    n = observed.shape[0]
    R = W.shape[1]
    Z = np.full((n, R), fill, dtype=np.float64)
    if R == 0:
        return Z
    patterns, inverse = np.unique(observed, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    col_node = list(col_nodes)
    for p_idx, pat in enumerate(patterns):
        rows = np.flatnonzero(inverse == p_idx)
        mods = [m for j, m in enumerate(modalities) if pat[j]]
        if not mods:
            continue
        cols = np.array([j for j, t in enumerate(col_node) if any(m in t for m in mods)], dtype=int)
        if cols.size == 0:
            continue
        feat = np.concatenate([np.arange(sl[m].start, sl[m].stop) for m in mods])
        WP = W[np.ix_(feat, cols)]
        winv = np.concatenate([np.full(dims[m], 1.0 / max(noise[m], 1e-12)) for m in mods])
        A = WP.T @ (WP * winv[:, None])
        Bt = WP * winv[:, None]  # (d_P, r_P)
        Xp = np.concatenate([np.asarray(X[m][rows], dtype=np.float64) for m in mods], axis=1)
        rhs = Xp @ Bt
        sol = np.linalg.lstsq(A, rhs.T, rcond=None)[0].T
        Z[np.ix_(rows, cols)] = sol
    return Z


def gls_error_cov(
    observed: np.ndarray,
    modalities: Sequence[str],
    W: np.ndarray,
    col_nodes: Sequence[Node],
    noise: Mapping[str, float],
    dims: Mapping[str, int],
) -> np.ndarray:
    """Mean covariance of the GLS score errors ``z_hat - z`` over the samples, shape (R, R).

    For a sample observing the set P the Bartlett scores of the columns it can solve carry the
    error covariance ``(W_P^T Psi_P^-1 W_P)^-1``; columns it cannot solve (filled with the prior
    mean) carry no estimation noise and contribute 0. Used to de-bias regressions on the scores.
    """
    sl = block_slices(modalities, dims)
    n = observed.shape[0]
    R = W.shape[1]
    out = np.zeros((R, R))
    if R == 0 or n == 0:
        return out
    patterns, counts = np.unique(observed, axis=0, return_counts=True)
    col_node = list(col_nodes)
    for pat, k in zip(patterns, counts):
        mods = [m for j, m in enumerate(modalities) if pat[j]]
        cols = np.array([j for j, t in enumerate(col_node) if any(m in t for m in mods)], dtype=int)
        if not mods or cols.size == 0:
            continue
        feat = np.concatenate([np.arange(sl[m].start, sl[m].stop) for m in mods])
        WP = W[np.ix_(feat, cols)]
        winv = np.concatenate([np.full(dims[m], 1.0 / max(noise[m], 1e-12)) for m in mods])
        A = WP.T @ (WP * winv[:, None])
        out[np.ix_(cols, cols)] += k * np.linalg.pinv(A)
    return out / n
