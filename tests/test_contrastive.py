"""The contrastive estimator (``HCL(estimator="contrastive")``) and the nonlinear simulator.

Tiny sizes, CPU, seeded. The recovery test pins what the method is for: on nonlinear data a linear
probe finds each true node's factors in that node's learned block, not in the other blocks.
"""

import json
import os

import numpy as np
import pytest
import torch

import hcl_explore as hx
from hcl_explore import contrastive as C
from hcl_explore.simulate import nonlinear_warp

RANKS = {("a",): 1, ("b",): 1, ("c",): 2, ("a", "b"): 1, ("a", "c"): 2, ("b", "c"): 1, ("a", "b", "c"): 2}
FAST = dict(estimator="contrastive", hidden=(32,), max_epochs=3, batch_size=128, lr=3e-3, device="cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: threads only add contention
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def small():
    return hx.simulate(n=600, dims=(12, 10, 8), ranks=RANKS, noise=0.2, seed=1, link="nonlinear")


def probe_r2(Z: dict, truth, rows: np.ndarray) -> np.ndarray:
    """R2[i, k]: held-out R^2 of a linear probe from learned block i to true node k's factors."""
    return hx.metrics.probe_r2(Z, truth.Z, rows).drop(columns="others").to_numpy()


# ---------------------------------------------------------------------------------------------- simulator
def test_nonlinear_simulator_is_the_documented_invertible_map():
    kw = dict(n=800, dims=(9, 7, 5), ranks={("a", "b", "c"): 2, ("a", "b"): 1, ("c",): 1}, noise=0.1, missing=0.2, seed=4)
    lin, tl = hx.simulate(**kw)
    lin2, _ = hx.simulate(**kw, link="linear")
    for m in lin.modalities:  # the default is linear and unchanged
        np.testing.assert_array_equal(np.nan_to_num(lin.X[m]), np.nan_to_num(lin2.X[m]))
    nl, tn = hx.simulate(**kw, link="nonlinear")
    assert tn.link == "nonlinear" and tl.link == "linear" and tl.warp == {}
    np.testing.assert_array_equal(nl.observed, lin.observed)  # same missing pattern, same Z
    for node in tl.nodes:
        np.testing.assert_array_equal(tl.Z[node], tn.Z[node])
    for m in nl.modalities:
        u = sum(tn.Z[n] @ tn.loadings[(m, n)].T for n in tn.nodes if m in n)
        w = tn.warp[m]
        v = nonlinear_warp(u / w["scale"])
        for Q in w["rotations"][:-1]:
            v = nonlinear_warp(v @ Q.T)
        resid = nl.X[m] - v @ w["rotations"][-1].T
        o = nl.observed[:, nl.modalities.index(m)]
        assert abs(resid[o].var() - 0.1) < 0.01  # what is left is exactly the noise
        assert len(w["rotations"]) == 2
    t = np.linspace(-4, 4, 1001)
    assert np.all(np.diff(nonlinear_warp(t)) > 0)  # strictly increasing: invertible
    # far from linear: the slope differs by an order of magnitude between the two sides
    assert np.gradient(nonlinear_warp(t), t)[-1] > 8 * np.gradient(nonlinear_warp(t), t)[0]
    with pytest.raises(ValueError, match="link"):
        hx.simulate(n=10, link="quadratic")


# ---------------------------------------------------------------------------------------------- recovery
def test_node_blocks_recover_their_own_factors_on_nonlinear_data():
    """n = 3,000 (2,000 to fit, 1,000 held out to probe), 3 modalities x 30 features, full lattice
    with 1-2 factors per node, two warp layers. Measured: diagonal mean 0.929 (min 0.876),
    off-diagonal max 0.012; the linear estimator with the true ranks 0.903 (min 0.846).
    With per-node contrast (``contrast="node"``) 0.906 (min 0.833), leakage up to 0.042."""
    data, truth = hx.simulate(n=3000, dims=(30, 30, 30), ranks=RANKS, noise=0.2, seed=0, link="nonlinear")
    fit_rows = np.arange(3000) < 2000
    held = np.flatnonzero(~fit_rows)
    kw = dict(ranks=RANKS, estimator="contrastive", hidden=(64,), max_epochs=30, lr=3e-3, device="cpu", random_state=0)
    model = hx.HCL(**kw).fit(data.subset(fit_rows))
    assert model.nodes_ == truth.nodes and model.ranks_ == truth.ranks
    Z = model.transform(data)
    assert {n: z.shape for n, z in Z.items()} == {n: (3000, r) for n, r in RANKS.items()}
    R = probe_r2(Z, truth, held)
    off = R[~np.eye(len(R), dtype=bool)]
    lin = probe_r2(hx.HCL(ranks=RANKS).fit(data.subset(fit_rows)).transform(data), truth, held)
    assert R.diagonal().mean() >= 0.88 and R.diagonal().mean() > lin.diagonal().mean() + 0.01, (R, lin)
    assert R.diagonal().min() >= 0.8, np.round(R, 2)
    assert off.max() <= 0.05, np.round(R, 2)
    assert model.objective_history_[-1] < model.objective_history_[0]
    # One term per node lets pair blocks pick up the global factors: worse on both counts.
    node = probe_r2(hx.HCL(**kw, contrast="node").fit(data.subset(fit_rows)).transform(data), truth, held)
    assert node.diagonal().mean() < R.diagonal().mean() - 0.01
    assert node[~np.eye(len(R), dtype=bool)].max() > off.max() + 0.01


@pytest.mark.parametrize("loss", ["infonce", "paper"])
@pytest.mark.parametrize("encoder", ["linear", "mlp"])
def test_both_losses_train(small, loss, encoder):
    data, _ = small
    seen = []
    model = hx.HCL(ranks=RANKS, loss=loss, encoder=encoder, **{**FAST, "max_epochs": 6}).fit(
        data, callback=lambda s, i: seen.append((s, dict(i))))
    hist = model.objective_history_
    assert len(hist) == 6 == model.n_epochs_ == model.n_iter_
    assert hist[-1] < hist[0]
    epochs = [i for s, i in seen if s == "epoch"]
    assert [e["epoch"] for e in epochs] == list(range(1, 7))
    assert {"loss", "contrastive", "reconstruction", "decorrelation", "val_loss", "best_loss"} <= set(epochs[0])
    assert epochs[-1]["contrastive"] < epochs[0]["contrastive"]
    assert seen[-1][0] == "done" and np.isfinite(model.objective_)
    assert model.device_ == "cpu" and {"train", "total"} <= set(model.timings_)


def test_contrastive_pair_losses_exactly():
    a = torch.tensor([[1.0], [-1.0], [0.0]])
    b = torch.tensor([[1.0], [-1.0], [0.5]])
    # paper: mean off-diagonal <a_i, b_j> minus mean diagonal
    s = a @ b.T
    expect = (s.sum() - s.diagonal().sum()) / 6 - s.diagonal().mean()
    assert torch.isclose(C.contrastive_pair_loss(a, b, "paper", 0.1), expect)
    logits = -torch.cdist(a, b) ** 2 / (2 * 0.5)
    ce = lambda lg: -torch.log_softmax(lg, 1).diagonal().mean()  # noqa: E731
    assert torch.isclose(C.contrastive_pair_loss(a, b, "infonce", 0.5), 0.5 * (ce(logits) + ce(logits.T)))


def test_nested_contrast_compares_every_shared_node_of_a_pair():
    nodes = [("a",), ("a", "b"), ("a", "c"), ("a", "b", "c"), ("b", "c")]
    nested = C.contrast_groups(nodes, ["a", "b", "c"], "nested")
    assert [(g["pairs"], g["nodes"]) for g in nested] == [
        ([("a", "b")], [("a", "b"), ("a", "b", "c")]),
        ([("a", "c")], [("a", "c"), ("a", "b", "c")]),
        ([("b", "c")], [("a", "b", "c"), ("b", "c")])]
    per_node = C.contrast_groups(nodes, ["a", "b", "c"], "node")
    assert [(g["nodes"], g["pairs"]) for g in per_node] == [
        ([("a", "b")], [("a", "b")]), ([("a", "c")], [("a", "c")]),
        ([("a", "b", "c")], [("a", "b"), ("a", "c"), ("b", "c")]), ([("b", "c")], [("b", "c")])]
    with pytest.raises(ValueError, match="contrast"):
        C.contrast_groups(nodes, ["a", "b", "c"], "pairs")


def _two_node_module() -> C.HCLModule:
    spec = C.ModuleSpec(["a", "b"], {"a": 3, "b": 3}, [("a",), ("a", "b")], {("a",): 1, ("a", "b"): 2}, "linear", ())
    return C.HCLModule(spec)


def test_quadratic_decorrelation_sees_dependence_that_correlation_misses():
    """Block (a,) = z1^2 is uncorrelated with block (a, b) = (z1, z2) but a function of it: only the
    degree-2 term penalizes it. An independent block is penalized by neither."""
    module = _two_node_module()
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 3, generator=g)
    obs = torch.ones(4000, 2, dtype=torch.bool)
    xs = {"a": torch.zeros(4000, 3), "b": torch.zeros(4000, 3)}
    kw = dict(loss="infonce", temperature=0.5, weights={"reconstruction": 0.0, "decorrelation": 1.0, "supervised": 0.0})

    def dec(private, how):
        raw = {"a": torch.cat([private[:, None], z[:, :2]], 1), "b": z[:, :2] + 0.1 * torch.randn(4000, 2, generator=g)}
        return float(C.batch_losses(module, xs, obs, raw=raw, decorrelation=how, **kw)["decorrelation"])

    assert dec(z[:, 0] ** 2, "linear") < 0.01
    # corr(z1^2, (z1)^2) = 1, over R_a = 3 coordinates, averaged with b's (uncorrelated) term: 1/6
    assert dec(z[:, 0] ** 2, "quadratic") == pytest.approx(1 / 6, abs=0.01)
    assert dec(z[:, 2], "quadratic") < 0.01
    q, cross = C._quadratic_features(module, "a", torch.randn(5, 3, generator=g))
    assert q.shape == (5, 4)  # (a,): z^2; (a, b): three monomials of its two coordinates
    assert cross.tolist() == [[0, 1, 1, 1], [1, 0, 0, 0], [1, 0, 0, 0]]


