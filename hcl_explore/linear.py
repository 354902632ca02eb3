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
import scipy.linalg as sla
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
    if use_numpy:
        G = np.zeros((D, D), dtype=np.float64)
        Sx = np.zeros((D, M), dtype=np.float64)
    else:
        G = torch.zeros((D, D), dtype=torch.float64, device=dev)
        Sx = torch.zeros((D, M), dtype=torch.float64, device=dev)
    N = np.zeros((M, M), dtype=np.int64)
    shift: np.ndarray | None = None
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
                rows = chunk.X[m][obs[:, j]]
                if rows.shape[0]:
                    shift[sl[m]] = rows.mean(axis=0, dtype=np.float64)
        if buf is None or buf.shape[0] < c:
            buf = np.empty((c, D), dtype=np.float32)
        Xc = buf[:c]
        for j, m in enumerate(mods):
            block = Xc[:, sl[m]]
            np.subtract(chunk.X[m], shift[sl[m]], out=block, casting="unsafe")
            if not obs[:, j].all():
                block[~obs[:, j]] = 0.0
        Of = obs.astype(np.float32)
        if use_numpy:
            # numpy's X.T @ X on one buffer dispatches to syrk: half the flops of a GEMM.
            G += Xc.T @ Xc
            Sx_c = Xc.T @ Of
            Sx += Sx_c
        else:
            xt = torch.from_numpy(Xc).to(dev)
            ot = torch.from_numpy(Of).to(dev)
            G += (xt.T @ xt).double()
            Sx_c = (xt.T @ ot).double().cpu().numpy()
            Sx += torch.from_numpy(Sx_c).to(dev)
        if np.isnan(Sx_c).any():
            _raise_nan_cell(Xc, obs, mods, sl, n_total)
        N += (obs.T.astype(np.int64) @ obs.astype(np.int64))
        n_total += c
        if callback is not None:
            callback("covariance", {"rows": n_total, "n_samples": getattr(source, "n_samples", None)})
    if shift is None or n_total == 0:
        raise ValueError("No samples to fit.")
    G_np = G if use_numpy else G.cpu().numpy()
    Sx_np = Sx if use_numpy else Sx.cpu().numpy()
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
    xs = np.linspace(lo, hi, 4001)
    dens = np.sqrt(np.clip((hi - xs) * (xs - lo), 0, None)) / (2 * math.pi * gamma * np.maximum(xs, 1e-300))
    cdf = np.concatenate([[0.0], np.cumsum((dens[1:] + dens[:-1]) / 2 * np.diff(xs))])
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


