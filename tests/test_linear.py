"""The estimator's building blocks, each against an independent computation."""

import numpy as np
import pytest
import torch

import hcl_explore as hx
from hcl_explore import linear as L


def _stacked(data):
    return np.hstack([data.X[m] for m in data.modalities])


def test_streamed_covariance_equals_direct_computation_for_complete_data():
    data, _ = hx.simulate(n=1500, dims=(6, 4, 5), ranks=1, noise=0.5, seed=0)
    # A large offset checks the shifted accumulation does not cancel catastrophically.
    data = hx.MultimodalData.from_arrays({m: data.X[m] + 1000.0 for m in data.modalities})
    X = _stacked(data)
    direct = np.cov(X.T, bias=True)
    for chunk in (97, 1500):
        st = L.covariance_stats(data, chunk_size=chunk)
        np.testing.assert_allclose(st.cov, direct, atol=2e-3 * np.abs(direct).max())
        np.testing.assert_allclose(st.mean, X.mean(axis=0), rtol=1e-6)
    assert st.counts.tolist() == [[1500] * 3] * 3


def test_covariance_is_pairwise_complete_with_missing_modalities():
    data, _ = hx.simulate(n=1200, dims=(3, 4, 2), ranks=1, noise=0.5, missing=0.3, seed=1)
    st = L.covariance_stats(data, chunk_size=100)
    sl = st.offsets
    obs = data.observed
    for a, ma in enumerate(data.modalities):
        for b, mb in enumerate(data.modalities):
            both = obs[:, a] & obs[:, b]
            assert st.counts[a, b] == both.sum()
            xa, xb = data.X[ma][both], data.X[mb][both]
            ref = (xa - xa.mean(0)).T @ (xb - xb.mean(0)) / both.sum()
            np.testing.assert_allclose(st.cov[sl[ma], sl[mb]], ref, atol=1e-4)


def test_missing_cell_in_observed_row_is_reported_with_row_and_column():
    class Src:
        modalities = ["a"]
        feature_names = {"a": ["x", "y"]}

        def iter_chunks(self, size):
            X = np.ones((5, 2), dtype=np.float32)
            X[3, 1] = np.nan
            yield L_chunk({"a": X}, np.ones((5, 1), dtype=bool))

    from hcl_explore.data import Chunk as L_chunk

    with pytest.raises(ValueError, match="row 3, column 1"):
        L.covariance_stats(Src())
    # With the two row folds, the row named is still the row of the source (not of a fold).
    with pytest.raises(ValueError, match="row 3, column 1"):
        L.covariance_stats(Src(), folds=True)


def test_row_folds_are_the_even_and_the_odd_rows_across_chunks():
    data, _ = hx.simulate(n=1001, dims=(3, 4, 2), ranks=1, noise=0.5, missing=0.2, seed=2)
    data = hx.MultimodalData.from_arrays({m: data.X[m].astype(np.float32) for m in data.modalities})
    st = L.covariance_stats(data, chunk_size=97, folds=True)  # odd chunks: folds alternate their start
    for f in range(2):
        rows = np.arange(data.n_samples) % 2 == f
        sub = hx.MultimodalData.from_arrays({m: data.X[m][rows] for m in data.modalities})
        ref = L.covariance_stats(sub, chunk_size=1001)
        np.testing.assert_array_equal(st.folds[f].counts, ref.counts)
        np.testing.assert_allclose(st.folds[f].cov, ref.cov, atol=1e-4)


def test_random_matrix_helpers():
    # Reference medians from adaptive quadrature of the MP density.
    assert L.mp_median(1.0) == pytest.approx(0.652776, abs=1e-3)
    assert L.mp_median(0.5) == pytest.approx(0.830466, abs=1e-4)
    assert L.mp_median(0.1) == pytest.approx(0.966565, abs=1e-4)
    assert L.mp_median(1e-6) == pytest.approx(1.0, abs=1e-2)
    assert L.mp_edge(0.25) == pytest.approx(2.25)
    assert L.wachter_edge(0.1, 0.1) == pytest.approx((2 * np.sqrt(0.1 * 0.9)) ** 2)
    # debias_spike inverts lam = (1 + l)(1 + g / l)
    l, g = 2.0, 0.1
    assert L.debias_spike(np.array([(1 + l) * (1 + g / l)]), g)[0] == pytest.approx(l)