def test_linear_start_and_skip_path():
    enc = C.GroupedMLP(6, [2, 1], hidden=(16,), skip=True)
    P = torch.randn(3, 6)
    enc.set_linear(P)
    x = torch.randn(10, 6)
    torch.testing.assert_close(enc(x), x @ P.T)  # the MLP adds nothing until trained
    with pytest.raises(ValueError, match="skip"):
        C.GroupedMLP(6, [2, 1], hidden=(16,)).set_linear(P)
    old = C.ModuleSpec.from_dict({**_two_node_module().spec.to_dict(), "encoder": "mlp", "hidden": [4]})
    assert old.skip is True
    legacy = {k: v for k, v in old.to_dict().items() if k != "skip"}  # a file written before the skip path
    assert C.ModuleSpec.from_dict(legacy).skip is False
    assert "skip" not in dict(C.HCLModule(C.ModuleSpec.from_dict(legacy)).encoders["m0"].named_children())
    data, truth = hx.simulate(n=1500, dims=(12, 10, 8), ranks=RANKS, noise=0.2, seed=3, link="nonlinear")
    first = {init: hx.HCL(ranks=RANKS, init=init, **{**FAST, "max_epochs": 1}).fit(data).val_history_[0]
             for init in ("linear", "random")}
    assert first["linear"] < first["random"], first


