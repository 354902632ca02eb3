"""Prediction from the hierarchy: metrics, the group lasso, the honest evaluation protocol."""

import json

import numpy as np
import pandas as pd
import pytest

import hcl_explore as hx
from hcl_explore.cli import main
from hcl_explore.predict import PredictionReport, average_precision, fit_group_lasso, pr_curve, roc_auc, roc_curve

MODS = ["a", "b", "c"]


def outcome_data(seed, task, n=2500, n_lab=400, drivers=(("a", "b"), ("c",)), strength=2.0):
    """Full 3-modality lattice, 2 factors per node; the outcome depends on two nodes equally."""
    lat = hx.Lattice.full(MODS)
    data, truth = hx.simulate(n=n, dims={m: 50 for m in MODS}, ranks={nd: 2 for nd in lat.nodes}, noise=0.5, seed=seed)
    rng = np.random.default_rng(seed + 100)
    parts = [truth.Z[d] @ rng.normal(size=2) for d in drivers]
    eta = strength * sum(p / p.std() for p in parts)
    if task == "binary":
        y = (rng.random(n) < 1 / (1 + np.exp(-(eta - 1.5)))).astype(float)
    else:
        y = eta + rng.normal(size=n)
    lab = rng.choice(n, n_lab, replace=False)
    yl = np.full(n, np.nan)
    yl[lab] = y[lab]
    return data, yl, set(drivers)


# ------------------------------------------------------------------ metrics
def test_roc_and_pr_metrics_match_hand_computed_values():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    # Pairs (pos, neg): 9 pairs, 0.35 loses to 0.4 only -> 8/9.
    assert roc_auc(y, s) == pytest.approx(8 / 9)
    assert roc_auc(y, np.ones(6)) == pytest.approx(0.5)  # ties count one half
    # Ranked: 0.9(1) 0.8(1) 0.4(0) 0.35(1) ... -> AP = (1 + 1 + 3/4) / 3
    assert average_precision(y, s) == pytest.approx((1 + 1 + 0.75) / 3)
    roc = roc_curve(y, s)
    assert roc.fpr.iloc[0] == 0 and roc.tpr.iloc[-1] == 1 and roc.fpr.iloc[-1] == 1
    assert np.all(np.diff(roc.fpr) >= 0) and np.all(np.diff(roc.tpr) >= 0)
    pr = pr_curve(y, s)
    assert pr.recall.iloc[-1] == 1 and pr.precision.iloc[-1] == pytest.approx(0.5)


# ------------------------------------------------------------------ group lasso
@pytest.mark.parametrize("task", ["continuous", "binary"])
def test_group_lasso_selects_the_relevant_groups(task):
    rng = np.random.default_rng(0)
    n, groups = 600, np.repeat(np.arange(6), 3)
    X = rng.normal(size=(n, groups.size))
    beta = np.zeros(groups.size)
    beta[groups == 1] = [1.0, -0.5, 0.5]
    beta[groups == 4] = [-0.8, 0.0, 0.6]
    eta = X @ beta
    y = eta + rng.normal(size=n) if task == "continuous" else (rng.random(n) < 1 / (1 + np.exp(-2 * eta))).astype(float)
    fit = fit_group_lasso(X, y, groups, task)
    assert set(np.flatnonzero(fit.group_norms() > 0)) == {1, 4}
    assert fit.cv.shape[0] == 30 and fit.lambda_ > 0
    # Predictions on new data correlate with the truth.
    Xn = rng.normal(size=(200, groups.size))
    assert np.corrcoef(fit.predict(Xn), Xn @ beta)[0, 1] > 0.9


def test_bias_corrected_estimator_undoes_attenuation():
    # x_hat = x + e with known error covariance: plain least squares shrinks beta, the corrected one does not.
    rng = np.random.default_rng(1)
    n = 20000
    x = rng.normal(size=(n, 2))
    y = x @ np.array([1.0, 0.0]) + 0.1 * rng.normal(size=n)
    err = np.diag([0.5, 0.5])
    xh = x + rng.normal(size=(n, 2)) * np.sqrt(0.5)
    plain = fit_group_lasso(xh, y, [0, 1], "continuous", rule="min", adaptive=False)
    corr = fit_group_lasso(xh, y, [0, 1], "continuous", rule="min", adaptive=False, noise_cov=err)
    slope = lambda f: f.coef[0] / f.scale[0]  # noqa: E731  back to original units
    assert slope(plain) == pytest.approx(1 / 1.5, abs=0.03)
    assert slope(corr) == pytest.approx(1.0, abs=0.05)


