"""The statistical floor of the masked least-squares objective: the same objective, started at the
true loadings and run to convergence (used to judge estimators on simulated data)."""

from __future__ import annotations

import numpy as np

from . import layout as Y
from . import linear as L
from .lattice import Node


def floor_loadings(data, truth, noise: str = "true", device: str = "cpu") -> dict[tuple[str, Node], np.ndarray]:
    """Loadings at the masked-LS optimum nearest the truth.

    Parameters
    ----------
    data : MultimodalData (or any chunk source)
    truth : Truth from :func:`hcl_explore.simulate`
    noise : ``"true"`` subtracts the true noise variances from the diagonal blocks; ``"estimated"``
        uses the bulk-spectrum estimate, as the estimator does.

    Returns
    -------
    dict (modality, node) -> ndarray (d_m, r_S)
    """
    stats = L.covariance_stats(data, device=device)
    mods, dims, sl = stats.modalities, stats.dims, stats.offsets
    if noise == "true":
        nv = dict(truth.noise_var)
    elif noise == "estimated":
        nv = {m: L.estimate_noise(stats.cov[sl[m], sl[m]], int(stats.counts[j, j]))[0] for j, m in enumerate(mods)}
    else:
        raise ValueError("noise must be 'true' or 'estimated'.")
    target = stats.cov.copy()
    for m in mods:
        target[sl[m], sl[m]] -= nv[m] * np.eye(dims[m])
    nodes = truth.nodes
    W0 = truth.W()
    mask = Y.support_mask(mods, dims, nodes, truth.ranks)
    res = L.masked_factorization(target, W0, mask, device=device)
    return Y.split_loadings(res.W, mods, dims, nodes, truth.ranks)
