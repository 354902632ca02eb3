import numpy as np
import pytest

from hcl_explore import metrics as mt


def _rot(r, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(r, r)))
    return q


def test_subspace_distance_is_rotation_invariant_and_bounded():
    rng = np.random.default_rng(0)
    B = rng.normal(size=(30, 3))
    assert mt.subspace_distance(B, B @ _rot(3, 1) * 5.0) == pytest.approx(0.0, abs=1e-10)
    # Orthogonal subspaces: distance 1.
    E = np.eye(30)
    assert mt.subspace_distance(E[:, :2], E[:, 2:4]) == pytest.approx(1.0)
    # One of two directions shared: ||P - Q||^2 = 2, r = 2 -> sqrt(2 / 4)
    assert mt.subspace_distance(E[:, :2], E[:, [0, 5]]) == pytest.approx(np.sqrt(0.5))
    assert mt.subspace_distance(None, E[:, :1]) == 1.0
    assert mt.subspace_distance(E[:, :1], None) == 1.0
    assert mt.subspace_distance(None, None) == 0.0


def test_block_and_gram_measures_against_a_rotated_truth():
    rng = np.random.default_rng(1)
    node, priv = ("a", "b"), ("a",)
    true = {("a", node): rng.normal(size=(10, 2)), ("b", node): rng.normal(size=(8, 2)), ("a", priv): rng.normal(size=(10, 1))}
    R = _rot(2, 2)
    est = {("a", node): true[("a", node)] @ R, ("b", node): true[("b", node)] @ R, ("a", priv): -true[("a", priv)]}
    assert mt.mean_sin_theta(true, est) == pytest.approx(0.0, abs=1e-10)
    assert mt.overall_gram_error(true, est) == pytest.approx(0.0, abs=1e-10)
    assert mt.node_gram_errors(true, est)["gram_error"].max() == pytest.approx(0.0, abs=1e-10)
    # Untying the node (different rotations per modality) keeps block subspaces but breaks the Gram.
    est_untied = dict(est)
    est_untied[("b", node)] = true[("b", node)] @ _rot(2, 7)
    assert mt.mean_sin_theta(true, est_untied) == pytest.approx(0.0, abs=1e-10)
    assert mt.overall_gram_error(true, est_untied) > 0.05
    assert mt.node_gram_errors(true, est_untied).set_index("node").loc["a+b", "gram_error"] > 0.05
    # A missing block counts 1, an extra block counts 1.
    est_missing = {k: v for k, v in est.items() if k[1] != priv}
    df = mt.block_distances(true, est_missing)
    assert df.set_index(["modality", "node"]).loc[("a", "a"), "sin_theta"] == 1.0
    est_extra = dict(est)
    est_extra[("b", ("b",))] = rng.normal(size=(8, 1))
    assert mt.mean_sin_theta(true, est_extra) == pytest.approx(1.0 / 4)


def test_structure_scores_and_rank_accuracy():
    t = {("a",): 2, ("b",): 0, ("a", "b"): 3, ("b", "c"): 1}
    e = {("a",): 2, ("b",): 1, ("a", "b"): 2, ("b", "c"): 0}
    s = mt.structure_scores(t, e)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3)
    assert mt.rank_accuracy(t, e) == pytest.approx(1 / 4)
    assert mt.structure_scores(t, t)["f1"] == 1.0 and mt.rank_accuracy(t, t) == 1.0


def test_probe_r2_scores_recovery_and_leakage():
    import hcl_explore as hx
    from hcl_explore.metrics import probe_r2, probe_summary

    rng = np.random.default_rng(0)
    n = 2000
    Z = {("a",): rng.standard_normal((n, 2)), ("a", "b"): rng.standard_normal((n, 1)), ("b",): rng.standard_normal((n, 2))}
    Q = np.linalg.qr(rng.standard_normal((2, 2)))[0]
    scores = {("a",): Z[("a",)] @ Q + 3.0,  # a rotation and a shift: still perfect
              ("a", "b"): Z[("a", "b")] + 0.5 * Z[("b",)][:, :1]}  # leaks half of b's first factor; b missing
    T = probe_r2(scores, Z)
    assert list(T.index) == ["a", "a+b", "b"] and list(T.columns) == ["a", "a+b", "b", "others"]
    assert T.loc["a", "a"] > 0.999 and abs(T.loc["a", "b"]) < 0.01
    assert abs(T.loc["b", "b"]) < 0.01  # a node the model lacks scores 0
    assert 0.75 < T.loc["a+b", "a+b"] < 0.85  # 1 / (1 + 0.25)
    assert 0.05 < T.loc["a+b", "b"] < 0.15  # (0.25 / 1.25) on one of b's two factors, averaged
    assert 0.05 < T.loc["b", "others"] < 0.15  # b's factors from every other block: the same leak
    s = probe_summary(T)
    assert s["off_max"] == pytest.approx(T.loc["a+b", "b"], abs=1e-12)
    with pytest.raises(ValueError, match="4 rows"):
        probe_r2(scores, Z, rows=np.arange(3))
    assert hx.metrics.probe_r2 is probe_r2