def _multinomial_problem(seed=0, n=240, K=4):
    from hcl_explore import predict as P

    rng = np.random.default_rng(seed)
    sizes = [3, 2, 4, 1, 2, 3]
    g = np.repeat(np.arange(len(sizes)), sizes)
    X = rng.normal(size=(n, g.size))
    X[:, 1] += X[:, 0]  # correlated columns: the global step is short
    W = np.zeros((g.size, K))
    W[g == 0] = rng.normal(size=(3, K))
    W[g == 2] = 0.5 * rng.normal(size=(4, K))
    E = X @ W
    pr = np.exp(E - E.max(axis=1, keepdims=True))
    pr /= pr.sum(axis=1, keepdims=True)
    y = (pr.cumsum(axis=1) < rng.random(n)[:, None]).sum(axis=1).astype(float)
    return X, y, g, K, P


def test_fast_multinomial_path_reaches_the_reference_objective():
    # The active-set path with the adaptive step solves the same problem as plain proximal gradient
    # over every group (run here to a much tighter tolerance): same objective at every penalty,
    # an excluded group (infinite weight) stays at zero.
    X, y, g, K, P = _multinomial_problem()
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    gidx = P._group_index(g)
    w = np.array([np.sqrt(i.size) for i in gidx])
    w[4] = np.inf
    prob = P._MultiProblem(X, y, K, P._expand_groups(gidx, K), w, P._balanced_weights("multiclass", y, "balanced", K))
    lam = prob.lambda_max() * np.logspace(0, -2.5, 10)
    ref = prob.path_reference(lam, tol=1e-10, max_iter=200_000)
    fast = prob.path(lam, tol=1e-5)
    for i, lm in enumerate(lam):
        f_ref, f_fast = prob.objective(ref[i], lm), prob.objective(fast[i], lm)
        assert f_fast == pytest.approx(f_ref, rel=1e-6, abs=1e-9), i
    B = fast[:, : g.size * K].reshape(len(lam), g.size, K)
    assert np.all(B[:, g == 4] == 0)
    assert (np.abs(B).sum(axis=(1, 2)) > 0).sum() >= 8  # the path does open up


def test_multiclass_group_lasso_chooses_as_the_reference_solver_does(monkeypatch):
    X, y, g, K, P = _multinomial_problem(seed=1, n=200)
    fast = fit_group_lasso(X, y, g, "multiclass", n_lambda=10, cv=3)
    monkeypatch.setattr(P._MultiProblem, "path", lambda self, lam, tol=1e-7, max_iter=5000:
                        self.path_reference(lam, tol=1e-8, max_iter=50_000))
    monkeypatch.setattr(P._MultiProblem, "path_iter", lambda self, lam, tol=1e-7, max_iter=5000:
                        iter(self.path_reference(lam, tol=1e-8, max_iter=50_000)))
    ref = fit_group_lasso(X, y, g, "multiclass", n_lambda=10, cv=3)
    assert fast.lambda_ == pytest.approx(ref.lambda_, rel=1e-3)  # the adaptive weights carry the tolerance
    assert set(np.flatnonzero(fast.group_norms() > 0)) == set(np.flatnonzero(ref.group_norms() > 0)) >= {0, 2}
    np.testing.assert_allclose(fast.cv.cv_loss, ref.cv.cv_loss, rtol=1e-4)
    np.testing.assert_allclose(fast.predict(X), ref.predict(X), atol=1e-3)