def _sym_eig(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lam, V = np.linalg.eigh((A + A.T) / 2)
    order = np.argsort(lam)[::-1]
    return lam[order], V[:, order]


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
    shift = max(0.0, -float(np.min(np.diag(A)))) + abs(float(np.linalg.norm(A, 1))) * 0.0
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


def _whitener(A: np.ndarray, floor: float) -> np.ndarray:
    """Lower-triangular L with L L^T = A (A clamped at ``floor`` if it is not positive definite),
    returned as L^{-1}, shape (d, d)."""
    try:
        Lc = np.linalg.cholesky((A + A.T) / 2)
    except np.linalg.LinAlgError:
        lam, V = np.linalg.eigh((A + A.T) / 2)
        return (V / np.sqrt(np.maximum(lam, floor))).T
    return sla.solve_triangular(Lc, np.eye(A.shape[0]), lower=True)


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

    def _rows(self, mods: Iterable[str]) -> np.ndarray | slice:
        mods = list(mods)
        if len(mods) == 1:
            return self.sl[mods[0]]
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
            self._whiteners[m] = _whitener(self.stats.cov[self.sl[m], self.sl[m]], 0.5 * self.noise[m])
        return self._whiteners[m]

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

    def generalized_inverse(self, O: tuple[str, ...], denoise: bool = True) -> np.ndarray:
        """Truncated inverse of the covariance of modalities O on its signal subspace, (d_O, d_O).

        ``denoise=True``: whitened spikes are debiased to population values (an inverse of the
        denoised covariance, for conditioning in the initializer). ``denoise=False``: the sample
        eigenvalues are kept, so ``S_mO G S_Om`` is an honest regression on the top principal
        components of O (its canonical correlations then have Wachter's null law).
        """
        s, lam, V, k, gamma = self._whitened_spectrum(O)
        vals = lam[:k]
        keep = np.arange(k)
        if denoise:
            vals = debias_spike(vals, gamma)
            keep = keep[vals > 0]
            vals = vals[vals > 0]
        Vk = V[:, keep]
        return (s[:, None] * Vk) @ np.diag(1.0 / vals) @ (Vk.T * s[None, :])

    def conditional(self, S: Node) -> np.ndarray:
        """Noisy covariance of the modalities in S given the signal of the others, (d_S, d_S)."""
        rows = self._rows(S)
        C = self._block(rows, rows)
        O = tuple(m for m in self.mods if m not in S)
        if not O:
            return C.copy()
        ro = self._rows(O)
        Cso = self._block(rows, ro)
        return C - Cso @ self.generalized_inverse(O) @ Cso.T

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
        Winv = self.whitener(m)
        mu = np.sort(np.linalg.svd(Winv @ Y, compute_uv=False) ** 2)[::-1] if k_O else np.zeros(0)
        n = self._n((m,) + O)
        thr = wachter_edge(self._len(rm) / n, k_O / n) * (1 + self.margin_cca)
        k = int(np.sum(mu > thr))
        U = np.linalg.svd(Y, full_matrices=False)[0][:, :k] if k else None
        out = (U, {"k": k, "rho2": mu[: k + 2].round(5).tolist(), "threshold": thr})
        self._shared_cache[key] = out
        return out

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
                    Q = _orth_complement(U, dims[m])
                    Smm = self.stats.cov[self.sl[m], self.sl[m]]
                    lam = np.linalg.eigvalsh(Q.T @ Smm @ Q)[::-1]
                    n = self._n(node)
                    edge = self.noise[m] * mp_edge(Q.shape[1] / n) * (1 + self.margin_eig)
                    r = int(np.sum(lam > edge))
                    info = {"eigenvalues": lam[: r + 3].round(5).tolist(), "threshold": edge}
                else:
                    counts, pairs_info = [], {}
                    for a, b in combinations(node, 2):
                        inner = [t for t in smaller if a in t and b in t]
                        Ua = _hstack([self.shared_subspace(a, O)[0], _stack_sub([loads[t] for t in inner], inner, a, dims)])
                        Ub = _hstack([self.shared_subspace(b, O)[0], _stack_sub([loads[t] for t in inner], inner, b, dims)])
                        Qa = _orth_complement(Ua, dims[a])
                        Qb = _orth_complement(Ub, dims[b])
                        ra, rb = self.sl[a], self.sl[b]
                        cov = self.stats.cov
                        A = Qa.T @ cov[ra, ra] @ Qa
                        Bm = Qb.T @ cov[rb, rb] @ Qb
                        K = Qa.T @ cov[ra, rb] @ Qb
                        Wa = _whitener(A, 0.5 * self.noise[a])
                        Wb = _whitener(Bm, 0.5 * self.noise[b])
                        rho = np.linalg.svd(Wa @ K @ Wb.T, compute_uv=False)
                        n = self._n((a, b))
                        thr = wachter_edge(Qa.shape[1] / n, Qb.shape[1] / n) * (1 + self.margin_cca)
                        rho2 = np.minimum(rho**2, 1.0)
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


def support_mask(modalities: Sequence[str], dims: Mapping[str, int], nodes: Sequence[Node], ranks: Mapping[Node, int]) -> np.ndarray:
    """Bool (D, R): entry (i, j) may be non-zero iff feature i's modality is in column j's node."""
    sl = block_slices(modalities, dims)
    D = sum(dims[m] for m in modalities)
    R = sum(ranks[n] for n in nodes)
    mask = np.zeros((D, R), dtype=bool)
    col = 0
    for node in nodes:
        r = ranks[node]
        for m in node:
            mask[sl[m], col : col + r] = True
        col += r
    return mask


def masked_factorization(
    target: np.ndarray,
    W0: np.ndarray,
    mask: np.ndarray,
    device: torch.device | str = "cpu",
    tol: float = 1e-10,
    max_iter: int = 5000,
    callback: Callback | None = None,
) -> FitResult:
    """Minimise ``0.5 * ||W W^T - target||_F^2`` over W with ``W[~mask] = 0`` by L-BFGS.

    Stops when the relative change of the objective over an L-BFGS step falls below ``tol``
    *and* the masked gradient norm is below ``sqrt(tol)`` relative to ``||target|| * ||W||``,
    or at ``max_iter`` function evaluations. The objective uses
    ``||W W^T||^2 = ||W^T W||^2`` so each evaluation costs O(D^2 R), never O(D^2 R) twice.
    """
    dev = torch.device(device)
    dt = torch.float64
    T = torch.as_tensor(target, dtype=dt, device=dev)
    T = (T + T.T) / 2
    Mk = torch.as_tensor(mask, dtype=dt, device=dev)
    W = torch.as_tensor(W0 * mask, dtype=dt, device=dev).clone().requires_grad_(True)
    const = float((T * T).sum())
    tnorm = math.sqrt(const) if const > 0 else 1.0
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
        rel = abs(f_prev - f) / max(abs(f), 1e-300 + 1e-12 * const)
        if rel < tol and gnorm <= math.sqrt(tol) * tnorm * max(wnorm, 1e-12):
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
