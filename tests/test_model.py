"""The HCL estimator end to end on simulated data, against the statistical floor (masked LS
started at the truth) and the true structure."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch

import hcl_explore as hx
from hcl_explore import metrics as mt
from hcl_explore.oracle import floor_loadings

M3_RANKS = {("a", "b", "c"): 3, ("a", "b"): 2, ("a", "c"): 4, ("b", "c"): 2, ("a",): 3, ("b",): 2, ("c",): 5}


@pytest.fixture(scope="module")
def m3():
    data, truth = hx.simulate(n=4000, dims=(50, 60, 70), ranks=M3_RANKS, noise=[0.15, 0.3, 0.45], seed=11)
    floor = floor_loadings(data, truth)
    return data, truth, floor


def _partial(M, missing, seed):
    mods = [chr(97 + i) for i in range(M)]
    ranks = {tuple(mods): 2, tuple(mods[:3]): 2, (mods[0], mods[1]): 3, (mods[2], mods[M - 1]): 2}
    ranks.update({(m,): 2 + (i % 2) for i, m in enumerate(mods)})
    return hx.simulate(n=3000, dims=[40] * M, ranks=ranks, noise=0.5, missing=missing,
                       lattice=hx.Lattice.full(mods), seed=seed)


def test_given_ranks_reach_the_floor(m3):
    data, truth, floor = m3
    model = hx.HCL(lattice=hx.Lattice.full(["a", "b", "c"]), ranks=M3_RANKS, device="cpu").fit(data)
    assert model.ranks_ == truth.ranks
    assert model.converged_ and model.n_iter_ > 1 and np.isfinite(model.objective_)
    fs, fg = mt.mean_sin_theta(truth.loadings, floor), mt.overall_gram_error(truth.loadings, floor)
    assert mt.mean_sin_theta(truth.loadings, model.loadings_) <= 1.15 * fs
    assert mt.overall_gram_error(truth.loadings, model.loadings_) <= 1.15 * fg
    # The fit ties each node across modalities (the reference code's failure): node Gram errors small.
    assert mt.node_gram_errors(truth.loadings, model.loadings_)["gram_error"].max() < 0.5


def test_auto_ranks_recover_structure_and_every_rank(m3):
    data, truth, floor = m3
    model = hx.HCL(ranks="auto").fit(data)
    assert mt.structure_scores(truth.ranks, model.ranks_)["f1"] == 1.0
    assert model.ranks_ == truth.ranks
    assert mt.mean_sin_theta(truth.loadings, model.loadings_) <= 1.15 * mt.mean_sin_theta(truth.loadings, floor)


@pytest.mark.parametrize("M, missing", [(4, 0.0), (5, 0.0), (4, 0.2)])
def test_partial_lattices_absent_candidates_get_rank_zero(M, missing):
    data, truth = _partial(M, missing, seed=20 + M)
    model = hx.HCL(lattice=hx.Lattice.full(data.modalities), ranks="auto").fit(data)
    absent = [n for n, r in truth.ranks.items() if r == 0]
    assert len(absent) > 0 and all(model.ranks_[n] == 0 for n in absent)
    assert model.ranks_ == truth.ranks
    assert mt.structure_scores(truth.ranks, model.ranks_)["f1"] == 1.0
    floor = floor_loadings(data, truth)
    assert mt.mean_sin_theta(truth.loadings, model.loadings_) <= 1.15 * mt.mean_sin_theta(truth.loadings, floor)


def test_fixed_and_auto_ranks_mix_and_zero_switches_a_node_off(m3):
    data, truth, _ = m3
    model = hx.HCL(ranks={"a+b": 2, ("c",): 0}).fit(data)
    assert model.ranks_[("a", "b")] == 2 and model.ranks_[("c",)] == 0
    assert model.ranks_[("a", "c")] == 4  # auto
    assert ("c",) not in model.nodes_


def test_transform_gls_scores_track_true_factors_and_handle_missing():
    data, truth = hx.simulate(n=3000, dims=(40, 40, 40), ranks={("a", "b", "c"): 2, ("a", "b"): 1, ("c",): 2},
                              noise=0.3, missing=0.2, loading_scale=2.0, seed=5)
    model = hx.HCL().fit(data)
    Z = model.transform(data)
    assert set(Z) == set(truth.nodes)
    for node in truth.nodes:
        assert Z[node].shape == (data.n_samples, truth.ranks[node])
        assert np.isfinite(Z[node]).all()
        # Samples that observe every modality of the node: scores explain the true factors.
        rows = data.observed[:, [data.modalities.index(m) for m in node]].all(axis=1)
        coef, *_ = np.linalg.lstsq(Z[node][rows], truth.Z[node][rows], rcond=None)
        r2 = 1 - ((truth.Z[node][rows] - Z[node][rows] @ coef) ** 2).sum() / (truth.Z[node][rows] ** 2).sum()
        assert r2 > 0.85, (node, r2)
    # A private node whose modality is missing gets its prior mean (0).
    no_c = ~data.observed[:, 2]
    assert no_c.any() and np.all(Z[("c",)][no_c] == 0)
    # The global factor of a sample lacking one modality is still estimated from the other two.
    full = data.observed.all(axis=1)
    drop = data.subset(np.flatnonzero(full)[:300])
    Xd = {m: drop.X[m].copy() for m in drop.modalities}
    Xd["a"][:] = np.nan
    Zd = model.transform(hx.MultimodalData.from_arrays(Xd))
    g = ("a", "b", "c")
    zt = truth.Z[g][np.flatnonzero(full)[:300]]
    coef, *_ = np.linalg.lstsq(Zd[g], zt, rcond=None)
    assert 1 - ((zt - Zd[g] @ coef) ** 2).sum() / (zt**2).sum() > 0.7


def test_scores_are_orthonormal_coordinates_of_each_node_and_errors_scale_with_them():
    data, truth = hx.simulate(n=4000, dims=(40, 40, 40), ranks={("a", "b", "c"): 3, ("a", "b"): 2, ("c",): 2},
                              noise=0.4, seed=7)
    model = hx.HCL().fit(data)
    W = np.asarray(model.W_)
    cols = [n for n in model.nodes_ for _ in range(model.ranks_[n])]
    norms = np.linalg.norm(W, axis=0)
    for node in model.nodes_:
        j = np.array([k for k, t in enumerate(cols) if t == node])
        G = W[:, j].T @ W[:, j]
        # The fit's basis inside a node is PCA-like: orthogonal loadings, by decreasing norm.
        np.testing.assert_allclose(G, np.diag(np.diag(G)), atol=1e-8 * G.max())
        assert np.all(np.diff(norms[j]) <= 1e-12)
    Zd, Zu = model.transform(data), model.transform(data, scale="unit")
    Eu, Ed = model.score_error_cov(data, scale="unit"), model.score_error_cov(data)
    t_true = {n: truth.Z[n] for n in truth.nodes}
    for node in model.nodes_:
        j = np.array([k for k, t in enumerate(cols) if t == node])
        # "data": unit factors times their loading norms, so a node's scores carry the variance its
        # part explains (the first score varies most), and W_S z_S = U_S t_S.
        np.testing.assert_allclose(Zd[node], Zu[node] * norms[j], rtol=1e-10, atol=1e-12)
        v = Zd[node].var(axis=0)
        assert v[0] >= v[-1]
        # Bartlett scores: z plus an independent error, variance 1 + the error variance.
        np.testing.assert_allclose(Zu[node].var(axis=0), 1 + np.diag(Eu)[j], rtol=0.12)
        # Unit scores are unbiased for z up to a rotation of the node: Zu = z Q + error.
        coef, *_ = np.linalg.lstsq(t_true[node], Zu[node], rcond=None)
        assert np.allclose(coef @ coef.T, np.eye(len(coef)), atol=0.1), node
    # The rotation leaves the model itself unchanged: a rotated copy scores the same likelihood.
    m2 = copy.deepcopy(model)
    Q = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    g = [k for k, t in enumerate(cols) if t == ("a", "b", "c")]
    m2.W_ = W.copy()
    m2.W_[:, g] = W[:, g] @ Q
    assert model.score(data) == pytest.approx(m2.score(data), rel=1e-10)
    # Error covariances follow the scale: errors of the "data" scores are the unit ones, scaled.
    np.testing.assert_allclose(Ed, Eu * np.outer(norms, norms), rtol=1e-12)
    with pytest.raises(ValueError, match="scale must be"):
        model.transform(data, scale="pca")


def test_summary_table(m3):
    data, truth, _ = m3
    model = hx.HCL().fit(data)
    s = model.summary()
    assert list(s["node"]) == [hx.node_label(n) for n in model.lattice_.nodes]
    assert set(s["level"]) == {"global", "partial", "private"}
    assert s.set_index("node").loc["a+b+c", "rank"] == 3
    for m in data.modalities:
        shares = s[f"signal_{m}"].dropna()
        assert shares.sum() == pytest.approx(1.0)
        v = s[f"var_{m}"].dropna()
        assert (v >= 0).all() and 0.3 < v.sum() < 1.0  # signal share of total variance
    assert s.set_index("node")["var_c"].isna().loc["a+b"]


def test_save_load_round_trip_without_pickle(tmp_path, m3):
    data, _, _ = m3
    model = hx.HCL(ranks="auto").fit(data)
    path = tmp_path / "model.npz"
    model.save(path)
    back = hx.HCL.load(path)
    assert back.ranks_ == model.ranks_ and back.noise_var_ == model.noise_var_
    for k, v in model.loadings_.items():
        np.testing.assert_array_equal(back.loadings_[k], v)
    sub = data.subset(np.arange(50))
    for node, z in model.transform(sub).items():
        np.testing.assert_allclose(back.transform(sub)[node], z)
    pd.testing.assert_frame_equal(back.summary(), model.summary())
    # Object arrays (pickles) are refused; junk files give a clear error.
    bad = tmp_path / "bad.npz"
    np.savez(bad, meta=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="bad.npz: not a valid model file .*object arrays are not accepted"):
        hx.HCL.load(bad)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz: not a valid model file"):
        hx.HCL.load(junk)


def test_standardized_fit_reports_loadings_in_original_units():
    data, truth = hx.simulate(n=3000, dims=(30, 30), ranks={("a", "b"): 2, ("a",): 1, ("b",): 1}, noise=0.3, seed=8)
    scale = np.linspace(1, 50, 30)
    scaled = hx.MultimodalData.from_arrays({"a": data.X["a"] * scale, "b": data.X["b"]})
    model = hx.HCL(standardize=True).fit(scaled)
    assert model.ranks_[("a", "b")] == 2
    true_scaled = {k: (v * scale[:, None] if k[0] == "a" else v) for k, v in truth.loadings.items()}
    assert mt.subspace_distance(true_scaled[("a", ("a", "b"))], model.loadings_[("a", ("a", "b"))]) < 0.3


def test_parquet_streaming_fit_matches_in_memory(tmp_path):
    data, truth = hx.simulate(n=3000, dims=(20, 25), ranks={("a", "b"): 2, ("a",): 1, ("b",): 2}, noise=0.3, seed=6)
    cols = {m: [f"{m}{k}" for k in range(data.dims[m])] for m in data.modalities}
    df = pd.DataFrame(np.hstack([data.X[m] for m in data.modalities]), columns=cols["a"] + cols["b"])
    df.to_parquet(tmp_path / "x.parquet")
    src = hx.ParquetSource(str(tmp_path / "x.parquet"), cols, batch_size=700)
    a = hx.HCL().fit(src)
    b = hx.HCL().fit(data)
    assert a.ranks_ == b.ranks_ == truth.ranks
    for k in b.loadings_:
        assert mt.subspace_distance(a.loadings_[k], b.loadings_[k]) < 1e-3


def test_bad_configuration_errors(m3):
    data, _, _ = m3
    with pytest.raises(ValueError, match="do not match"):
        hx.HCL(lattice=hx.Lattice.full(["x", "y"])).fit(data)
    with pytest.raises(ValueError, match="not in the candidate lattice"):
        hx.HCL(lattice="shared_private", ranks={("a", "b"): 1}).fit(data)
    with pytest.raises(ValueError, match="Unknown estimator"):
        hx.HCL(estimator="quantum").fit(data)
    with pytest.raises(RuntimeError, match="not fitted"):
        hx.HCL().transform(data)


def test_progress_callback_sees_every_stage():
    data, _ = hx.simulate(n=500, dims=(10, 10), ranks=1, seed=0)
    stages = []
    hx.HCL().fit(data, callback=lambda stage, info: stages.append(stage))
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == ["covariance", "noise", "ranks", "refine", "done"]
    # Each "ranks" event says how many candidates the pair screen left: the progress total.
    data4, _ = hx.simulate(n=2000, dims=(10, 10, 10, 10), ranks={("a", "b"): 2, ("c",): 1}, seed=1)
    events = []
    model = hx.HCL(lattice=hx.Lattice.full(data4.modalities)).fit(data4, callback=lambda s, i: events.append((s, i)))
    ranks = [i for s, i in events if s == "ranks"]
    tested = model.rank_diagnostics_["search"]["candidates"]["tested"]
    assert ranks and all(i["of"] == tested for i in ranks) and len(ranks) == tested < 15


def test_device_resolution():
    assert hx.resolve_device("cpu").type == "cpu"
    assert hx.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            hx.resolve_device("cuda")


@pytest.mark.gpu
def test_cuda_fit_matches_cpu(m3):
    data, _, _ = m3
    cpu = hx.HCL(device="cpu").fit(data)
    gpu = hx.HCL(device="cuda").fit(data)
    assert gpu.device_.startswith("cuda") and gpu.ranks_ == cpu.ranks_
    for k in cpu.loadings_:
        assert mt.subspace_distance(cpu.loadings_[k], gpu.loadings_[k]) < 1e-2