def test_the_cv_path_stops_only_past_a_clear_minimum(monkeypatch):
    from hcl_explore import predict as P

    se = np.array([[0.0], [0.02], [-0.02]])
    u = np.array([1.0, 0.8, 0.6, 0.5, 0.55, 0.6, 0.7, 0.8]) + se  # 3 folds x 8 penalties
    assert not P._cv_turned_up(u[:, :6])  # two rises only
    assert P._cv_turned_up(u[:, :7])
    assert not P._cv_turned_up(np.linspace(1, 0.1, 8) + se)  # still falling
    assert not P._cv_turned_up(np.array([1.0, 0.5, 0.51, 0.52, 0.53]) + 10 * se)  # within noise
    # Stopping early changes nothing that is chosen: the same fit as with the whole path.
    rng = np.random.default_rng(3)  # few samples, noise groups: weak penalties overfit
    g = np.repeat(np.arange(6), 4)
    X = rng.normal(size=(90, g.size))
    y = (X[:, 0] + 0.5 * rng.normal(size=90) > 0).astype(float) + (X[:, 4] > 0.8)
    early = fit_group_lasso(X, y, g, "multiclass", n_lambda=20, cv=3)
    monkeypatch.setattr(P, "CV_STOP_RISES", 10**6)
    whole = fit_group_lasso(X, y, g, "multiclass", n_lambda=20, cv=3)
    assert len(whole.cv) == 20 and len(early.cv) < 20
    assert early.lambda_ == whole.lambda_
    np.testing.assert_allclose(early.coef, whole.coef)
    pd.testing.assert_frame_equal(early.cv, whole.cv.iloc[: len(early.cv)])


# ------------------------------------------------------------------ evaluate_prediction
@pytest.mark.parametrize("task", ["binary", "continuous"])
def test_selects_the_driving_nodes_at_400_labels(task):
    data, y, drivers = outcome_data(3, task)
    rep = hx.evaluate_prediction(hx.HCL(), data, y, n_bootstrap=100, baselines=["raw"], random_state=0)
    assert set(rep.selected_nodes) == drivers
    assert rep.task == task
    assert rep.counts == {"labelled": 400, "train": 300, "test": 100, "unlabelled": 2100, "missing_outcome": 2100}
    imp = rep.node_importance
    assert set(imp.node[imp.selected]) == drivers and imp.share.sum() == pytest.approx(1.0)
    names = set(rep.metrics.metric)
    assert names == ({"auroc", "auprc", "f1", "accuracy", "brier"} if task == "binary" else {"r2", "mse", "mae"})
    assert (rep.metrics.ci_low <= rep.metrics.value + 1e-12).all() and (rep.metrics.value <= rep.metrics.ci_high + 1e-12).all()
    assert list(rep.baselines.model)[0] == "HCL" and len(rep.baselines) == 2
    if task == "binary":
        assert 0 < rep.threshold < 1
        assert set(rep.curves["HCL"]) == {"roc", "pr"}
        assert rep.metric("auroc") > 0.8
    else:
        assert rep.metric("r2") > 0.45
    assert any("No leakage" in n for n in rep.notes)
    json.dumps(rep.to_dict())
    assert "selected nodes:" in str(rep)


def test_hcl_beats_raw_features_with_few_labels_and_all_baselines_run():
    data, y, _ = outcome_data(5, "binary", n=2500, n_lab=200)
    rep = hx.evaluate_prediction(hx.HCL(), data, y, n_bootstrap=0, random_state=1)
    models = list(rep.baselines.model)
    assert models[0] == "HCL" and len(models) == 5
    assert any(m.startswith("raw") for m in models) and any(m.startswith("PCA") for m in models)
    raw = [m for m in models if m.startswith("raw")][0]
    assert rep.metric("auroc") >= rep.metric("auroc", raw)


def test_representation_is_fitted_without_the_test_samples():
    data, y, _ = outcome_data(4, "continuous", n=1500, n_lab=300)
    seen = []
    rep = hx.evaluate_prediction(hx.HCL(), data, y, baselines=False, n_bootstrap=0,
                                 callback=lambda stage, info: seen.append(stage))
    assert "representation" in seen
    # 300 labelled, 75 test: the representation saw the other 1425 samples.
    assert f"fitted on the {1500 - rep.counts['test']} non-test samples" in rep.notes[0]


def test_bad_outcomes_give_clear_errors():
    data, y, _ = outcome_data(6, "binary", n=600, n_lab=200)
    with pytest.raises(ValueError, match="constant"):
        hx.evaluate_prediction(hx.HCL(), data, np.where(np.isnan(y), np.nan, 1.0))
    few = np.full(data.n_samples, np.nan)
    few[:10] = [0, 1] * 5
    with pytest.raises(ValueError, match="Only 10 sample"):
        hx.evaluate_prediction(hx.HCL(), data, few)
    rare = np.where(np.isnan(y), np.nan, 0.0)
    rare[np.flatnonzero(~np.isnan(y))[:2]] = 1.0
    with pytest.raises(ValueError, match="smaller outcome class"):
        hx.evaluate_prediction(hx.HCL(), data, rare)
    with pytest.raises(ValueError, match="one value per sample"):
        hx.evaluate_prediction(hx.HCL(), data, y[:-1])


