"""The linear HCL estimator as pure functions (the steps are in docs/structure.md).

Pipeline: streamed pairwise-complete block covariance (with two row folds) -> noise per feature
(``structure.feature_noise``) -> ranks per node by lattice peeling on the whitened, reduced
statistics (canonical correlations and Tracy-Widom thresholds; ``structure`` screens the candidates
and confirms on the folds) -> peeling initializer -> masked least-squares factorization -> GLS
scores. ``estimate_noise`` (one variance per block) and the wide path (``d_m > WIDE_RATIO * n_m``)
remain for the contrastive estimator's harmonic search and for direct use.

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
from .layout import (  # noqa: F401  (re-exported: older imports use linear.*)
    block_slices,
    canonical_rotation,
    column_nodes,
    node_columns,
    split_loadings,
    stack_loadings,
    support_mask,
)

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
    #: Statistics of the even and odd rows (``covariance_stats(..., folds=True)``), else None.
    folds: list | None = None

    @property
    def offsets(self) -> dict[str, slice]:
        return block_slices(self.modalities, self.dims)


def covariance_stats(
    source,
    chunk_size: int = 16384,
    device: torch.device | str = "cpu",
    callback: Callback | None = None,
    folds: bool = False,
) -> CovStats:
    """One streamed pass over ``source.iter_chunks`` accumulating pairwise-complete statistics.

    Per chunk: ``G += Xc^T Xc`` (float32 GEMM, float64 accumulation), ``Sx += Xc^T O`` and
    ``N += O^T O``, where ``Xc`` is the chunk shifted by the first chunk's means with missing
    rows zeroed and ``O`` the (c, M) observed mask. Only one chunk is held at a time; the sums can
    be all-reduced across processes.

    ``folds=True`` also returns the statistics of the even and of the odd rows (``.folds``, two
    CovStats, for out-of-sample checks): each chunk is then accumulated as its two halves, so the
    flops are the same and the whole-data sums are their total.
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
    n_parts = 2 if folds else 1
    if use_numpy:
        Gs = [np.zeros((Daug, Daug), dtype=np.float64) for _ in range(n_parts)]
        Sxs = [None] * n_parts
    else:
        Gs = [torch.zeros((D, D), dtype=torch.float64, device=dev) for _ in range(n_parts)]
        Sxs = [torch.zeros((D, M), dtype=torch.float64, device=dev) for _ in range(n_parts)]
    Ns = [np.zeros((M, M), dtype=np.int64) for _ in range(n_parts)]
    shift: np.ndarray | None = None
    shift_m: dict[str, np.ndarray] = {}
    n_total = 0
    buf: np.ndarray | None = None
    for chunk in source.iter_chunks(chunk_size):
        obs_all = chunk.observed
        c_all = obs_all.shape[0]
        if c_all == 0:
            continue
        if shift is None:
            shift = np.zeros(D)
            for j, m in enumerate(mods):
                x = chunk.X[m]
                rows = x if obs_all[:, j].all() else x[obs_all[:, j]]
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
        # The chunk is shifted and masked once, into one contiguous buffer; each fold is then a
        # row-strided view of it, which BLAS takes as it is (a leading dimension of two rows), so
        # the folds cost no second copy of the chunk.
        if buf is None or buf.shape[0] < c_all:
            buf = np.empty((c_all, Daug), dtype=np.float32)
        Z_all = buf[:c_all]
        X_all = Z_all[:, :D]
        for j, m in enumerate(mods):
            block = X_all[:, sl[m]]
            x = chunk.X[m]
            np.subtract(x, shift_m[m] if x.dtype == np.float32 else shift[sl[m]], out=block, casting="unsafe")
            if not obs_all[:, j].all():
                block[~obs_all[:, j]] = 0.0
        if use_numpy:
            Z_all[:, D:] = obs_all
        for f in range(n_parts):
            # Fold f holds the rows whose global index has parity f.
            sel = slice(None) if n_parts == 1 else slice((f - n_total) % 2, None, 2)
            obs = obs_all[sel]
            c = obs.shape[0]
            if c == 0:
                continue
            Z = Z_all[sel]
            Xc = Z[:, :D]
            if use_numpy:
                # numpy's Z.T @ Z on one buffer dispatches to syrk: half the flops of a GEMM.
                Gc = Z.T @ Z
                Gs[f] += Gc
                Sx_c = Gc[:D, D:]
            else:
                Of = obs.astype(np.float32)
                xt = torch.from_numpy(np.ascontiguousarray(Xc)).to(dev)
                ot = torch.from_numpy(Of).to(dev)
                Gs[f] += (xt.T @ xt).double()
                Sx_c = (xt.T @ ot).double().cpu().numpy()
                Sxs[f] += torch.from_numpy(Sx_c).to(dev)
            if np.isnan(Sx_c).any():
                _raise_nan_cell(X_all, obs_all, mods, sl, n_total)  # the row within the whole chunk
            ob = obs.astype(np.int64)
            Ns[f] += ob.T @ ob
        n_total += c_all
        if callback is not None:
            callback("covariance", {"rows": n_total, "n_samples": getattr(source, "n_samples", None)})
    if shift is None or n_total == 0:
        raise ValueError("No samples to fit.")

    def finalize(G, Sx, N, n_rows: int, strict: bool) -> CovStats | None:
        if not use_numpy:  # the device path keeps Xc^T O apart: assemble the (D + M) square
            Gn = np.zeros((D + M, D + M))
            Gn[:D, :D] = G.cpu().numpy()
            Gn[:D, D:] = Sx.cpu().numpy()
            G = Gn
        return stats_from_sums(mods, dims, shift, G, N, n_rows, strict)

    if n_parts == 1:
        return finalize(Gs[0], Sxs[0], Ns[0], n_total, True)
    total = finalize(Gs[0] + Gs[1], None if use_numpy else Sxs[0] + Sxs[1], Ns[0] + Ns[1], n_total, True)
    total.folds = [finalize(Gs[f], Sxs[f], Ns[f], (n_total + 1 - f) // 2, False) for f in range(2)]
    return total


def stats_from_sums(mods: Sequence[str], dims: Mapping[str, int], shift: np.ndarray, G: np.ndarray, N: np.ndarray,
                    n_rows: int, strict: bool = True) -> CovStats | None:
    """CovStats from sums around ``shift``: ``G`` (D + M, D + M) is ``[Xc | O]^T [Xc | O]`` (its
    block ``G[:D, D:]`` the sums of ``Xc`` over the rows observing each modality) and ``N`` (M, M)
    the pair counts; ``n_rows`` the rows summed. Pairwise-complete means and covariances.
    ``strict=False`` returns None where a modality or pair has fewer than 2 rows (folds). Used by
    :func:`covariance_stats` and by sums computed elsewhere (``dask_source``)."""
    mods = list(mods)
    sl = block_slices(mods, dims)
    D = sum(dims[m] for m in mods)
    G_np, Sx = G[:D, :D], G[:D, D:]
    for j, m in enumerate(mods):
        if N[j, j] < 2:
            if not strict:
                return None
            raise ValueError(f"Modality {m!r} is observed in {N[j, j]} sample(s); at least 2 are needed.")
    mean = np.asarray(shift, dtype=np.float64).copy()
    for j, m in enumerate(mods):
        mean[sl[m]] += Sx[sl[m], j] / N[j, j]
    cov = np.zeros((D, D))
    for a, ma in enumerate(mods):
        for b, mb in enumerate(mods):
            if b < a:
                continue
            nab = N[a, b]
            if nab < 2:
                if not strict:
                    return None
                raise ValueError(
                    f"Modalities {ma!r} and {mb!r} share {nab} sample(s); a covariance between them "
                    "needs more. Drop one of them or the nodes that join them."
                )
            mu_a = Sx[sl[ma], b] / nab
            mu_b = Sx[sl[mb], a] / nab
            block = G_np[sl[ma], sl[mb]] / nab - np.outer(mu_a, mu_b)
            cov[sl[ma], sl[mb]] = block
            cov[sl[mb], sl[ma]] = block.T
    return CovStats(mods, dict(dims), mean, cov, N, int(n_rows))


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


#: Upper quantiles of the Tracy-Widom law TW1 (Bejan 2005).
_TW1_QUANTILES = {0.95: 0.9793, 0.99: 2.0234, 0.999: 3.2724}


def cca_largest_root_quantile(p: int, q: int, n: int, level: float = 0.999) -> float:
    """Upper ``level`` quantile of the largest squared sample canonical correlation between
    independent Gaussian sets of ``p`` and ``q`` variables observed in ``n`` samples.

    Johnstone's (2008) Tracy-Widom approximation on the logit scale: with ``m = n - 1 - q``,
    ``sin^2(g/2) = (min(p, q) - 1/2) / (m + q - 1)``, ``sin^2(f/2) = (max(p, q) - 1/2) / (m + q - 1)``,
    ``mu = 2 log tan((f + g) / 2)``, ``sigma^3 = 16 / (m + q - 1)^2 / (sin^2(f + g) sin f sin g)``,
    ``logit(r^2) ~ mu + sigma TW1``. Accurate from p = q = 2 and conservative below; unlike
    Wachter's edge it accounts for the n^(-2/3) fluctuation of the largest root, which dominates
    when p and q are a handful of variables. Returns 1 where the roots reach 1 (p + q >= n - 1).
    """
    p, q = int(min(p, q)), int(max(p, q))
    if p <= 0:
        return 0.0
    m = n - 1 - q
    if m < 1:
        return 1.0
    N = m + q - 1
    g = 2.0 * math.asin(math.sqrt(min((p - 0.5) / N, 1.0)))
    f = 2.0 * math.asin(math.sqrt(min((q - 0.5) / N, 1.0)))
    if f + g >= math.pi:
        return 1.0
    mu = 2.0 * math.log(math.tan((f + g) / 2.0))
    sigma = (16.0 / N**2 / (math.sin(f + g) ** 2 * math.sin(f) * math.sin(g))) ** (1.0 / 3.0)
    w = mu + sigma * _TW1_QUANTILES[level]
    return 1.0 / (1.0 + math.exp(-w))


#: Relative allowance over the Tracy-Widom quantile for the error of an estimated noise level, up
#: to ``TW_SLACK_N`` samples; beyond, it shrinks as 1 / sqrt(n) with that error. A fixed 1 % hid
#: a private factor at 2.1x the detection limit at n = 10^6 (the edge's own gap is 0.5 % there).
TW_SLACK = 0.01
TW_SLACK_N = 20_000


def mp_tw_edge(d: int, n: int, level: float = 0.999, slack: float | None = None) -> float:
    """Upper ``level`` quantile of the largest eigenvalue of a unit-noise sample covariance of ``d``
    variables in ``n`` samples (Johnstone 2001: centre ``(sqrt(n - 1) + sqrt(d))^2 / n``, scale
    ``(sqrt(n - 1) + sqrt(d)) (1 / sqrt(n - 1) + 1 / sqrt(d))^(1/3) / n``, Tracy-Widom TW1), times
    ``1 + slack`` for the error of an estimated noise level (default: ``TW_SLACK``, shrinking as
    1 / sqrt(n) past ``TW_SLACK_N`` samples). Unlike a fixed margin over the
    Marchenko-Pastur edge it keeps a spike at twice the detection limit countable."""
    d = max(int(d), 1)
    a = math.sqrt(max(n - 1, 1)) + math.sqrt(d)
    mu = a * a
    sigma = a * (1.0 / math.sqrt(max(n - 1, 1)) + 1.0 / math.sqrt(d)) ** (1.0 / 3.0)
    if slack is None:
        slack = TW_SLACK * min(1.0, math.sqrt(TW_SLACK_N / max(n, 1)))
    return (mu + sigma * _TW1_QUANTILES[level]) / n * (1.0 + slack)


def chi2_quantile(df: int, level: float = 0.999) -> float:
    """Upper ``level`` quantile of the chi-square law with ``df`` degrees of freedom
    (Wilson-Hilferty; slightly conservative: 3% high at df = 1, 1% at df = 5)."""
    z = {0.95: 1.6449, 0.99: 2.3263, 0.999: 3.0902}[level]
    df = max(int(df), 1)
    h = 2.0 / (9.0 * df)
    return df * (1.0 - h + z * math.sqrt(h)) ** 3


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
    if d > n + 20:
        # A covariance of n samples has rank <= n: its non-zero eigenvalues from a range finder
        # (d^2 n flops, not d^3); the rest are zeros.
        top = cov_eigh(cov_mm, n)[0]
        lam = np.zeros(d)
        lam[: top.size] = top
    else:
        lam = np.sort(np.linalg.eigvalsh(cov_mm))[::-1]
    return noise_from_eigenvalues(lam, n, margin, max_iter)


def noise_from_eigenvalues(lam: np.ndarray, n: int, margin: float = 0.1, max_iter: int = 50) -> tuple[float, int]:
    """:func:`estimate_noise` from the block's eigenvalues ``lam`` (d,), descending."""
    d = lam.shape[0]
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


# ---------------------------------------------------------------------------- wide modalities
#: A modality is *wide* when ``d_m > WIDE_RATIO * n_m`` (n_m = samples observing it); the peeler
#: then reduces it to its signal subspace (its top principal components) before any canonical
#: correlation is taken ("PCA-then-CCA", see ``_Peeler``). Why: sample canonical correlations
#: between blocks of p = d_a / n and q = d_b / n fill Wachter's law up to its edge; with the 25%
#: margin that edge is 0.45 at p = q = 0.1, 0.8 at p = q = 0.2, above 1 from p = q ~ 0.28, and
#: once p + q >= 1 d_a + d_b - n correlations equal 1 whatever the truth (the failure on the
#: bundled omics example, d = 2000 / 400 / 80 for n = 200). A shared factor must beat that edge
#: with its full-block canonical correlation, while the PCA-reduced test needs only to beat the
#: edge of a handful of components. In simulations (3 modalities, n = 1000, several hierarchies)
#: the full-block test loses structures from d / n = 0.12 at moderate signal (exact in 1/10 runs
#: against 10/10 reduced) and nearly always from 0.15; at moderate signal the two agree up to
#: d / n = 0.1 (near the detection limit the reduced test is ahead even at d / n = 0.03-0.08, but
#: the validated n >> d estimator is kept there). Whitening a near-singular d x d block is also
#: unstable and O(d^3). Below the ratio nothing changes (bit for bit): every data set of the
#: tests, benchmarks and bundled examples other than omics has d / n <= 0.05.
WIDE_RATIO = 0.1
#: Principal components kept for a wide modality beyond its signal rank (eigenvalues above its noise
#: edge). A factor just under the edge (but above the BBP threshold sqrt(d / n)) is still partly
#: visible in the next components; each extra component costs 1 / n on Wachter's p.
WIDE_EXTRA_PCS = 4
#: Level of the finite-sample floors of the reduced tests: the Tracy-Widom quantile of the largest
#: null canonical correlation (:func:`cca_largest_root_quantile`) and the chi-square quantile of
#: the row test in ``_Peeler.shared_subspace``.
WIDE_CCA_LEVEL = 0.999
#: A candidate direction is a leftover of a larger node's factor when the modalities outside the
#: node predict it beyond this multiple of the null quantile (the largest squared canonical
#: correlation of the candidate space with them, at WIDE_CCA_LEVEL). 1.75 on a grid of 86 simulated
#: cases: 84 exact, against 83 for 2 and 83 for twice the one-variate chi-square quantile.
LEAK_FACTOR = 1.75


def is_wide(d: int, n: int) -> bool:
    """Whether a modality of ``d`` features observed in ``n`` samples is reduced to its principal
    components before canonical correlations (``d > WIDE_RATIO * n``)."""
    return d > WIDE_RATIO * max(n, 1)


def cov_eigh(A: np.ndarray, n: int | None = None, oversample: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """All eigenpairs of a symmetric PSD matrix that matter, descending: (q,), (d, q).

    A sample covariance of ``n`` samples has rank <= n. When ``d`` exceeds ``n + 2 oversample`` its
    range is found from one product with ``n + oversample`` random vectors (d^2 n flops instead of
    the d^3 of a full eigendecomposition) and the eigenpairs are exact there; the eigenvalues not
    returned are zero. The capture is checked on the trace (for PSD A, the trace left out is the
    sum of the eigenvalues missed); if it fails (A is not of rank <= n) a full LAPACK eigh is used.
    """
    A = (A + A.T) / 2
    d = A.shape[0]
    if n is not None and d > n + 2 * oversample:
        k = n + oversample
        rng = np.random.default_rng(0)
        Q = np.linalg.qr(A @ rng.standard_normal((d, k)))[0]
        lam, V = np.linalg.eigh(Q.T @ A @ Q)
        tr = float(np.trace(A))
        if tr - float(np.sum(lam)) <= 1e-6 * max(abs(tr), 1e-300):
            return lam[::-1], Q @ V[:, ::-1]
    lam, V = np.linalg.eigh(A)
    return lam[::-1], V[:, ::-1]


def _range_basis(X: np.ndarray | None, rtol: float = 1e-10) -> np.ndarray | None:
    """Orthonormal basis of the column span of X (rank-revealing), or None when X is empty."""
    if X is None or X.shape[1] == 0:
        return None
    U, s, _ = np.linalg.svd(X, full_matrices=False)
    k = int(np.sum(s > s.max() * rtol)) if s.size and s.max() > 0 else 0
    return U[:, :k] if k else None


def _top_count(A: np.ndarray, threshold: float, k0: int) -> tuple[np.ndarray, int]:
    """Top eigenvalues (descending) of symmetric A and how many exceed ``threshold``.

    Subspace iteration for ``k0 + 3`` eigenvalues, doubled while all of them exceed the threshold
    (LAPACK for small matrices). Ritz values never exceed the eigenvalues they approximate, so a
    count can only be low where an eigenvalue sits within round-off of a crowded bulk.
    """
    d = A.shape[0]
    k = min(max(k0, 1) + 3, d)
    while True:
        lam = top_eigs(A, k)[0]
        c = int(np.sum(lam > threshold))
        if c < k or k >= d:
            return lam, c
        k = min(2 * k, d)


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


def _qr_full_rank(U: np.ndarray) -> np.ndarray | None:
    """Orthonormal basis Q of span(U) when U has full column rank (the test of
    :func:`_full_col_rank`), else None."""
    if U.shape[1] > U.shape[0]:
        return None
    Q, R = np.linalg.qr(U)
    diag = np.abs(np.diag(R))
    return Q if diag.size and int(np.sum(diag > diag.max() * 1e-10)) == U.shape[1] else None


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
    edge (|S| >= 2) or eigenvalues against the Marchenko-Pastur edge (|S| = 1).

    Wide modalities (:func:`is_wide`) enter every canonical correlation through their top ``k_m``
    principal components (``k_m`` = signal rank + ``WIDE_EXTRA_PCS``, :meth:`pcs`), never through
    their d_m features: the whitened variables are ``w_m = Lambda_m^{-1/2} P_m^T x_m``
    (:meth:`cca_map`; a narrow modality keeps all its features, ``w_m = L_m^{-1} x_m``). Under the
    null of no shared factor the principal components of m are functions of x_m alone, hence
    independent of the other modality, and the sample canonical correlations between them and any
    independent set follow Wachter's law with ``p = k_m / n`` (the other side keeps its own
    dimension, or its ``k`` when it is wide too). With p and q a handful of variables the largest
    null root fluctuates beyond that asymptotic edge, so these reduced tests also clear a
    Tracy-Widom quantile (:meth:`cca_threshold`). Shared directions of a wide m found this way
    lie in span(P_m), and every deflation (shared with the outside, loadings of smaller nodes) is
    done inside that span. In a test involving a wide modality the outside modalities enter
    through their own :meth:`cca_map` variables, jointly whitened (not a joint PCA of all their
    features). Private-node counts keep the full-dimensional statistic (eigenvalues of the block
    with the shared directions projected out, against the Marchenko-Pastur edge of
    ``(d_m - k) / n``), computed by subspace iteration. Nothing of this runs when no modality is
    wide. The Schur-complement initializer (:meth:`conditional`) is left as it is: its loadings
    only start the refinement (which converges in a few dozen evaluations from them on wide data),
    and correcting it for the inconsistency of sample eigenvectors of wide blocks changed nothing.
    """

    def __init__(self, stats: CovStats, noise: Mapping[str, float], margin_eig: float, margin_cca: float,
                 signal_rank: Mapping[str, int] | None = None, tw_floor: bool = False,
                 private_dims: Mapping[str, int] | None = None):
        self.signal_rank = dict(signal_rank or {})
        # Reduced statistics: a modality's top components were selected out of private_dims[m]
        # features, so a private count compares against the largest-eigenvalue law of that many
        # (unit) noise variables, not of the few components kept.
        self.private_dims = dict(private_dims) if private_dims else None
        # Statistics of a few principal components per modality (structure.reduce_stats): the
        # largest null canonical correlation of a handful of variables fluctuates beyond Wachter's
        # edge, so every canonical-correlation count takes the Tracy-Widom floor.
        self.tw_floor = tw_floor
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
        self._pcs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._ksig: dict[str, int] = {}
        self._n_cache: dict[tuple[str, ...], int] = {}
        self._outside: dict = {}
        self.wide = {m: is_wide(stats.dims[m], int(stats.counts[i, i])) for i, m in enumerate(self.mods)}
        if self.tw_floor:
            # Reduced statistics are principal components already (at most n / 5 per modality): no
            # second reduction, in the pair screen as in the peeling.
            self.wide = {m: False for m in self.mods}

    def pcs(self, m: str) -> tuple[np.ndarray, np.ndarray]:
        """Top principal directions of a (wide) modality: ``P`` (d_m, k_m) orthonormal and their
        variances ``lam`` (k_m,), with ``P^T S_mm P = diag(lam)``; ``k_m`` = signal rank (eigenvalues
        above the noise edge) + ``WIDE_EXTRA_PCS``, at most n_m - 2 (cached)."""
        if m not in self._pcs:
            S = self.stats.cov[self.sl[m], self.sl[m]]
            d, n = self.stats.dims[m], int(self.stats.counts[self.idx[m], self.idx[m]])
            sr = self.signal_rank.get(m)
            if sr is None:
                sr = estimate_noise(S, n)[1]
            k = max(1, min(int(sr) + WIDE_EXTRA_PCS, d, max(n - 2, 1)))
            self._ksig[m] = min(int(sr), k)
            if d > n + 20:
                lam, V = cov_eigh(S, n)
                lam, V = lam[:k], V[:, :k]
            else:
                lam, V = top_eigs(S, k)
            lam = np.maximum(lam, 1e-12 * max(float(lam[0]), 1e-300))
            self._pcs[m] = (V, lam)
        return self._pcs[m]

    def cca_map(self, m: str) -> np.ndarray:
        """The map ``F_m`` (q_m, d_m) from modality m's features to its whitened canonical variables:
        ``Lambda^{-1/2} P^T`` (q_m = k_m) for a wide modality, the inverse Cholesky factor (q_m = d_m)
        otherwise. ``F_m S_mm F_m^T = I``."""
        if self.wide[m]:
            P, lam = self.pcs(m)
            return (P / np.sqrt(lam)).T
        return self.whitener(m)

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
        key = tuple(mods)
        if key not in self._n_cache:
            ii = [self.idx[m] for m in mods]
            self._n_cache[key] = int(self.stats.counts[np.ix_(ii, ii)].min())
        return self._n_cache[key]

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
        components of O, counted against Wachter's edge.

        When m or a modality of O is wide (reduced mode), both sides enter through their
        :meth:`cca_map` variables instead: m through its k_m principal components if it is wide
        (the directions found, and returned, lie in their span), and O through each of its
        modalities' own variables (principal components of a wide one), jointly whitened. A joint
        PCA of O would have the aspect ratio of all of O's features together, and its edge
        would hide factors that each modality's own PCA sees."""
        if not O:
            return None, {}
        key = (m, O)
        if key in self._shared_cache:
            return self._shared_cache[key]
        rm = self._rows((m,))
        n = self._n((m,) + O)
        if self._reduced((m,) + O):
            Y = self.outside_vars_cov(m, O)
            q = Y.shape[1]
            F = self.cca_map(m)
            mu = np.sort(np.linalg.svd(F @ Y, compute_uv=False) ** 2)[::-1] if q else np.zeros(0)
            thr = self.cca_threshold(F.shape[0], q, n, reduced=True)
            k = int(np.sum(mu > thr))
            if not k:
                U = None
            elif self.wide[m]:
                P, lam_m = self.pcs(m)
                Yr = P.T @ Y
                # Rows of the extra (below-edge) components are kept only where that component's
                # correlation with O is significant (n |corr|^2 ~ chi2_q under the null): a noise
                # row tilts U by ~ sqrt(lam_j / n) / sigma, which moves a slice of a strong
                # direction of m onto a bulk eigenvalue next to the edge (a spurious private
                # factor) or into a reduced pair test.
                ks = self._ksig[m]
                stat = n * np.sum((Yr[ks:] / np.sqrt(lam_m[ks:])[:, None]) ** 2, axis=1)
                Yr[ks:][stat <= chi2_quantile(q, WIDE_CCA_LEVEL)] = 0.0
                U = P @ np.linalg.svd(Yr, full_matrices=False)[0][:, :k]
            else:
                U = np.linalg.svd(Y, full_matrices=False)[0][:, :k]
            info = {"k": k, "rho2": mu[: k + 2].round(5).tolist(), "threshold": thr, "dims": [F.shape[0], q]}
        else:
            s_, lam, V, k_O, _ = self._whitened_spectrum(O)
            SmO = self._block(rm, self._rows(O))
            # Regression of m on the top principal components of O: E = Y Y^T with Y (d_m, k_O).
            Y = SmO @ ((s_[:, None] * V[:, :k_O]) / np.sqrt(lam[:k_O]))
            mu = np.sort(np.linalg.svd(self.whiten(m, Y), compute_uv=False) ** 2)[::-1] if k_O else np.zeros(0)
            thr = self.cca_threshold(self._len(rm), k_O, n, reduced=False)
            k = int(np.sum(mu > thr))
            U = np.linalg.svd(Y, full_matrices=False)[0][:, :k] if k else None
            info = {"k": k, "rho2": mu[: k + 2].round(5).tolist(), "threshold": thr}
        out = (U, info)
        self._shared_cache[key] = out
        return out

    def _reduced(self, mods: Iterable[str]) -> bool:
        """Whether a test among these modalities runs in reduced (PCA-then-CCA) mode."""
        return any(self.wide[m] for m in mods)

    def cca_threshold(self, p: int, q: int, n: int, reduced: bool) -> float:
        """Count canonical correlations above this: Wachter's edge for ``p`` and ``q`` variables in
        ``n`` samples, times ``1 + margin_cca``. In a reduced (PCA-then-CCA) test p and q are often
        a few principal components, where the largest null root fluctuates well beyond the
        asymptotic edge (about 2.5% of null tests of 4 x 3 variables pass the margined edge):
        there the Tracy-Widom ``WIDE_CCA_LEVEL`` quantile of the largest root is a floor."""
        thr = wachter_edge(p / n, q / n) * (1 + self.margin_cca)
        if reduced or self.tw_floor:
            thr = max(thr, cca_largest_root_quantile(p, q, n, WIDE_CCA_LEVEL))
        return thr

    def outside_vars_cov(self, m: str, O: tuple[str, ...]) -> np.ndarray:
        """``Y`` (d_m, q): covariance of modality m with the whitened variables of the modalities
        O in reduced mode, ``t = C^{-1/2} [F_o x_o]_o`` (``F_o`` = :meth:`cca_map`, ``C`` the
        covariance of the stacked ``F_o x_o``, whose diagonal blocks are identities), cached."""
        key = ("Y", m, O)
        if key not in self._shared_cache:
            if ("T", O) not in self._shared_cache:
                Fs = [self.cca_map(o) for o in O]
                C = np.block([[Fi @ self.stats.cov[self.sl[oi], self.sl[oj]] @ Fj.T for oj, Fj in zip(O, Fs)]
                              for oi, Fi in zip(O, Fs)])
                self._shared_cache[("T", O)] = (Fs, _whitener(C, 1e-8))
            Fs, Wc = self._shared_cache[("T", O)]
            Sm = np.concatenate([self.stats.cov[self.sl[m], self.sl[o]] @ F.T for o, F in zip(O, Fs)], axis=1)
            self._shared_cache[key] = Sm @ Wc.T
        return self._shared_cache[key]

    def _pair_cca(self, a: str, b: str, Ua: np.ndarray | None, Ub: np.ndarray | None) -> tuple[np.ndarray, int, int]:
        """Squared canonical correlations (descending) between the parts of modalities a and b
        orthogonal to span(Ua) and span(Ub), with the dimensions of those parts (a wide modality:
        :meth:`_pair_cca_reduced`).

        CCA is invariant to a change of basis within each set, so with ``x_a = L_a z_a`` (Cholesky)
        the directions ``v`` orthogonal to ``Ua`` are the whitened directions orthogonal to
        ``L_a^{-1} Ua``: the correlations are the singular values of the cached whitened
        cross-covariance deflated by two rank-k projections (no d x d complement, no per-pair
        factorization).
        """
        da, db = self.stats.dims[a], self.stats.dims[b]
        if self.wide[a] or self.wide[b]:
            return self._pair_cca_reduced(a, b, Ua, Ub)
        fast = self.chol(a) is not None and self.chol(b) is not None
        # One QR per side: the whitener is invertible, so the whitened U has U's rank.
        Va = _qr_full_rank(self.whiten(a, Ua)) if fast and Ua is not None else None
        Vb = _qr_full_rank(self.whiten(b, Ub)) if fast and Ub is not None else None
        fast = fast and (Ua is None or Va is not None) and (Ub is None or Vb is not None)
        if fast:
            M = self.whitened_cross(a, b)
            da_eff, db_eff = da, db
            if Va is not None:
                M = M - Va @ (Va.T @ M)
                da_eff -= Va.shape[1]
            if Vb is not None:
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

    def _pair_cca_reduced(self, a: str, b: str, Ua: np.ndarray | None,
                          Ub: np.ndarray | None) -> tuple[np.ndarray, int, int]:
        """``_pair_cca`` when a or b is wide (PCA-then-CCA).

        Each side enters through its whitened canonical variables ``w = F x`` (:meth:`cca_map`: the
        k_m principal components of a wide modality, all features of a narrow one). A variate
        ``c^T x`` with ``c`` orthogonal to span(U) is, in whitened coordinates, ``u^T w`` with ``u``
        orthogonal to ``F U`` (for a wide side: the complement of the explained directions inside
        span(P)); the correlations are the singular values of the whitened cross-covariance
        ``F_a S_ab F_b^T`` deflated by those two projections. Sizes are k_a x k_b (or k x d for a
        narrow side): no d x d factorization of a wide block.
        """
        Fa, Fb = self.cca_map(a), self.cca_map(b)
        M = (Fa @ self.stats.cov[self.sl[a], self.sl[b]]) @ Fb.T
        qa, qb = M.shape
        Va = _range_basis(Fa @ Ua) if Ua is not None else None
        Vb = _range_basis(Fb @ Ub) if Ub is not None else None
        if Va is not None:
            M = M - Va @ (Va.T @ M)
            qa -= Va.shape[1]
        if Vb is not None:
            M = M - (M @ Vb) @ Vb.T
            qb -= Vb.shape[1]
        rho2 = np.linalg.svd(M, compute_uv=False) ** 2
        return np.clip(np.sort(rho2)[::-1][: max(min(qa, qb), 0)], 0.0, 1.0), qa, qb

    def _drop_leaked(self, m: str, U: np.ndarray | None, O: tuple[str, ...], r: int) -> tuple[int, list[float]]:
        """Of the ``r`` private candidates of modality m (top eigenvectors of its block with the
        shared directions span(U) projected out), keep those that the other modalities O do not
        predict. A leftover of an imperfectly removed shared factor is correlated with O; a private
        factor is not: the candidate space loses one dimension per squared canonical correlation
        with O's variables above ``_leak_limit``. Returns the count kept and those correlations
        (reduced statistics only: O's block is small there)."""
        Smm = self.stats.cov[self.sl[m], self.sl[m]]
        if U is not None and U.shape[1]:
            Q = np.linalg.qr(U)[0]
            PS = Smm - Q @ (Q.T @ Smm)
            A = PS - (PS @ Q) @ Q.T
        else:
            A = Smm
        lam, V = np.linalg.eigh((A + A.T) / 2)
        V = V[:, ::-1][:, :r]
        try:
            r2 = self._r2_on(m, V, O)
        except np.linalg.LinAlgError:
            return r, []
        return r - int(np.sum(r2 > self._leak_limit(m, O, r))), [round(float(x), 5) for x in r2]

    def _r2_on(self, m: str, V: np.ndarray, O: tuple[str, ...]) -> np.ndarray:
        """Squared canonical correlations (descending, one per column of V) between the candidate
        space ``span(V^T x_m)`` and all variables of the modalities O.

        Rotation-invariant on purpose: candidate variates often mix a genuine factor with the
        leftover of a larger node's factor, and testing them one by one then blames both (or
        neither); the eigenvalues count how many dimensions of the candidate space O predicts.
        """
        Smm = self.stats.cov[self.sl[m], self.sl[m]]
        if (m, O) not in self._outside:
            # S_Om^T S_OO^{-1} S_Om, the part of m's covariance that O predicts (cached per m, O:
            # every candidate of every node outside O asks for it).
            ro = self._rows(O)
            SmO = self._block(self.sl[m], ro)
            SOO = self._block(ro, ro)
            self._outside[(m, O)] = SmO @ np.linalg.solve((SOO + SOO.T) / 2, SmO.T)
        G = V.T @ self._outside[(m, O)] @ V
        Wv = _whitener(V.T @ Smm @ V, 1e-12)
        lam = np.linalg.eigvalsh(Wv @ ((G + G.T) / 2) @ Wv.T)[::-1]
        return np.clip(lam, 0.0, 1.0)

    def _leak_limit(self, m: str, O: tuple[str, ...], k: int) -> float:
        # A multiple of the null quantile of the largest of the k squared canonical correlations
        # between the candidate space and O: a genuine factor's direction carries a little of a
        # leaked shared one too; a leftover of a larger node's factor is predicted far beyond it.
        q, n = self._len(self._rows(O)), self._n((m,) + O)
        return LEAK_FACTOR * cca_largest_root_quantile(k, q, n, WIDE_CCA_LEVEL)

    def _drop_leaked_pair(self, a: str, b: str, Ua: np.ndarray | None, Ub: np.ndarray | None,
                          O: tuple[str, ...], c: int) -> tuple[int, list]:
        """Of the ``c`` significant canonical pairs of a and b (span(Ua), span(Ub) removed), keep those
        whose variates the modalities outside the node (O) do not predict on either side: a
        leftover of a larger node's factor, imperfectly removed, is shared with O and would
        otherwise be counted here (reduced statistics only)."""
        cov = self.stats.cov
        try:
            Va = _qr_full_rank(self.whiten(a, Ua)) if Ua is not None else None
            Vb = _qr_full_rank(self.whiten(b, Ub)) if Ub is not None else None
            if (self.chol(a) is not None and self.chol(b) is not None
                    and (Ua is None or Va is not None) and (Ub is None or Vb is not None)):
                # As in _pair_cca: the canonical pairs of the deflated whitened cross-covariance,
                # mapped back to coefficients on the features (v = L^{-T} u, orthogonal to U).
                M = self.whitened_cross(a, b)
                if Va is not None:
                    M = M - Va @ (Va.T @ M)
                if Vb is not None:
                    M = M - (M @ Vb) @ Vb.T
                U_, _, Vt = np.linalg.svd(M, full_matrices=False)
                va = self.whitener(a).T @ U_[:, :c]
                vb = self.whitener(b).T @ Vt.T[:, :c]
            else:
                Qa = _orth_complement(Ua, self.stats.dims[a])
                Qb = _orth_complement(Ub, self.stats.dims[b])
                A = Qa.T @ cov[self.sl[a], self.sl[a]] @ Qa
                B = Qb.T @ cov[self.sl[b], self.sl[b]] @ Qb
                K = Qa.T @ cov[self.sl[a], self.sl[b]] @ Qb
                Wa = _whitener(A, 1e-10)
                Wb = _whitener(B, 1e-10)
                U_, _, Vt = np.linalg.svd(Wa @ K @ Wb.T)
                va = Qa @ (Wa.T @ U_[:, :c])
                vb = Qb @ (Wb.T @ Vt.T[:, :c])
            r2a, r2b = self._r2_on(a, va, O), self._r2_on(b, vb, O)
        except np.linalg.LinAlgError:
            return c, []
        # Dimensions of the candidate space that O predicts, on the side that shows more of them.
        leaked = max(int(np.sum(r2a > self._leak_limit(a, O, c))), int(np.sum(r2b > self._leak_limit(b, O, c))))
        return c - leaked, [[round(float(x), 5), round(float(y), 5)] for x, y in zip(r2a, r2b)]

    def _private_spectrum(self, m: str, U: np.ndarray | None, node: Node) -> tuple[np.ndarray, int, float, int]:
        """Eigenvalues of modality m's block with span(U) projected out against the
        Marchenko-Pastur edge of its remaining dimension: (top eigenvalues, dimension, edge, count).

        A narrow modality: the full spectrum (LAPACK). A wide one: the same statistic, but only its
        top eigenvalues, by subspace iteration on the projected block (no d^3 work)."""
        dims = self.stats.dims
        Smm = self.stats.cov[self.sl[m], self.sl[m]]
        n = self._n(node)
        if self.wide[m]:
            V = _range_basis(U)
            dq = dims[m] - (0 if V is None else V.shape[1])
            edge = self.noise[m] * mp_edge(dq / n) * (1 + self.margin_eig)
            if V is None:
                A = Smm
            else:
                PS = Smm - V @ (V.T @ Smm)
                A = PS - (PS @ V) @ V.T
            lam, r = _top_count(A, edge, self.pcs(m)[0].shape[1])
            return lam, dq, edge, r
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
        if self.private_dims is not None:
            edge = self.noise[m] * mp_tw_edge(self.private_dims[m] - (dims[m] - dq), n)
        else:
            edge = self.noise[m] * mp_edge(dq / n) * (1 + self.margin_eig)
        return lam, dq, edge, int(np.sum(lam > edge))

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
                    U, sh = self.shared_subspace(m, O)
                    lam, dq, edge, r = self._private_spectrum(m, U, node)
                    info = {"eigenvalues": lam[: r + 3].round(5).tolist(), "threshold": edge}
                    if r > 0 and O and self.private_dims is not None:
                        r, info["leaked"] = self._drop_leaked(m, U, O, r)
                    if self.wide[m]:
                        # PCA-then-CCA: components kept, signal rank, and what the shared test saw.
                        info["reduced"] = {"pcs": int(self.pcs(m)[0].shape[1]), "signal_rank": self._ksig[m],
                                           "shared": sh}
                else:
                    counts, pairs_info = [], {}
                    for a, b in combinations(node, 2):
                        inner = [t for t in smaller if a in t and b in t]
                        Ua = _hstack([self.shared_subspace(a, O)[0], _stack_sub([loads[t] for t in inner], inner, a, dims)])
                        Ub = _hstack([self.shared_subspace(b, O)[0], _stack_sub([loads[t] for t in inner], inner, b, dims)])
                        rho2, da_eff, db_eff = self._pair_cca(a, b, Ua, Ub)
                        n = self._n((a, b))
                        thr = self.cca_threshold(da_eff, db_eff, n, reduced=self.wide[a] or self.wide[b])
                        c = int(np.sum(rho2 > thr))
                        leaked = None
                        if c > 0 and O and self.private_dims is not None:
                            c, leaked = self._drop_leaked_pair(a, b, Ua, Ub, O, c)
                        counts.append(c)
                        pairs_info[f"{a}+{b}"] = {"rho2": rho2[: c + 3].round(5).tolist(), "threshold": thr, "count": c}
                        if leaked is not None:
                            pairs_info[f"{a}+{b}"]["leaked"] = leaked
                        if self.wide[a] or self.wide[b]:
                            pairs_info[f"{a}+{b}"]["dims"] = [int(da_eff), int(db_eff)]
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
    tw_floor: bool = False,
    private_dims: Mapping[str, int] | None = None,
) -> PeelResult:
    """Ranks (where not fixed) and initial loadings for every lattice node, smallest nodes first.

    ``signal_rank`` (modality -> number of eigenvalues above its noise edge) bounds eigen-searches
    for speed and sets how many principal components a wide modality keeps (:func:`is_wide`;
    computed here when not given).
    """
    return _Peeler(stats, noise, margin_eig, margin_cca, signal_rank, tw_floor, private_dims).run(lattice, fixed, callback)


# ============================================================================ masked factorization
@dataclass
class FitResult:
    W: np.ndarray  # (D, R)
    objective: float
    n_iter: int
    converged: bool
    history: list[float]


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


#: The refinement stops (unconverged) once the last ``STALL_WINDOW`` steps together gained less
#: than ``STALL_FRACTION`` of everything gained since the start: many weak factors make L-BFGS crawl
#: for thousands of steps over a few parts in a thousand of the objective.
STALL_WINDOW = 25
STALL_FRACTION = 1e-3


def _stalled(history: Sequence[float]) -> bool:
    if len(history) <= STALL_WINDOW:
        return False
    gained = history[0] - history[-1]
    recent = history[-1 - STALL_WINDOW] - history[-1]
    return gained > 0 and recent < STALL_FRACTION * gained


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
    *and* the masked gradient norm is below ``sqrt(tol)`` relative to ``||target|| * ||W||``
    (converged), when the last ``STALL_WINDOW`` steps gained under ``STALL_FRACTION`` of the total
    gain (stalled, not converged), or at ``max_iter`` function evaluations. The objective uses
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
        if _stalled(history):
            # A plateau at round-off (where no relative-change test can pass) is convergence when
            # the gradient is negligible; a crawl over many weak factors is not.
            tn = math.sqrt(const) if const > 0 else 1.0
            converged = float(np.linalg.norm(g)) <= 1e-5 * tn * max(float(np.linalg.norm(W)), 1e-12)
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
def _inverse_noise(noise_m: float | np.ndarray, d: int) -> np.ndarray:
    """1 / noise variance per feature of a modality, (d,): ``noise_m`` is one variance or one per
    feature."""
    return np.broadcast_to(1.0 / np.maximum(np.asarray(noise_m, dtype=np.float64), 1e-12), (d,))


def gls_scores(
    X: Mapping[str, np.ndarray],
    observed: np.ndarray,
    modalities: Sequence[str],
    W: np.ndarray,
    col_nodes: Sequence[Node],
    noise: Mapping[str, float | np.ndarray],
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
        winv = np.concatenate([_inverse_noise(noise[m], dims[m]) for m in mods])
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
        winv = np.concatenate([_inverse_noise(noise[m], dims[m]) for m in mods])
        A = WP.T @ (WP * winv[:, None])
        out[np.ix_(cols, cols)] += k * np.linalg.pinv(A)
    return out / n


def loglik_samples(
    X: Mapping[str, np.ndarray],
    observed: np.ndarray,
    modalities: Sequence[str],
    W: np.ndarray,
    noise: Mapping[str, float | np.ndarray],
    dims: Mapping[str, int],
) -> np.ndarray:
    """Gaussian log-likelihood of each sample under ``x ~ N(0, W W^T + Psi)``, shape (n,).

    ``X`` is already transformed (centred, scaled); a sample uses only the modalities it has (the
    marginal of the observed features). Per observation pattern P, with ``A = I + W_P^T Psi_P^-1 W_P``
    (Woodbury): ``log det = sum log psi + log det A`` and
    ``x^T Sigma^-1 x = x^T Psi^-1 x - b^T A^-1 b``, ``b = W_P^T Psi_P^-1 x``: O(d_P R) per sample.
    """
    sl = block_slices(modalities, dims)
    n = observed.shape[0]
    out = np.zeros(n)
    patterns, inverse = np.unique(observed, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    for p_idx, pat in enumerate(patterns):
        rows = np.flatnonzero(inverse == p_idx)
        mods = [m for j, m in enumerate(modalities) if pat[j]]
        if not mods:
            continue
        feat = np.concatenate([np.arange(sl[m].start, sl[m].stop) for m in mods])
        winv = np.concatenate([_inverse_noise(noise[m], dims[m]) for m in mods])
        WP = W[feat]
        A = np.eye(W.shape[1]) + WP.T @ (WP * winv[:, None])
        sign, logdet_a = np.linalg.slogdet(A)
        logdet = float(-np.sum(np.log(winv)) + logdet_a)
        Xp = np.concatenate([np.asarray(X[m][rows], dtype=np.float64) for m in mods], axis=1)
        B = (Xp * winv) @ WP  # (k, R)
        quad = np.einsum("ij,ij->i", Xp * winv, Xp) - np.einsum("ij,ij->i", B, np.linalg.solve(A, B.T).T)
        out[rows] = -0.5 * (feat.size * math.log(2 * math.pi) + logdet + quad)
    return out