@pytest.mark.parametrize("bad", [{"contrast": "pairs"}, {"decorrelation": "cubic"}, {"init": "pca"}])
def test_bad_contrastive_options_are_refused(small, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        hx.HCL(ranks=RANKS, **FAST, **bad).fit(small[0])


# ---------------------------------------------------------------------------------------------- missing
def test_missing_modalities_in_fit_and_transform():
    data, truth = hx.simulate(n=600, dims=(12, 10, 8), ranks=RANKS, noise=0.2, missing=0.3, seed=2, link="nonlinear")
    model = hx.HCL(ranks=RANKS, **FAST).fit(data)
    assert np.all(np.isfinite(model.objective_history_))
    Z = model.transform(data)
    lacks_a = ~data.observed[:, 0]
    assert lacks_a.any() and np.all(Z[("a",)][lacks_a] == 0)  # a node with none of its modalities: 0
    assert np.all(np.isfinite(np.concatenate(list(Z.values()), axis=1)))
    # A node's score is the mean of its present modalities' standardized blocks.
    full = np.flatnonzero(data.observed.all(axis=1))[:50]
    sub = data.subset(full)
    only = {}
    for keep in ("a", "b"):
        X = {m: (sub.X[m] if m == keep or m == "c" else np.full_like(sub.X[m], np.nan)) for m in sub.modalities}
        only[keep] = model.transform(hx.MultimodalData.from_arrays(X))
    both = model.transform(sub)
    np.testing.assert_allclose(both[("a", "b")], 0.5 * (only["a"][("a", "b")] + only["b"][("a", "b")]), atol=1e-6)
    # all three: (e_a + e_b + e_c) / 3, with (e_a + e_c) / 2 and (e_b + e_c) / 2 from the subsets above
    X = {m: (sub.X[m] if m == "c" else np.full_like(sub.X[m], np.nan)) for m in sub.modalities}
    e_c = model.transform(hx.MultimodalData.from_arrays(X))[("a", "b", "c")]
    np.testing.assert_allclose(both[("a", "b", "c")],
                               (2 * only["a"][("a", "b", "c")] + 2 * only["b"][("a", "b", "c")] - e_c) / 3, atol=1e-6)
    np.testing.assert_allclose(only["b"][("b",)], both[("b",)], atol=1e-6)  # b's own block does not use a


def test_a_node_whose_modalities_never_meet_is_refused():
    data, _ = hx.simulate(n=200, dims=(4, 4), ranks={("a", "b"): 1}, seed=0)
    X = {m: data.X[m].copy() for m in data.modalities}
    X["a"][:100] = np.nan
    X["b"][100:] = np.nan
    with pytest.raises(ValueError, match="no sample has both"):
        hx.HCL(ranks={("a", "b"): 1, ("a",): 0, ("b",): 0}, **FAST).fit(hx.MultimodalData.from_arrays(X))


# ---------------------------------------------------------------------------------------------- contract
def test_save_load_round_trip_gives_identical_transform(small, tmp_path):
    data, _ = small
    model = hx.HCL(ranks=RANKS, **FAST).fit(data)
    path = tmp_path / "model.npz"
    model.save(path)
    assert not os.path.exists(str(path) + ".tmp")
    with np.load(path, allow_pickle=False) as z:  # plain arrays + JSON, no pickle
        meta = json.loads(str(z["meta"]))
        assert meta["params"]["estimator"] == "contrastive" and meta["version"] == 2
        assert any(k.startswith("module.") for k in z.files)
    back = hx.HCL.load(path)
    Z1, Z2 = model.transform(data), back.transform(data)
    assert Z1.keys() == Z2.keys()
    for n in Z1:
        np.testing.assert_array_equal(Z1[n], Z2[n])
    assert back.ranks_ == model.ranks_ and back.nodes_ == model.nodes_ and back.dims_ == model.dims_
    assert back.feature_names_ == model.feature_names_ and back.n_samples_ == 600
    assert back.objective_history_ == model.objective_history_ and back.converged_ == model.converged_
    assert back.get_params() == model.get_params()
    pd_cols = ["node", "level", "size", "rank", "present"]
    assert model.summary()[pd_cols].equals(back.summary()[pd_cols])


def test_summary_loadings_and_params(small):
    data, _ = small
    model = hx.HCL(ranks=RANKS, **FAST).fit(data)
    lin = hx.HCL(ranks=RANKS).fit(data)
    sm = model.summary()
    assert list(sm.columns) == list(lin.summary().columns)
    assert sm["rank"].tolist() == [RANKS[n] for n in model.lattice_.nodes]
    assert sm.loc[sm.node == "a", "var_b"].isna().all() and (sm.loc[sm.node == "a", "var_a"] > 0).all()
    L = model.loadings_  # a least-squares approximation, on the support only
    assert L[("a", ("a", "b"))].shape == (12, 1) and ("c", ("a", "b")) not in L
    assert set(model.noise_var_) == {"a", "b", "c"} and all(0 < v < 2 for v in model.noise_var_.values())
    fig = model.plot_objective()  # training and validation loss per epoch
    assert [t.name for t in fig.data] == ["training", "validation"] and len(fig.data[1].y) == model.n_epochs_
    p = model.get_params()
    assert p["hidden"] == [32] and p["loss"] == "infonce" and p["max_epochs"] == 3
    assert "hidden" not in lin.get_params()  # linear models (and their files) are unchanged
    with pytest.raises(TypeError, match="unexpected"):
        hx.HCL(hiden=(3,))
    with pytest.raises(ValueError, match="loss"):
        hx.HCL(ranks=1, **{**FAST, "loss": "triplet"}).fit(data)
    with pytest.raises(ValueError, match="y is only used"):
        hx.HCL(ranks=1).fit(data, y=np.zeros(600))
    assert "fitted" in repr(model)


def test_resume_from_checkpoint_continues_the_epoch_count(small, tmp_path):
    data, _ = small
    kw = dict(ranks=RANKS, **{**FAST, "patience": 50}, checkpoint_dir=str(tmp_path / "ck"))
    first = hx.HCL(**{**kw, "max_epochs": 2}).fit(data)
    assert os.path.exists(tmp_path / "ck" / "checkpoint.pt")
    ck = torch.load(tmp_path / "ck" / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 2
    epochs = []
    resumed = hx.HCL(**{**kw, "max_epochs": 4, "resume": True}).fit(
        data, callback=lambda s, i: epochs.append(i["epoch"]) if s == "epoch" else None)
    assert epochs == [3, 4] and resumed.n_epochs_ == 4
    assert resumed.objective_history_[:2] == first.objective_history_
    straight = hx.HCL(**{**FAST, "patience": 50, "max_epochs": 4, "ranks": RANKS}).fit(data)
    np.testing.assert_allclose(resumed.objective_history_, straight.objective_history_, rtol=1e-5)
    with pytest.raises(ValueError, match="another data set"):
        hx.HCL(**{**kw, "max_epochs": 4, "resume": True, "temperature": 0.5}).fit(data)


def test_a_raising_callback_stops_training_and_leaves_the_model_unfitted(small):
    data, _ = small

    class Stop(Exception):
        pass

    def cb(stage, info):
        if stage == "epoch" and info["epoch"] == 2:
            raise Stop

    model = hx.HCL(ranks=RANKS, **{**FAST, "max_epochs": 10})
    with pytest.raises(Stop):
        model.fit(data, callback=cb)
    assert not any(a.endswith("_") and not a.startswith("_") for a in vars(model))
    with pytest.raises(RuntimeError, match="not fitted"):
        model.transform(data)
    model.fit(data)  # reusable
    assert model.n_epochs_ == 10


def test_early_stopping_keeps_the_best_epoch(small):
    data, _ = small
    model = hx.HCL(ranks=RANKS, **{**FAST, "max_epochs": 200, "patience": 2, "lr": 0.05}).fit(data)
    assert model.converged_ and model.n_epochs_ < 200
    assert 0 < model.n_epochs_ - model.best_epoch_ <= 2  # patience counts from the last significant gain
    assert model.objective_ == pytest.approx(np.nanmin(model.val_history_))
    assert model.val_history_[model.best_epoch_ - 1] == pytest.approx(np.nanmin(model.val_history_))


def _train_setup(small, **cfg):
    data, _ = small
    model = hx.HCL(ranks=RANKS, **{**FAST, "max_epochs": 1}).fit(data)
    obs = np.asarray(data.observed, dtype=bool)
    arrays = C.Arrays(model._standardized(data.X, obs), obs)
    rows = np.random.default_rng(0).permutation(obs.shape[0])
    return model.module_, arrays, np.sort(rows[:500]), np.sort(rows[500:]), C.TrainConfig(batch_size=64, **cfg)


def test_learning_rate_halves_on_every_epoch_without_a_significant_gain(small):
    """The plateau schedule: an epoch that does not beat the reference by its noise multiplies
    the learning rate by lr_decay (epoch 1 only sets the reference); lr_decay=1 keeps it fixed.
    The callback reports the rate each epoch trained with."""
    for decay, expected in ((0.5, [1e-7, 1e-7, 5e-8, 2.5e-8]), (1.0, [1e-7] * 4)):
        module, arrays, tr, va, cfg = _train_setup(small, lr=1e-7, min_delta=0.0, patience=3, max_epochs=40,
                                                   lr_decay=decay)
        seen: list[float] = []
        res = C.train(module, arrays, tr, va, cfg, torch.device("cpu"),
                      callback=lambda ev, info: seen.append(info["lr"]))
        assert res.n_epochs == 4 and seen == pytest.approx(expected, rel=1e-9)


def test_patience_is_measured_in_the_noise_of_the_validation_loss(small):
    """With a tiny learning rate the validation loss still falls every epoch, by far less than its
    standard error: that is no improvement, and patience runs out (the old rule, any fall larger
    than min_delta = 0, trained to max_epochs). The weights kept are the lowest loss's."""
    module, arrays, tr, va, cfg = _train_setup(small, lr=1e-7, min_delta=0.0, patience=3, max_epochs=40)
    res = C.train(module, arrays, tr, va, cfg, torch.device("cpu"))
    assert res.stop_reason == "patience" and res.converged and res.n_epochs == 4
    assert all(n > 0 for n in res.noise) and len(res.noise) == 4
    drops = -np.diff(res.val_history)
    assert np.all(drops > 0) and np.all(drops < min(res.noise))  # falling, within the noise
    assert res.best_epoch == 4 and res.best_loss == min(res.val_history)
    # a real gain (lr 3e-3) keeps training past the same patience
    module, arrays, tr, va, cfg = _train_setup(small, lr=3e-3, patience=3, max_epochs=8)
    res = C.train(module, arrays, tr, va, cfg, torch.device("cpu"))
    assert res.n_epochs == 8 and res.stop_reason == "max_epochs" and not res.converged


def test_small_networks_train_on_one_thread_and_restore_the_setting(small):
    module, arrays, tr, va, cfg = _train_setup(small, max_epochs=2)
    assert C._encoder_macs(module, cfg.batch_size) < C.SMALL_WORK_MACS
    torch.set_num_threads(2)
    seen = []
    C.train(module, arrays, tr, va, cfg, torch.device("cpu"), callback=lambda s, i: seen.append(torch.get_num_threads()))
    assert seen == [1, 1] and torch.get_num_threads() == 2
    big = C.HCLModule(C.ModuleSpec(["a"], {"a": 400}, [("a",)], {("a",): 2}, "mlp", (128,)))
    assert C._encoder_macs(big, 256) > C.SMALL_WORK_MACS


def test_time_budget_stops_training_and_keeps_the_best_epoch(small):
    module, arrays, tr, va, cfg = _train_setup(small, max_time=1e-6, max_epochs=50, patience=50)
    seen = []
    res = C.train(module, arrays, tr, va, cfg, torch.device("cpu"), callback=lambda s, i: seen.append(dict(i)))
    # the budget is checked between minibatches: one batch, then the epoch ends and is validated
    assert res.stop_reason == "max_time" and res.n_epochs == 1 and not res.converged
    assert seen[-1]["stop_reason"] == "max_time" and len(res.val_history) == 1 and res.seconds > 0
    data, _ = small
    model = hx.HCL(ranks=RANKS, **{**FAST, "max_epochs": 50, "patience": 50, "max_time": 1e-6}).fit(data)
    assert model.n_epochs_ == 1 and not model.converged_
    assert model.objective_ == pytest.approx(model.val_history_[0])
    free = hx.HCL(ranks=RANKS, **{**FAST, "max_epochs": 3, "patience": 50, "max_time": 3600}).fit(data)
    assert free.n_epochs_ == 3


def test_resume_reads_checkpoints_written_before_the_noise_record(small, tmp_path):
    data, _ = small
    kw = dict(ranks=RANKS, **{**FAST, "patience": 50}, checkpoint_dir=str(tmp_path / "ck"))
    hx.HCL(**{**kw, "max_epochs": 2}).fit(data)
    path = tmp_path / "ck" / "checkpoint.pt"
    ck = torch.load(path, weights_only=True)
    assert len(ck["noise"]) == 2 and ck["ref"] in ck["val_history"]
    del ck["noise"], ck["ref"]
    torch.save(ck, path)
    resumed = hx.HCL(**{**kw, "max_epochs": 3, "resume": True}).fit(data)
    assert resumed.n_epochs_ == 3


def test_ranks_auto_starts_from_the_linear_structure():
    data, _ = hx.simulate(n=800, dims=(12, 10, 8), ranks={("a", "b", "c"): 2, ("a", "b"): 1, ("c",): 1}, noise=0.2, seed=3)
    lin = hx.HCL(ranks="auto").fit(data)
    stages = []
    model = hx.HCL(ranks="auto", **FAST).fit(data, callback=lambda s, i: stages.append(s))
    assert model.ranks_ == lin.ranks_ and model.nodes_ == lin.nodes_
    assert "ranks" in stages and "epoch" in stages


def test_supervised_head_trains(small):
    data, truth = small
    y = truth.Z[("a", "b", "c")][:, 0] + 0.1 * np.random.default_rng(0).standard_normal(600)
    y[:100] = np.nan  # unlabelled samples are fine
    sup = []
    model = hx.HCL(ranks=RANKS, **{**FAST, "max_epochs": 5}).fit(
        data, y=y, callback=lambda s, i: sup.append(i["supervised"]) if s == "epoch" else None)
    assert model.task_ == "continuous" and sup[-1] < sup[0]
    binary = hx.HCL(ranks=RANKS, **FAST).fit(data, y=(y > 0).astype(float))
    assert binary.task_ == "binary"


def test_evaluate_prediction_runs_on_a_contrastive_model(small):
    data, truth = small
    y = truth.Z[("a", "b", "c")][:, 0] + 0.5 * np.random.default_rng(0).standard_normal(600)
    model = hx.HCL(ranks=RANKS, **FAST).fit(data)
    rep = hx.evaluate_prediction(model, data, y, refit=False, baselines=["raw"], n_bootstrap=20, cv=3)
    assert rep.metric("r2") > 0.2
    rep2 = hx.evaluate_prediction(model, data, y, refit=True, baselines=False, n_bootstrap=20, cv=3)
    assert np.isfinite(rep2.metric("r2"))
    with pytest.raises(ValueError, match="only for the linear estimator"):
        hx.evaluate_prediction(model, data, y, refit=False, baselines=False, bias_correction=True, cv=3)


def test_progress_bar(small, capsys):
    data, _ = small
    hx.HCL(ranks=RANKS, **FAST).fit(data, progress=True)
    err = capsys.readouterr().err
    assert "HCL contrastive fit" in err and "100%" in err


@pytest.mark.gpu
def test_cuda_with_mixed_precision(small, tmp_path):
    data, _ = small
    model = hx.HCL(ranks=RANKS, **{**FAST, "device": "cuda", "amp": True, "max_epochs": 4}).fit(data)
    assert model.device_.startswith("cuda")
    assert np.all(np.isfinite(model.objective_history_)) and model.objective_history_[-1] < model.objective_history_[0]
    Z = model.transform(data)
    assert all(np.isfinite(z).all() for z in Z.values())
    model.save(tmp_path / "m.npz")
    back = hx.HCL.load(tmp_path / "m.npz")
    for n in Z:
        np.testing.assert_allclose(back.transform(data)[n], Z[n], atol=1e-5)
    cpu = hx.HCL(ranks=RANKS, **{**FAST, "amp": False, "max_epochs": 4}).fit(data)
    assert abs(cpu.objective_history_[0] - model.objective_history_[0]) < 0.5 * abs(cpu.objective_history_[0])


@pytest.mark.parametrize("hidden", [(-5,), (0,), (16, -1), (2.5,), ("a",), "64"])
def test_bad_hidden_widths_are_a_clear_error(hidden):
    data, _ = hx.simulate(n=80, dims=(4, 3), ranks={("a", "b"): 1, ("a",): 1, ("b",): 1}, noise=0.3, seed=0)
    with pytest.raises(ValueError, match="hidden"):
        hx.HCL(estimator="contrastive", hidden=hidden, ranks={("a", "b"): 1, ("a",): 1, ("b",): 1}, max_epochs=1,
               device="cpu").fit(data)


def test_hidden_minus_five_with_auto_ranks_names_hidden(small):
    with pytest.raises(ValueError, match="hidden"):
        hx.HCL(estimator="contrastive", hidden=(-5,), max_epochs=1, device="cpu").fit(small[0])


@pytest.mark.parametrize("option,value", [("batch_size", 0), ("batch_size", 2.5), ("lr", 0), ("lr", -1e-3),
                                          ("lr", float("nan")), ("max_epochs", 0), ("temperature", 0),
                                          ("temperature", -1.0), ("val_fraction", 1.0), ("val_fraction", -0.1),
                                          ("weight_decay", -1.0), ("patience", 0), ("hidden", (-5,)),
                                          ("lr_decay", 0), ("lr_decay", 1.5)])
def test_contrastive_options_are_checked_by_name(option, value):
    with pytest.raises(ValueError, match=option):
        C.check_options(**{option: value})
    if option != "val_fraction":
        with pytest.raises(ValueError, match=option):
            if option == "hidden":
                C.ModuleSpec(["a"], {"a": 3}, [("a",)], {("a",): 1}, hidden=value)
            else:
                C.TrainConfig(**{option: value})


def test_good_contrastive_options_pass():
    C.check_options(hidden=(), batch_size=1, lr=1e-3, max_epochs=1, temperature=0.1, val_fraction=0.0,
                    weight_decay=0.0, patience=1)
    C.check_options(hidden=[np.int64(8), 4])
    C.TrainConfig()


# ---------------------------------------------------------------------------------------------- fused losses
def _reference_losses(module, xs, obs, *, loss, temperature, weights, decorrelation, contrast):
    """The loss terms written out one (modality, node, pair) at a time, as the module docstring
    states them: what the fused :func:`C.batch_losses` must equal."""
    mods = module.spec.modalities
    raw = module.encode(xs)
    w = {m: obs[:, mods.index(m)].float() for m in raw}
    hs = {m: C._batch_standardize(raw[m], w[m]) for m in raw}
    con = []
    for g in C.contrast_groups(module.spec.nodes, mods, contrast):
        terms = []
        for m, m2 in g["pairs"]:
            both = obs[:, mods.index(m)] & obs[:, mods.index(m2)]
            if int(both.sum()) < 2:
                continue
            a = torch.cat([hs[m][both, s:e] for s, e in C._spans(module, m, g["nodes"])], 1)
            b = torch.cat([hs[m2][both, s:e] for s, e in C._spans(module, m2, g["nodes"])], 1)
            terms.append(C.contrastive_pair_loss(a, b, loss, temperature))
        if terms:
            con.append(torch.stack(terms).mean())
    rec, dec = [], []
    for m, h in raw.items():
        n_m = w[m].sum()
        parts = [h[:, s:e] if len(nd) == 1 else h[:, s:e].detach() for nd, s, e in module.blocks[m]]
        err = ((module.decode(m, torch.cat(parts, 1)) - xs[m]) ** 2).mean(1)
        rec.append((err * w[m]).sum() / n_m)
        R = h.shape[1]
        if R >= 2:
            Cm = hs[m].T @ hs[m] / n_m
            d = ((Cm - torch.diag(torch.diagonal(Cm))) ** 2).sum()
            if decorrelation == "quadratic" and len(module.blocks[m]) > 1:
                q, cross = C._quadratic_features(module, m, hs[m])
                d = d + ((hs[m].T @ C._batch_standardize(q, w[m]) / n_m) ** 2 * cross).sum()
            dec.append(d / R)
    out = {"contrastive": torch.stack(con).mean(), "reconstruction": torch.stack(rec).mean(),
           "decorrelation": torch.stack(dec).mean()}
    out["total"] = out["contrastive"] + weights["reconstruction"] * out["reconstruction"] \
        + weights["decorrelation"] * out["decorrelation"]
    return out


@pytest.mark.parametrize("loss", ["infonce", "paper"])
@pytest.mark.parametrize("contrast,decorrelation", [("nested", "quadratic"), ("node", "linear")])
@pytest.mark.parametrize("missing", [False, True])
def test_fused_losses_equal_the_per_term_formulas(loss, contrast, decorrelation, missing):
    """One batched product per loss term gives the per-(modality, node, pair) values and gradients,
    with unequal ranks (zero-padded pair blocks) and with rows missing a modality (masked)."""
    torch.manual_seed(0)
    spec = C.ModuleSpec(["a", "b", "c"], {"a": 7, "b": 5, "c": 6}, list(RANKS), RANKS, "mlp", (8,))
    module = C.HCLModule(spec)
    g = torch.Generator().manual_seed(1)
    xs = {m: torch.randn(40, d, generator=g) for m, d in spec.dims.items()}
    obs = torch.ones(40, 3, dtype=torch.bool)
    if missing:
        obs = torch.rand(40, 3, generator=g) > 0.3
        obs[:2] = True
        for j, m in enumerate(spec.modalities):
            xs[m][~obs[:, j]] = 0.0
    kw = dict(loss=loss, temperature=0.3, weights={"reconstruction": 0.7, "decorrelation": 1.3, "supervised": 1.0},
              decorrelation=decorrelation, contrast=contrast)
    ref = _reference_losses(module, xs, obs, **kw)
    ref["total"].backward()
    ref_grad = {n: p.grad.clone() for n, p in module.named_parameters()}
    module.zero_grad()
    got = C.batch_losses(module, xs, obs, **kw)
    for k in ("total", "contrastive", "reconstruction", "decorrelation"):
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-6)
    got["total"].backward()
    for n, p in module.named_parameters():
        torch.testing.assert_close(p.grad, ref_grad[n], rtol=1e-4, atol=1e-6, msg=n)


# ---------------------------------------------------------------------------------------------- GPU check script
def test_gpu_check_script_parses_and_skips_cleanly_without_cuda():
    import shutil
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(root, "benchmarks", "gpu_check.sh")
    bash = shutil.which("bash")
    assert bash is not None
    assert subprocess.run([bash, "-n", script], capture_output=True).returncode == 0
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the script would run the real check")
    strict = subprocess.run([bash, script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PY": sys.executable, "GPU_CHECK_STRICT": "1"})
    # without CUDA: the first step says so and stops (exit 0 by default; 1 when strict)
    assert strict.returncode == 1 and "skipped - no CUDA" in strict.stdout, strict.stdout + strict.stderr
    assert "== GPU tests" not in strict.stdout
