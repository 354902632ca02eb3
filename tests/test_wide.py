"""Rank selection with wide modalities (d_m comparable to or above n_m): PCA-then-CCA peeling."""

import numpy as np
import pytest

import hcl_explore as hx
from hcl_explore import linear as L

OMICS_LIKE = {("a", "b", "c"): 2, ("a", "b"): 1, ("a",): 2, ("b",): 1, ("c",): 1}


def _found(model):
    return {n: r for n, r in model.ranks_.items() if r > 0}


def _true(truth):
    return {n: r for n, r in truth.ranks.items() if r > 0}


@pytest.mark.parametrize("seed", [0, 1])
def test_wide_modality_structure_is_recovered(seed):
    # a has more features than samples, b is at 2/3 of n: sample CCA of the full blocks gives
    # canonical correlations of 1 (the pre-fix peeler found a+b with rank 100, F1 = 0.89, ~8 s).
    data, truth = hx.simulate(n=150, dims={"a": 400, "b": 100, "c": 30}, ranks=OMICS_LIKE, noise=0.1, seed=seed)
    model = hx.HCL(device="cpu").fit(data)
    assert hx.metrics.structure_scores(truth.ranks, model.ranks_)["f1"] == 1.0
    assert _found(model) == _true(truth)
    assert model.converged_
    # Every structure test ran on a few principal components per modality, not on 400 and 100
    # features: a carries 5 factors (2 global + 1 pair + 2 private), b 4.
    reduced = model.rank_diagnostics_["search"]["reduced_dims"]
    assert 5 <= reduced["a"] < 20 and 4 <= reduced["b"] < 20


def test_wide_modalities_with_missing_rows():
    data, truth = hx.simulate(n=200, dims={"a": 400, "b": 100, "c": 30}, ranks=OMICS_LIKE, noise=0.1,
                              missing=0.3, seed=0)
    model = hx.HCL(device="cpu").fit(data)
    assert _found(model) == _true(truth)


def test_wide_null_finds_no_shared_node():
    # Independent modalities (private factors only) and pure noise: no shared node may appear.
    data, _ = hx.simulate(n=150, dims={"a": 400, "b": 100, "c": 30}, ranks={("a",): 2, ("b",): 2, ("c",): 1},
                          noise=0.1, seed=3)
    model = hx.HCL(device="cpu").fit(data)
    assert _found(model) == {("a",): 2, ("b",): 2, ("c",): 1}
    data, _ = hx.simulate(n=150, dims={"a": 400, "b": 100, "c": 30}, ranks={}, noise=0.5, seed=0)
    assert _found(hx.HCL(device="cpu").fit(data)) == {}


def test_omics_example_recovered():
    # Timing (about 2 s on 2 cores; over 5 minutes before the wide path) is a benchmark's job, not
    # a test's: a wall-clock bound fails on a loaded machine.
    ds = hx.load_dataset("omics")
    model = hx.HCL().fit(ds.data)
    truth = hx.io.truth_ranks(ds.truth)
    assert _found(model) == truth
    assert hx.metrics.structure_scores(truth, model.ranks_)["f1"] == 1.0


def test_narrow_data_never_take_the_wide_path(monkeypatch):
    # Below WIDE_RATIO the estimator is the n >> d one, untouched: switching the wide path off
    # entirely changes nothing, bit for bit.
    assert not L.is_wide(90, 1000) and L.is_wide(101, 1000) and L.is_wide(400, 150)
    data, _ = hx.simulate(n=1000, dims=(90, 20, 5), ranks=1, noise=1.0, seed=4)
    a = hx.HCL(device="cpu").fit(data)
    monkeypatch.setattr(L, "WIDE_RATIO", float("inf"))
    b = hx.HCL(device="cpu").fit(data)
    assert a.ranks_ == b.ranks_
    for d in (a.rank_diagnostics_, b.rank_diagnostics_):
        d["search"].pop("seconds")  # wall-clock, the only thing allowed to differ
    assert a.rank_diagnostics_ == b.rank_diagnostics_
    np.testing.assert_array_equal(a.W_, b.W_)


