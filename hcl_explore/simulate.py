"""Simulate data from the HCL generative model (the linear model of docs/structure.md).

    x^(m) = sum_{S in L, m in S} B_S^(m) z_S + e^(m),   z_S ~ N(0, I_{r_S}),   e^(m) ~ N(0, sigma_m^2 I)

With ``link="nonlinear"`` each modality is an invertible nonlinear map of the same linear mixture
u^(m) = sum_S B_S^(m) z_S (see :func:`simulate` and :func:`nonlinear_warp`):

    v_1 = h(u^(m) / c_m),   v_{l+1} = h(Q_{m,l} v_l)  (l < L),   x^(m) = Q_{m,L} v_L  +  e^(m)

with h a strictly increasing elementwise warp, c_m a scalar putting u^(m) on unit scale and the
Q_{m,l} fixed random rotations of the d_m features (L = ``warp_layers``, default 2): an invertible
random "leaky-ReLU network" as in the nonlinear-ICA literature.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .data import MultimodalData
from .lattice import Lattice, Node
from .layout import stack_loadings


@dataclass
class Truth:
    """Ground truth of a simulation.

    Attributes
    ----------
    modalities : list of str
    lattice : Lattice
        The candidate lattice the data was simulated over (``ranks`` may be 0 on some nodes).
    ranks : dict node -> int
        True rank of every lattice node (0 = absent).
    loadings : dict (modality, node) -> ndarray (d_m, r_S)
        Only present nodes.
    Z : dict node -> ndarray (n, r_S)
    noise_var : dict modality -> float
    """

    modalities: list[str]
    lattice: Lattice
    ranks: dict[Node, int]
    loadings: dict[tuple[str, Node], np.ndarray]
    Z: dict[Node, np.ndarray]
    noise_var: dict[str, float]
    dims: dict[str, int] = field(default_factory=dict)
    link: str = "linear"
    #: ``link="nonlinear"`` only: per modality ``{"scale": c_m, "rotations": [Q_{m,l} (d_m, d_m), ...]}``.
    warp: dict[str, dict] = field(default_factory=dict)

    @property
    def nodes(self) -> list[Node]:
        """Nodes present in the truth (rank > 0), in lattice order."""
        return [n for n in self.lattice.nodes if self.ranks.get(n, 0) > 0]

    def W(self) -> np.ndarray:
        """Stacked loading matrix, shape (sum d_m, sum r_S), zero outside the node supports."""
        return stack_loadings(self.loadings, self.modalities, self.dims, self.nodes, self.ranks)

    def covariance(self) -> np.ndarray:
        """Population covariance W W^T + Psi, shape (D, D) (of the linear model; with
        ``link="nonlinear"`` it is the covariance of the pre-warp mixture plus noise)."""
        W = self.W()
        psi = np.concatenate([np.full(self.dims[m], self.noise_var[m]) for m in self.modalities])
        return W @ W.T + np.diag(psi)


#: Slope of :func:`nonlinear_warp` far on the negative side (the warp is strictly increasing).
WARP_LEAK = 0.1


def _raw_warp(t: np.ndarray) -> np.ndarray:
    return 0.5 * np.logaddexp(0.0, 2.0 * t) + WARP_LEAK * t


def _warp_constants() -> tuple[float, float]:
    """Mean and sd of the raw warp of a standard normal (Gauss-Hermite quadrature, deterministic)."""
    x, w = np.polynomial.hermite_e.hermegauss(120)
    w = w / w.sum()
    v = _raw_warp(x)
    mu = float(w @ v)
    return mu, float(np.sqrt(w @ (v - mu) ** 2))


_WARP_AB = _warp_constants()


def nonlinear_warp(t: np.ndarray) -> np.ndarray:
    """The elementwise warp of ``link="nonlinear"``: a leaky softplus, standardized.

        h(t) = (0.5 softplus(2 t) + 0.1 t - a) / b

    with ``a, b`` the mean and sd of ``0.5 softplus(2 t) + 0.1 t`` under t ~ N(0, 1), so a unit-normal
    input gives a mean-0, variance-1 output. h is strictly increasing (slope between 0.1/b and
    1.1/b, i.e. ReLU-like: about 11 times steeper for t >> 0 than for t << 0), hence invertible, and
    far from linear on the unit scale: its even part mixes the factors of different nodes
    multiplicatively, which a linear estimator cannot undo.
    """
    a, b = _WARP_AB
    return (_raw_warp(np.asarray(t, dtype=float)) - a) / b


def _rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    """A Haar-random orthogonal (d, d) matrix."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.where(np.diag(r) == 0, 1.0, np.diag(r)))[None, :]