def test_samples_missing_modalities_are_scored_with_what_they_have():
    data, y, drivers = outcome_data(7, "continuous", n=2500, n_lab=400)
    X = {m: data.X[m].copy() for m in MODS}
    X["a"][::4] = np.nan  # a quarter of the samples lack modality a
    holey = hx.MultimodalData.from_arrays(X)
    rep = hx.evaluate_prediction(hx.HCL(), holey, y, baselines=["raw"], n_bootstrap=0)
    assert rep.metric("r2") > 0.5 and np.isfinite(rep.metric("r2", "raw features (ridge)"))


def test_predict_cli_on_a_saved_model(tmp_path, capsys):
    data, y, _ = outcome_data(8, "binary", n=1200, n_lab=400)
    frames = {}
    for m in MODS:
        df = pd.DataFrame(data.X[m], columns=data.feature_names[m])
        df.insert(0, "sid", [f"S{i}" for i in range(data.n_samples)])
        df.to_csv(tmp_path / f"{m}.csv", index=False)
        frames[m] = str(tmp_path / f"{m}.csv")
    out = pd.DataFrame({"sid": [f"S{i}" for i in range(data.n_samples)], "event": y})
    out.to_csv(tmp_path / "out.csv", index=False)
    specs = [f"{m}={p}" for m, p in frames.items()]
    assert main(["fit", *specs, "--out", str(tmp_path / "m.npz")]) == 0
    capsys.readouterr()
    rc = main(["predict", str(tmp_path / "m.npz"), *specs, "--outcomes", str(tmp_path / "out.csv"),
               "--bootstrap", "50", "--json", str(tmp_path / "r.json")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "selected nodes:" in text and "auroc" in text and "raw features" in text
    assert json.loads((tmp_path / "r.json").read_text())["counts"]["labelled"] == 400


def test_infinite_outcomes_are_an_error_giving_their_count():
    # One inf in a continuous outcome gave r2 = NaN and MSE = inf with no error.
    data, y, _ = outcome_data(8, "continuous", n=600, n_lab=200)
    lab = np.flatnonzero(~np.isnan(y))
    bad = y.copy()
    bad[lab[[3, 9]]] = [np.inf, -np.inf]
    with pytest.raises(ValueError, match=r"holds 2 infinite value\(s\) \(inf or -inf\), e.g. at sample"):
        hx.evaluate_prediction(hx.HCL(), data, bad)
    # Text and Series outcomes alike ('inf' parses as a number).
    text = pd.Series(np.where(np.isnan(y), None, y.astype(str)), index=np.asarray(data.ids), dtype=object)
    text.iloc[lab[0]] = "-inf"
    with pytest.raises(ValueError, match=r"holds 1 infinite value"):
        hx.evaluate_prediction(hx.HCL(), data, text)
    binary = np.where(np.isnan(y), np.nan, (y > np.nanmedian(y)).astype(float))
    binary[lab[1]] = np.inf
    with pytest.raises(ValueError, match=r"holds 1 infinite value"):
        hx.evaluate_prediction(hx.HCL(), data, binary, task="binary")


@pytest.mark.parametrize("option,value", [("cv", 1), ("cv", 0), ("cv", -3), ("cv", 2.5), ("cv", True), ("cv", "5"),
                                          ("test_size", 0), ("test_size", 1), ("test_size", 1.5), ("test_size", -0.1),
                                          ("test_size", float("nan")), ("test_size", "0.2"),
                                          ("n_bootstrap", -1), ("n_bootstrap", 10.5), ("min_labelled", 0),
                                          ("task", "ordinal"), ("rule", "max"), ("class_weight", "equal")])
def test_bad_options_are_refused_up_front_naming_the_argument(option, value):
    data, y, _ = outcome_data(8, "binary", n=300, n_lab=120)
    fitted = []

    class Spy(hx.HCL):  # nothing may be fitted before the options are checked
        def fit(self, *a, **k):
            fitted.append(1)
            return super().fit(*a, **k)

    with pytest.raises(ValueError, match=option):
        hx.evaluate_prediction(Spy(), data, y, **{option: value})
    assert not fitted


def test_cv_1_is_a_clear_error_in_the_penalty_searches():
    from hcl_explore.predict import fit_ridge

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 4)), rng.normal(size=40)
    with pytest.raises(ValueError, match="cv must be an integer >= 2"):
        fit_group_lasso(X, y, [0, 0, 1, 1], "continuous", cv=1)
    with pytest.raises(ValueError, match="cv must be an integer >= 2"):
        fit_ridge(X, y, "continuous", cv=1)
    assert fit_ridge(X, y, "continuous", cv=np.int64(2)) is not None