def test_private_edge_keeps_a_spike_at_twice_the_limit_countable_at_any_n():
    # The edge of a private count: Tracy-Widom quantile times 1 + slack for the estimated noise
    # level. A fixed 1 % slack exceeded the whole gap between a 2x spike and the bulk edge at
    # n = 10^6 (a private factor at 2.1x the limit was missed there); the slack now shrinks with n.
    for n, d in [(3000, 50), (50_000, 300), (1_000_000, 60)]:
        gamma = d / n
        ell = 2 * np.sqrt(gamma)  # a spike at twice the detection limit
        expected = (1 + ell) * (1 + gamma / ell)  # its sample eigenvalue
        edge = L.mp_tw_edge(d, n)
        assert L.mp_edge(gamma) < edge < expected, (n, d)
    assert L.mp_tw_edge(60, 10_000) == pytest.approx(L.mp_tw_edge(60, 10_000, slack=0.0) * 1.01)
    assert L.mp_tw_edge(60, 10**6) < L.mp_tw_edge(60, 10**6, slack=0.0) * 1.0015


def test_noise_estimate_from_bulk_spectrum():
    rng = np.random.default_rng(2)
    n, d, sigma2 = 4000, 120, 0.7
    B = rng.normal(size=(d, 4)) * 0.4
    X = rng.normal(size=(n, 4)) @ B.T + rng.normal(size=(n, d)) * np.sqrt(sigma2)
    est, k = L.estimate_noise(np.cov(X.T), n)
    assert est == pytest.approx(sigma2, rel=0.03)
    assert k == 4


def test_top_eigs_matches_lapack():
    rng = np.random.default_rng(3)
    U = np.linalg.qr(rng.normal(size=(400, 5)))[0]
    A = U @ np.diag([9.0, 7, 5, 3, 2]) @ U.T + 0.01 * np.cov(rng.normal(size=(800, 400)).T)
    lam, V = L.top_eigs(A, 5)
    ref = np.linalg.eigvalsh(A)[::-1][:5]
    np.testing.assert_allclose(lam, ref, rtol=1e-6)
    np.testing.assert_allclose(np.abs(np.sum(V * (A @ V), axis=0)), ref, rtol=1e-6)


def test_masked_factorization_converges_and_respects_the_mask():
    rng = np.random.default_rng(4)
    dims, mods = {"a": 10, "b": 8}, ["a", "b"]
    nodes, ranks = [("a",), ("a", "b")], {("a",): 2, ("a", "b"): 2}
    mask = L.support_mask(mods, dims, nodes, ranks)
    assert mask.shape == (18, 4) and not mask[10:, :2].any() and mask[:, 2:].all()
    Wt = rng.normal(size=(18, 4)) * mask
    target = Wt @ Wt.T
    res = L.masked_factorization(target, Wt + 0.3 * rng.normal(size=Wt.shape), mask, tol=1e-12)
    assert res.converged and res.n_iter > 1
    assert np.all(res.W[~mask] == 0)
    assert res.objective < 1e-8 * 0.5 * np.sum(target**2)
    assert res.history[-1] <= res.history[0]
    np.testing.assert_allclose(res.W @ res.W.T, target, atol=1e-4)


def test_torch_refinement_path_agrees_with_numpy_path():
    # The torch L-BFGS is the path used on CUDA; run it on the CPU against the numpy path.
    rng = np.random.default_rng(5)
    dims, mods = {"a": 12, "b": 9, "c": 7}, ["a", "b", "c"]
    nodes = [("a",), ("b", "c"), ("a", "b", "c")]
    ranks = {n: 2 for n in nodes}
    mask = L.support_mask(mods, dims, nodes, ranks)
    Wt = rng.normal(size=mask.shape) * mask
    noise = 0.05 * np.cov(rng.normal(size=(400, 28)).T)
    target = Wt @ Wt.T + noise
    W0 = Wt + 0.2 * rng.normal(size=Wt.shape)
    a = L.masked_factorization(target, W0, mask, device="cpu", tol=1e-12)
    b = L._masked_factorization_torch(target, W0, mask, torch.device("cpu"), 1e-12, 5000, None)
    assert a.converged and b.converged
    assert a.objective == pytest.approx(b.objective, rel=1e-6)
    np.testing.assert_allclose(a.W @ a.W.T, b.W @ b.W.T, atol=1e-5)
