"""A third estimator written the way docs/architecture.md says: one module, one registered class.

PCA per node (fixed ranks only): node S's loadings are the top r_S principal directions of its
modalities' standardized features side by side, after the larger nodes' parts are projected out.
The tests register it with HCL_EXPLORE_ESTIMATORS=toy_estimator (tests/ is on the path)."""

from __future__ import annotations

import numpy as np

from hcl_explore import layout as Y
from hcl_explore.estimators import Estimator, register
from hcl_explore.estimators.base import finish_fit, in_memory


@register
class PCAPerNode(Estimator):
    name = "pca_node"
    options = {"whiten_noise": False}

    def fit(self, model, data, callback, y=None) -> None:
        mods = list(data.modalities)
        lat = model._resolve_lattice(mods)
        ranks = {nd: int(r or 0) for nd, r in model._resolve_ranks(lat).items()}
        X, obs = in_memory(data, model.chunk_size)
        dims = {m: X[m].shape[1] for m in mods}
        rows = obs.all(axis=1)
        mean = np.concatenate([np.nanmean(X[m][obs[:, j]], axis=0) for j, m in enumerate(mods)])
        sd = np.concatenate([np.nanstd(X[m][obs[:, j]], axis=0) for j, m in enumerate(mods)])
        scale = np.where(sd > 1e-12, sd, 1.0)
        sl = Y.block_slices(mods, dims)
        Z = np.concatenate([(X[m][rows] - mean[sl[m]]) / scale[sl[m]] for m in mods], axis=1)
        nodes = sorted((nd for nd in lat.nodes if ranks[nd] > 0), key=len, reverse=True)
        blocks = {}
        for nd in nodes:
            cols = np.concatenate([np.arange(sl[m].start, sl[m].stop) for m in nd])
            _, s, Vt = np.linalg.svd(Z[:, cols], full_matrices=False)
            r = ranks[nd]
            B = Vt[:r].T * (s[:r] / np.sqrt(len(Z)))
            Z[:, cols] -= (Z[:, cols] @ Vt[:r].T) @ Vt[:r]
            off = 0
            for m in nd:
                blocks[(m, nd)] = B[off:off + dims[m]]
                off += dims[m]
            if callback is not None:
                callback("ranks", {"node": nd, "rank": r})
        nodes = [nd for nd in lat.nodes if ranks[nd] > 0]
        W = Y.stack_loadings(blocks, mods, dims, nodes, ranks)
        resid = Z.var(axis=0)
        finish_fit(model, data, modalities_=mods, lattice_=lat, dims_=dims, mean_=mean, scale_=scale,
                   ranks_=ranks, nodes_=nodes, W_=W, psi_=np.maximum(resid, 1e-3),
                   noise_var_={m: float(np.mean(np.maximum(resid[sl[m]], 1e-3))) for m in mods})

    def dump(self, model):
        return {}, {"psi": model.psi_}

    def restore(self, model, meta, arrays) -> None:
        model.psi_ = arrays["psi"]