# ------------------------------------------------------------------ multiclass, structure, warnings
def multiclass_data(seed, n=500, n_classes=4, strength=4.0):
    """3 modalities, 1 factor per node; the class follows the (a, b) and (c,) nodes (multinomial)."""
    lat = hx.Lattice.full(MODS)
    data, truth = hx.simulate(n=n, dims={m: 15 for m in MODS}, ranks={nd: 1 for nd in lat.nodes}, noise=0.5, seed=seed)
    rng = np.random.default_rng(seed + 100)
    Z = np.c_[truth.Z[("a", "b")], truth.Z[("c",)]]
    Z = Z / Z.std(axis=0)
    E = strength * Z @ rng.normal(size=(2, n_classes))
    P = np.exp(E - E.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    y = np.array([rng.choice(n_classes, p=p) for p in P])
    return data, y, {("a", "b"), ("c",)}


def test_a_10_class_style_integer_label_is_evaluated_as_multiclass_with_its_labels():
    data, y, drivers = multiclass_data(11)
    names = np.array(["cat", "dog", "emu", "yak"])
    # Integer codes 0-3 are multiclass by the same rule (tests/test_outcomes.py); here the labels are words.
    for outcome, classes, base in ((pd.Series(names[y], name="animal"), list(names), ["raw"]),):
        rep = hx.evaluate_prediction(hx.HCL(), data, outcome, baselines=base, n_bootstrap=30, random_state=0)
        assert rep.task == "multiclass" and rep.classes == classes and rep.positive_label is None
        assert set(rep.metrics.metric) == {"auroc", "f1_macro", "accuracy", "brier"}
        assert (rep.metrics.ci_low <= rep.metrics.value + 1e-12).all() and (rep.metrics.value <= rep.metrics.ci_high + 1e-12).all()
        assert rep.metric("auroc") > 0.8 and rep.metric("accuracy") > 0.55
        assert drivers <= set(rep.selected_nodes)
        cm = rep.confusion
        assert list(cm.index) == classes and list(cm.columns) == classes and cm.to_numpy().sum() == rep.counts["test"]
        assert rep.metric("accuracy") == pytest.approx(np.trace(cm.to_numpy()) / rep.counts["test"])
        assert list(rep.baselines.model) == ["HCL"] + (["raw features (L2-multinomial)"] if base else [])
        assert set(rep.curves["HCL"]["roc"]["class"]) == set(classes)
        back = PredictionReport.from_dict(json.loads(json.dumps(rep.to_dict())))
        assert back.task == "multiclass" and back.classes == classes and back.confusion.equals(cm)
        assert "confusion matrix" in str(rep)
    fig = rep.plot_curves()
    assert list(fig.data[0].x) == classes and "animal" in fig.layout.xaxis.title.text


def test_multiclass_needs_enough_samples_per_class_and_names_the_small_ones():
    data, y, _ = multiclass_data(12, n=600)
    yy = y.astype(float)
    yy[np.flatnonzero(y == 3)[3:]] = 2  # class 3 keeps 3 samples
    with pytest.raises(ValueError, match=r"fewer than 5 labelled samples .*'3' \(3\).*task='continuous'"):
        hx.evaluate_prediction(hx.HCL(), data, yy)


def test_the_refit_keeps_the_fitted_structure():
    data, y, drivers = outcome_data(13, "binary", n=1500, n_lab=400)
    model = hx.HCL().fit(data)
    fitted = {hx.node_label(n): r for n, r in model.ranks_.items() if r}
    rep = hx.evaluate_prediction(model, data, y, baselines=False, n_bootstrap=0)
    assert rep.structure["kept"] is True and rep.structure["used"] == rep.structure["fitted"] == fitted
    assert {hx.node_label(n) for n in rep.node_importance.node} == set(fitted)
    assert set(rep.selected_nodes) <= {n for n, r in model.ranks_.items() if r}
    assert any("Same structure as the fitted model" in n for n in rep.notes)
    assert not any("Structure not kept" in w for w in rep.warnings)


def test_where_the_structure_cannot_be_kept_the_report_says_so_and_carries_both():
    data, y, _ = outcome_data(14, "continuous", n=1500, n_lab=400)

    class NoFixed(hx.HCL):  # a model whose fixed-rank refit fails
        def fit(self, data, *a, **k):
            if isinstance(self.ranks, dict):
                raise ValueError("fixed ranks are not available here")
            return super().fit(data, *a, **k)

    model = NoFixed().fit(data)
    model.ranks_ = dict(model.ranks_)
    model.ranks_[("a", "b", "c")] = model.ranks_[("a", "b", "c")] + 3  # the fitted structure differs from a re-search
    rep = hx.evaluate_prediction(model, data, y, baselines=False, n_bootstrap=0)
    s = rep.structure
    assert s["kept"] is False and s["fitted"] != s["used"] and "could not be refitted" in s["note"]
    assert "fixed ranks are not available here" in s["note"]
    w = [w for w in rep.warnings if w.startswith("Structure not kept")]
    assert len(w) == 1 and "a+b+c" in w[0]
    back = PredictionReport.from_dict(json.loads(json.dumps(rep.to_dict())))
    assert back.structure == s


def test_warnings_small_test_part_ceiling_few_cases_missing_outcomes_and_p_over_n():
    rng = np.random.default_rng(15)
    n = 80
    z = rng.normal(size=n)
    X = {"genes": np.outer(z, rng.normal(size=100)) + 0.3 * rng.normal(size=(n, 100)),
         "lipids": np.outer(z, rng.normal(size=10)) + 0.3 * rng.normal(size=(n, 10))}
    data = hx.MultimodalData.from_arrays(X)
    y = np.where(z > 0, "ppar", "wt").astype(object)
    y[:30] = None  # 30 of 80 unlabelled
    rep = hx.evaluate_prediction(hx.HCL(), data, y, baselines=["raw"], n_bootstrap=20, cv=3, min_labelled=10)
    text = " | ".join(rep.warnings)
    assert rep.counts["test"] < 30 and "Small test part: only" in text
    assert rep.metric("auroc") == 1.0 and "AUROC 1.000" in text and f"on {rep.counts['test']} test samples: a metric at its ceiling" in text
    assert "Many missing outcomes: 30 of 80 samples (38%)" in text
    assert "More features than samples (p > n) — genes: 100 features" in text and "lipids" not in text.split("p > n")[1][:60]
    assert "raw-feature baseline has 110 features" in text
    assert rep.positive_label == "ppar"
    # Few minority cases: 12 positives among 300 labelled gives 3 in the test part.
    data2, y2, _ = outcome_data(16, "binary", n=800, n_lab=300)
    lab = np.flatnonzero(~np.isnan(y2))
    y2[lab] = 0.0
    y2[lab[:12]] = 1.0
    rep2 = hx.evaluate_prediction(hx.HCL(), data2, y2, baselines=False, n_bootstrap=0)
    assert any(w.startswith("Few minority cases: the test part has '1': 3 sample(s)") for w in rep2.warnings)
    assert not any("Small test part" in w for w in rep2.warnings)


def test_the_global_node_baseline_has_its_own_name_and_old_reports_still_read():
    data, y, _ = outcome_data(17, "continuous", n=900, n_lab=300)
    with pytest.warns(FutureWarning, match="'global_only' is now called 'global_node'"):
        rep = hx.evaluate_prediction(hx.HCL(), data, y, baselines=["global_only"], n_bootstrap=0)
    assert list(rep.baselines.model) == ["HCL", "HCL global node only"]
    with pytest.raises(ValueError, match=r"Unknown baselines \['lasso'\]; choose from"):
        hx.evaluate_prediction(hx.HCL(), data, y, baselines=["lasso"])
    old = rep.to_dict()
    for k in ("positive_label", "classes", "confusion", "warnings", "structure"):
        old.pop(k)  # a prediction JSON saved before these fields
    back = PredictionReport.from_dict(json.loads(json.dumps(old)))
    assert back.warnings == [] and back.confusion is None and back.positive_label is None and back.structure == {}
    assert back.metric("r2") == pytest.approx(rep.metric("r2"))