def test_cov_eigh_of_rank_deficient_covariance_matches_lapack():
    rng = np.random.default_rng(0)
    n, d = 60, 300
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, d)
    S = np.cov(X.T, bias=True)
    lam, V = L.cov_eigh(S, n)
    ref = np.linalg.eigvalsh(S)[::-1]
    np.testing.assert_allclose(lam[: n - 1], ref[: n - 1], rtol=1e-8)
    np.testing.assert_allclose(np.sum(V * (S @ V), axis=0)[: n - 1], ref[: n - 1], rtol=1e-8)
    np.testing.assert_allclose(V.T @ V, np.eye(V.shape[1]), atol=1e-10)
    # Not of rank <= n: falls back to the full decomposition.
    S_full = np.cov(rng.normal(size=(1000, d)).T)
    np.testing.assert_allclose(L.cov_eigh(S_full, n)[0], np.linalg.eigvalsh(S_full)[::-1], rtol=1e-8)


def test_noise_estimate_with_more_features_than_samples():
    rng = np.random.default_rng(1)
    n, d, sigma2 = 200, 1500, 0.5
    B = rng.normal(size=(d, 3)) * 0.3
    X = rng.normal(size=(n, 3)) @ B.T + rng.normal(size=(n, d)) * np.sqrt(sigma2)
    est, k = L.estimate_noise(np.cov(X.T, bias=True), n)
    assert est == pytest.approx(sigma2, rel=0.05)
    assert k == 3


def test_cca_largest_root_quantile_against_monte_carlo():
    rng = np.random.default_rng(2)
    n, p, q = 300, 3, 4
    roots = []
    for _ in range(1500):
        Qx = np.linalg.qr(rng.normal(size=(n, p)))[0]
        Qy = np.linalg.qr(rng.normal(size=(n, q)))[0]
        roots.append(np.linalg.svd(Qx.T @ Qy, compute_uv=False)[0] ** 2)
    mc99 = np.quantile(roots, 0.99)
    tw99 = L.cca_largest_root_quantile(p, q, n, 0.99)
    # Johnstone's approximation is accurate to conservative for few variables.
    assert mc99 * 0.95 <= tw99 <= mc99 * 1.35
    # Wachter's edge (the n >> d threshold) is far below that quantile for a handful of variables.
    assert L.wachter_edge(p / n, q / n) * 1.25 < tw99
    assert L.cca_largest_root_quantile(0, 3, 100) == 0.0
    assert L.cca_largest_root_quantile(60, 60, 100) == 1.0
    assert L.chi2_quantile(10) == pytest.approx(29.588, rel=0.01)


def test_sample_space_path_matches_the_feature_space_path(monkeypatch):
    # More features than samples in all: the fit never forms the D x D covariance (at D = 15,000
    # and n = 2,000 that pass alone took 6 minutes) and finds the same structure and likelihood.
    from hcl_explore.estimators import linear as EL

    data, truth = hx.simulate(n=260, dims={"a": 400, "b": 300, "c": 60}, ranks=OMICS_LIKE, noise=0.3,
                              missing=0.1, seed=3)
    wide = hx.HCL(device="cpu").fit(data)
    assert wide.rank_diagnostics_["search"].get("sample_space") is True
    monkeypatch.setattr(EL, "SAMPLE_SPACE_RATIO", 1e9)
    full = hx.HCL(device="cpu").fit(data)
    assert "sample_space" not in full.rank_diagnostics_["search"]
    assert _found(wide) == _found(full) == _true(truth)
    # psi is refitted per feature with each path's loadings (refined in reduced vs full
    # coordinates), so single features differ a little more than the blocks do.
    ratio = wide.psi_ / full.psi_
    assert abs(np.median(ratio) - 1) < 0.01 and np.quantile(np.abs(ratio - 1), 0.95) < 0.05
    np.testing.assert_allclose(wide.psi_, full.psi_, rtol=0.12)
    assert abs(wide.score(data) - full.score(data)) < 0.005 * abs(full.score(data))
    Zw, Zf = wide.transform(data), full.transform(data)
    for node in wide.nodes_:
        # the same subspace per node: canonical correlations of the two score blocks near 1
        Qa, Qb = np.linalg.qr(Zw[node])[0], np.linalg.qr(Zf[node])[0]
        assert np.linalg.svd(Qa.T @ Qb, compute_uv=False).min() > 0.95, node