def _names(k: int) -> list[str]:
    if k <= 26:
        return list(string.ascii_lowercase[:k])
    return [f"m{i + 1}" for i in range(k)]


def simulate(
    n: int = 2000,
    dims: Sequence[int] | Mapping[str, int] | int = (50, 50, 50),
    ranks: Mapping | int = 2,
    noise: float | Sequence[float] | Mapping[str, float] = 0.3,
    missing: float = 0.0,
    lattice: Lattice | None = None,
    modalities: Sequence[str] | None = None,
    loading_scale: float = 1.0,
    seed: int | None = 0,
    link: str = "linear",
    warp_layers: int = 2,
) -> tuple[MultimodalData, Truth]:
    """Draw a data set from the linear HCL model, or a nonlinear version of it.

    Parameters
    ----------
    n : int
        Number of samples.
    dims : int, sequence of int, or mapping name -> int
        Features per modality. A mapping also names the modalities. An int with ``modalities``
        gives every modality that many features.
    ranks : int or mapping node -> int
        Rank of each node. An int gives every node of ``lattice`` (default: the full lattice)
        that rank. In a mapping, a node is a tuple of modality names (any order) or one name for a
        private node; lattice nodes not named get rank 0 (absent).
    noise : float, sequence or mapping
        Noise variance sigma_m^2 per modality.
    missing : float in [0, 1)
        Fraction of samples that lack exactly one modality (chosen uniformly); those rows are NaN.
    lattice : Lattice, optional
        Candidate lattice recorded in the truth (default: full lattice over the modalities).
    modalities : sequence of str, optional
        Modality names (default ``a, b, c, ...``).
    loading_scale : float
        Loading entries are N(0, loading_scale^2 / d_m), so each factor column has squared norm
        about ``loading_scale**2`` (signal variance per factor, in units of a modality's total).
    seed : int or None
    link : "linear" or "nonlinear"
        ``"linear"`` (default): the model above. ``"nonlinear"``: the same factors ``Z``, loadings
        and noise, but each modality is observed through an invertible nonlinear map of its linear
        mixture u = sum_S B_S^(m) z_S::

            v_1 = h(u / c_m);   v_{l+1} = h(Q_{m,l} v_l) for l < L;   x^(m) = Q_{m,L} v_L + e^(m)

        where ``c_m`` = sqrt(mean over features of the population variance of u) (so the warp sees
        unit-scale inputs), ``h`` = :func:`nonlinear_warp` applied elementwise (strictly
        increasing, ReLU-like, standardized), ``Q_{m,l}`` fixed Haar-random orthogonal
        ``(d_m, d_m)`` rotations, and ``L = warp_layers``. The map u -> x - e is invertible. The
        noise ``e^(m)`` keeps variance ``noise`` per feature (the warped signal has variance
        about 1 per feature), and ``loading_scale`` only matters through the relative sizes of
        the nodes. ``truth.loadings`` are the pre-warp ``B``; ``truth.warp[m]`` holds ``scale``
        (``c_m``) and ``rotations`` (list of the L matrices). With the same seed, ``Z``,
        loadings, noise and missing pattern equal those of ``link="linear"`` (the rotations come
        from a spawned generator).
    warp_layers : int
        ``L`` above (``link="nonlinear"`` only); more layers are further from linear.

    Returns
    -------
    data : MultimodalData
    truth : Truth
    """
    if link not in ("linear", "nonlinear"):
        raise ValueError(f"link must be 'linear' or 'nonlinear', got {link!r}.")
    if link == "nonlinear" and int(warp_layers) < 1:
        raise ValueError("warp_layers must be >= 1.")
    rng = np.random.default_rng(seed)
    if isinstance(dims, Mapping):
        mods = [str(m) for m in dims]
        dim = {m: int(dims[m]) for m in mods}
    else:
        if isinstance(dims, (int, np.integer)):
            if modalities is None:
                raise ValueError("With an integer `dims`, give `modalities` (names) too.")
            dims = [int(dims)] * len(modalities)
        mods = [str(m) for m in modalities] if modalities is not None else _names(len(dims))
        if len(mods) != len(dims):
            raise ValueError(f"{len(mods)} modality names for {len(dims)} dims.")
        dim = {m: int(d) for m, d in zip(mods, dims)}
    if any(d < 1 for d in dim.values()):
        raise ValueError(f"Every modality needs at least one feature, got {dim}.")
    lat = lattice if lattice is not None else Lattice.full(mods)
    if list(lat.modalities) != mods:
        raise ValueError(f"Lattice modalities {list(lat.modalities)} differ from data modalities {mods}.")

    if isinstance(ranks, Mapping):
        r_of: dict[Node, int] = {node: 0 for node in lat.nodes}
        for raw, r in ranks.items():
            node = lat.node(raw)
            if node not in r_of:
                raise ValueError(f"Node {node} has a rank but is not in the lattice.")
            if int(r) < 0:
                raise ValueError(f"Rank of node {node} is negative.")
            r_of[node] = int(r)
    else:
        r_of = {node: int(ranks) for node in lat.nodes}

    if isinstance(noise, Mapping):
        nv = {m: float(noise[m]) for m in mods}
    elif np.ndim(noise) == 0:
        nv = {m: float(noise) for m in mods}  # type: ignore[arg-type]
    else:
        if len(noise) != len(mods):  # type: ignore[arg-type]
            raise ValueError(f"{len(noise)} noise variances for {len(mods)} modalities.")  # type: ignore[arg-type]
        nv = {m: float(v) for m, v in zip(mods, noise)}  # type: ignore[arg-type]
    if any(v < 0 for v in nv.values()):
        raise ValueError("Noise variances must be >= 0.")
    if not 0.0 <= missing < 1.0:
        raise ValueError("`missing` must be in [0, 1).")
    if missing > 0 and len(mods) < 2:
        raise ValueError("Missing modalities need at least two modalities.")

    loadings: dict[tuple[str, Node], np.ndarray] = {}
    Z: dict[Node, np.ndarray] = {}
    X = {m: rng.standard_normal((n, dim[m])) * np.sqrt(nv[m]) for m in mods}
    # linear: the mixture goes straight into X; nonlinear: it is collected in U and warped below.
    U = X if link == "linear" else {m: np.zeros((n, dim[m])) for m in mods}
    for node in lat.nodes:
        r = r_of[node]
        if r == 0:
            continue
        z = rng.standard_normal((n, r))
        Z[node] = z
        for m in node:
            B = rng.standard_normal((dim[m], r)) * (loading_scale / np.sqrt(dim[m]))
            loadings[(m, node)] = B
            U[m] += z @ B.T

    warp: dict[str, dict] = {}
    if link == "nonlinear":
        rot_rng = rng.spawn(1)[0]  # does not advance rng: the missing pattern matches link="linear"
        for m in mods:
            var_u = sum(float(np.sum(B**2)) for (mm, _), B in loadings.items() if mm == m) / dim[m]
            c = float(np.sqrt(var_u)) if var_u > 0 else 1.0
            Qs = [_rotation(rot_rng, dim[m]) for _ in range(int(warp_layers))]
            warp[m] = {"scale": c, "rotations": Qs}
            if var_u > 0:
                v = nonlinear_warp(U[m] / c)
                for Q in Qs[:-1]:
                    v = nonlinear_warp(v @ Q.T)
                X[m] += v @ Qs[-1].T

    if missing > 0:
        lacking = rng.random(n) < missing
        which = rng.integers(0, len(mods), size=n)
        for j, m in enumerate(mods):
            X[m][lacking & (which == j)] = np.nan

    data = MultimodalData.from_arrays(X, feature_names={m: [f"{m}_{k}" for k in range(dim[m])] for m in mods})
    truth = Truth(mods, lat, r_of, loadings, Z, nv, dim, link=link, warp=warp)
    return data, truth
