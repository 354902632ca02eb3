"""Rank search for nonlinear modalities (:mod:`hcl_explore.harmonics`): the linear search counts
the harmonics of nonlinear factors; pruning them gives the true ranks, and leaves linear data alone."""

import numpy as np
import pytest

import hcl_explore as hx
from hcl_explore.harmonics import prune_harmonics


def _labels(ranks):
    return {hx.node_label(n): r for n, r in ranks.items() if r}


@pytest.mark.parametrize("kw", [
    dict(dims=(30, 30, 30), ranks=2, seed=24),
    dict(dims=(40, 30, 30, 20), ranks={("a", "b", "c", "d"): 2, ("a", "b"): 1, ("c", "d"): 2, ("b",): 2}, seed=7),
])
def test_nonlinear_harmonics_are_dropped(kw):
    """Measured: the linear search finds 4-7 per node (first case) where the truth has 2."""
    data, truth = hx.simulate(n=5000, noise=0.3, link="nonlinear", **kw)
    lin = hx.HCL().fit(data)
    assert sum(lin.ranks_.values()) > sum(truth.ranks.values()) + 5  # the linear search over-counts
    ranks, diag = prune_harmonics(lin, data.X, data.observed)
    assert _labels(ranks) == _labels(truth.ranks)
    node = hx.node_label(truth.nodes[-1])
    assert diag[node]["linear_rank"] == lin.ranks_[truth.nodes[-1]] and diag[node]["rank"] == ranks[truth.nodes[-1]]
    steps = next(iter(diag[node]["pairs"].values())) if "pairs" in diag[node] else diag[node]["halves"]
    assert [s["kept"] for s in steps][: ranks[truth.nodes[-1]]] == [True] * ranks[truth.nodes[-1]]
    assert all(s["left"] > 0.8 for s in steps if s["kept"])


@pytest.mark.parametrize("kw", [
    dict(n=3000, dims=(30, 20, 25), ranks={("a", "b", "c"): 3, ("a", "b"): 2, ("a",): 3, ("c",): 1}, seed=5, missing=0.3),
    dict(n=1000, dims=(15, 15, 15), ranks=1, seed=2),
])
def test_linear_data_keeps_the_linear_ranks(kw):
    data, truth = hx.simulate(noise=0.3, **kw)
    lin = hx.HCL().fit(data)
    assert lin.ranks_ == truth.ranks
    ranks, _ = prune_harmonics(lin, data.X, data.observed)
    assert ranks == truth.ranks


def test_bundled_samples_keep_their_structure():
    for name in ("clinical", "omics"):
        ds = hx.load_dataset(name)
        lin = hx.HCL().fit(ds.data)
        ranks, _ = prune_harmonics(lin, ds.data.X, ds.data.observed)
        assert _labels(ranks) == _labels(hx.truth_ranks(ds.truth)), name


def test_contrastive_auto_ranks_use_the_pruned_search():
    data, truth = hx.simulate(n=3000, dims=(20, 20, 20), ranks={("a", "b", "c"): 2, ("a", "b"): 1, ("c",): 2},
                              noise=0.3, seed=3, link="nonlinear")
    fast = dict(estimator="contrastive", hidden=(16,), max_epochs=1, device="cpu")
    model = hx.HCL(**fast).fit(data)
    assert model.ranks_ == truth.ranks
    assert "harmonics" in model.rank_diagnostics_
    plain = hx.HCL(rank_search="linear", **fast).fit(data)
    assert sum(plain.ranks_.values()) > sum(truth.ranks.values())
    # a rank given for one node is kept as given; the others are searched
    mixed = hx.HCL(ranks={("a", "b"): 3}, **fast).fit(data)
    assert mixed.ranks_[("a", "b")] == 3 and mixed.ranks_[("a", "b", "c")] == 2
    with pytest.raises(ValueError, match="rank_search"):
        hx.HCL(rank_search="pca", **fast).fit(data)


def test_polynomial_columns_and_fast_least_squares_match_the_direct_formulas():
    from itertools import combinations_with_replacement

    from hcl_explore import harmonics as H

    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(2000, 3)), rng.normal(size=(2000, 2))]
    B = H._std(np.concatenate(parts, 1))
    direct = [B] + [np.prod(B[:, np.array(list(combinations_with_replacement(range(5), d)))], axis=2) for d in (2, 3)]
    np.testing.assert_allclose(H._poly(parts), np.concatenate(direct, 1), atol=1e-12)
    assert H._poly(parts).shape[1] == 5 + 15 + 35
    assert H._poly([parts[0][:150]]).shape[1] == 3 + 6  # n / 10 = 15 columns at most: degree 2
    S = rng.normal(size=(2000, 2)) + np.c_[B[:, 0] ** 2, B[:, 1] * B[:, 2]]
    Q = H._poly(parts)
    A = np.c_[np.ones(2000), Q]
    expect = S - S.mean(0) - A @ np.linalg.lstsq(A, S - S.mean(0), rcond=None)[0]
    np.testing.assert_allclose(H._residual(S, Q), expect, atol=1e-7)


def test_cca_ignores_directions_the_residualization_removed():
    """A direction removed from both views (variance ~1e-16 of the rest) has whitened rounding
    errors; they must not come back as a canonical pair."""
    from hcl_explore import harmonics as H

    rng = np.random.default_rng(1)
    z = rng.normal(size=(5000, 1))
    U = np.c_[z + 0.5 * rng.normal(size=(5000, 1)), 1e-9 * rng.normal(size=(5000, 1))]
    V = np.c_[z + 0.5 * rng.normal(size=(5000, 1)), U[:, 1:] + 1e-12 * rng.normal(size=(5000, 1))]
    A, B, rho = H._cca(U, V)
    assert rho.size == 1 and 0.7 < rho[0] < 0.9  # the shared z, not the removed pair (rho ~ 1)
    assert A.shape == (2, 1)
