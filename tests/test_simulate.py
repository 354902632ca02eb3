import numpy as np
import pytest

import hcl_explore as hx


def test_simulate_follows_the_generative_model():
    ranks = {("a", "b", "c"): 2, ("a", "b"): 1, ("c",): 3}
    data, truth = hx.simulate(n=4000, dims=(20, 15, 10), ranks=ranks, noise=[0.2, 0.5, 0.1], seed=3)
    assert data.modalities == ["a", "b", "c"] and data.n_samples == 4000
    assert truth.ranks[("a", "b", "c")] == 2 and truth.ranks[("a", "c")] == 0 and truth.ranks[("c",)] == 3
    assert truth.nodes == [("c",), ("a", "b"), ("a", "b", "c")]
    assert truth.loadings[("a", ("a", "b"))].shape == (20, 1)
    assert ("c", ("a", "b")) not in truth.loadings  # structural sparsity
    assert truth.Z[("a", "b", "c")].shape == (4000, 2)
    # Reconstruct exactly: X - sum B z is pure noise with the stated variance.
    resid = data.X["b"] - sum(truth.Z[n] @ truth.loadings[("b", n)].T for n in truth.nodes if "b" in n)
    assert abs(resid.var() - 0.5) < 0.02
    # Population covariance matches the sample covariance.
    X = np.hstack([data.X[m] for m in data.modalities])
    err = np.linalg.norm(np.cov(X.T) - truth.covariance()) / np.linalg.norm(truth.covariance())
    assert err < 0.1


def test_simulate_is_seeded_and_missing_fraction():
    d1, _ = hx.simulate(n=1000, dims=(5, 5, 5), ranks=1, missing=0.2, seed=9)
    d2, _ = hx.simulate(n=1000, dims=(5, 5, 5), ranks=1, missing=0.2, seed=9)
    np.testing.assert_array_equal(np.nan_to_num(d1.X["a"]), np.nan_to_num(d2.X["a"]))
    lacking = (~d1.observed).sum(axis=1)
    assert lacking.max() == 1  # never more than one modality missing
    assert 0.15 < (lacking == 1).mean() < 0.25


def test_simulate_named_modalities_and_errors():
    data, truth = hx.simulate(n=50, dims={"labs": 4, "notes": 6}, ranks={"labs": 1, ("notes", "labs"): 2}, seed=0)
    assert data.modalities == ["labs", "notes"]
    assert truth.ranks[("labs", "notes")] == 2
    with pytest.raises(ValueError, match="not in the lattice"):
        hx.simulate(n=50, dims=(3, 3), ranks={("a", "b"): 1}, lattice=hx.Lattice(["a", "b"], [("a",), ("b",)]))
    with pytest.raises(ValueError, match="Unknown modality"):
        hx.simulate(n=50, dims=(3, 3), ranks={("a", "q"): 1})
    with pytest.raises(ValueError, match="noise"):
        hx.simulate(n=50, dims=(3, 3), noise=[0.1, 0.2, 0.3])
