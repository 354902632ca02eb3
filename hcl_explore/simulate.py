"""Simulate data from the HCL generative model (DESIGN §1).

    x^(m) = sum_{S in L, m in S} B_S^(m) z_S + e^(m),   z_S ~ N(0, I_{r_S}),   e^(m) ~ N(0, sigma_m^2 I)
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .data import MultimodalData
from .lattice import Lattice, Node
from .linear import stack_loadings


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

    @property
    def nodes(self) -> list[Node]:
        """Nodes present in the truth (rank > 0), in lattice order."""
        return [n for n in self.lattice.nodes if self.ranks.get(n, 0) > 0]

    def W(self) -> np.ndarray:
        """Stacked loading matrix, shape (sum d_m, sum r_S), zero outside the node supports."""
        return stack_loadings(self.loadings, self.modalities, self.dims, self.nodes, self.ranks)

    def covariance(self) -> np.ndarray:
        """Population covariance W W^T + Psi, shape (D, D)."""
        W = self.W()
        psi = np.concatenate([np.full(self.dims[m], self.noise_var[m]) for m in self.modalities])
        return W @ W.T + np.diag(psi)


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
) -> tuple[MultimodalData, Truth]:
    """Draw a data set from the linear HCL model.

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

    Returns
    -------
    data : MultimodalData
    truth : Truth
    """
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
    for node in lat.nodes:
        r = r_of[node]
        if r == 0:
            continue
        z = rng.standard_normal((n, r))
        Z[node] = z
        for m in node:
            B = rng.standard_normal((dim[m], r)) * (loading_scale / np.sqrt(dim[m]))
            loadings[(m, node)] = B
            X[m] += z @ B.T

    if missing > 0:
        lacking = rng.random(n) < missing
        which = rng.integers(0, len(mods), size=n)
        for j, m in enumerate(mods):
            X[m][lacking & (which == j)] = np.nan

    data = MultimodalData.from_arrays(X, feature_names={m: [f"{m}_{k}" for k in range(dim[m])] for m in mods})
    truth = Truth(mods, lat, r_of, loadings, Z, nv, dim)
    return data, truth
