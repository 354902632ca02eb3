"""The one outcome rule (hcl_explore/outcomes.py): kinds, positive levels, and the same decision
through load_outcomes, evaluate_prediction and the app's worker path."""

import json

import numpy as np
import pandas as pd
import pytest

import hcl_explore as hx
from hcl_explore.outcomes import OutcomeCoding, canonical_kind, format_label, outcome_kind, positive_level, supervised_task
from hcl_explore.predict import PredictionReport


@pytest.mark.parametrize("values,kind,classes,positive", [
    (["yes", "no", "no", None], "binary", ["no", "yes"], "yes"),
    (["No", "Yes", "Yes"], "binary", ["No", "Yes"], "Yes"),
    (["readmitted", "not readmitted", "not readmitted"], "binary", ["not readmitted", "readmitted"], "readmitted"),
    (["not readmitted", "readmitted", "readmitted", "readmitted"], "binary", ["not readmitted", "readmitted"], "readmitted"),
    (["wt", "ppar", "wt", "ppar"], "binary", ["wt", "ppar"], "ppar"),
    (["smoker", "non-smoker", "non-smoker"], "binary", ["non-smoker", "smoker"], "smoker"),
    (["control", "case", "control"], "binary", ["control", "case"], "case"),
    (["alive", "dead"], "binary", ["alive", "dead"], "dead"),
    (["a", "b", "b", "b"], "binary", ["b", "a"], "a"),  # no known word: the rarer level
    (["a", "b"], "binary", ["a", "b"], "b"),  # a tie: alphabetically last
    ([0, 1.0, np.nan, 1], "binary", ["0", "1"], "1"),
    ([1, 2, 2], "binary", ["1", "2"], "2"),
    (["1", "0", ""], "binary", ["0", "1"], "1"),
    ([True, False, False], "binary", ["False", "True"], "True"),
    (list(range(10)) * 3, "multiclass", [str(d) for d in range(10)], None),
    ([3.0, 1.0, 2.0, np.nan], "multiclass", ["1", "2", "3"], None),
    (["home", "snf", "rehab", "home"], "multiclass", ["home", "rehab", "snf"], None),
    ([0.5, 1.25, 3.0], "continuous", [], None),
    (list(range(40)), "continuous", [], None),  # many whole numbers: a count or a score, not classes
])
def test_kind_and_positive_level(values, kind, classes, positive):
    c = outcome_kind(values)
    assert (c.kind, c.classes, c.positive_label) == (kind, classes, positive)


def test_the_decision_travels_with_a_categorical_and_codes_round_trip():
    c = outcome_kind(["readmitted", "not readmitted", None, "readmitted"])
    codes = c.encode(["readmitted", "not readmitted", None, "readmitted"])
    assert np.array_equal(codes[[0, 1, 3]], [1, 0, 1]) and np.isnan(codes[2])
    assert list(c.decode(codes)) == ["readmitted", "not readmitted", None, "readmitted"]
    cat = c.categorical(["readmitted", "not readmitted", None, "readmitted"])
    # A categorical keeps its order even where the rule alone would decide otherwise.
    flipped = pd.Categorical(["a", "b", "b"], categories=["a", "b"])
    assert outcome_kind(pd.Series(cat, name="r")).positive_label == "readmitted"
    assert outcome_kind(flipped).positive_label == "b" and outcome_kind(["a", "b", "b"]).positive_label == "a"
    with pytest.raises(ValueError, match=r"'maybe' \(position 1\) is not one of the levels \['not readmitted', 'readmitted'\]"):
        c.encode(["readmitted", "maybe"])


def test_forced_kinds_and_refusals_name_the_outcome():
    assert outcome_kind(list(range(10)) * 2, "continuous").kind == "continuous"
    assert outcome_kind([1.5, 2.5, 3.5], "multiclass").classes == ["1.5", "2.5", "3.5"]
    assert canonical_kind("categorical") == "multiclass"
    with pytest.raises(ValueError, match="Unknown outcome kind 'ordinal'"):
        outcome_kind([0, 1], "ordinal")
    with pytest.raises(ValueError, match=r"Outcome 'grade' has text values \(e.g. 'x'\)"):
        outcome_kind(["x", "y"], "continuous", name="grade")
    with pytest.raises(ValueError, match="kind 'binary' needs two values, found 3"):
        outcome_kind([1, 2, 3], "binary")
    with pytest.raises(ValueError, match="constant"):
        outcome_kind(["yes", "yes", None])
    with pytest.raises(ValueError, match="25 distinct text values"):
        outcome_kind([f"t{i}" for i in range(25)])
    assert positive_level(["b", "a"], [1, 5]) == "b" and format_label(2.0) == "2" and format_label(0.25) == "0.25"


def test_supervised_task_is_the_rule_for_a_supervised_head():
    codes, task = supervised_task(np.array(["no", "yes", "yes", None], dtype=object))
    assert task == "binary" and list(codes[:3]) == [0, 1, 1] and np.isnan(codes[3])
    codes, task = supervised_task(np.array([2.0, 1.0, np.nan]))
    assert task == "binary" and list(codes[:2]) == [1, 0]  # 2 is positive, as the loader says
    codes, task = supervised_task(np.arange(12) % 4)
    assert task == "multiclass" and set(codes) == {0, 1, 2, 3}
    codes, task = supervised_task(np.linspace(0, 1, 7))
    assert task == "continuous" and codes[-1] == 1.0


# ------------------------------------------------------------------ one positive class everywhere
def _data_and_text_outcome(tmp_path, seed=0, n=400, words=("readmitted", "not readmitted")):
    """Two modalities; the outcome follows the global factor; written as text to a CSV file."""
    rng = np.random.default_rng(seed)
    lat = hx.Lattice.full(["a", "b"])
    data, truth = hx.simulate(n=n, dims={"a": 12, "b": 12}, ranks={nd: 1 for nd in lat.nodes}, noise=0.5, seed=seed)
    z = truth.Z[("a", "b")][:, 0]
    event = rng.random(n) < 1 / (1 + np.exp(-(2.5 * z / z.std() - 1.0)))  # the event is the minority
    text = np.where(event, words[0], words[1])
    ids = np.asarray(data.ids)
    pd.DataFrame({"id": ids, "readmission": text}).to_csv(tmp_path / "out.csv", index=False)
    return data, ids, text, event


@pytest.mark.parametrize("words", [("readmitted", "not readmitted"), ("yes", "no"), ("ppar", "wt")])
def test_a_text_outcome_gets_the_same_positive_class_through_loader_prediction_and_app(tmp_path, words):
    data, ids, text, event = _data_and_text_outcome(tmp_path, words=words)
    oc = hx.load_outcomes(tmp_path / "out.csv")
    assert oc.kinds == {"readmission": "binary"} and oc.positive["readmission"] == words[0]
    # The app's worker path: Outcomes.y -> pd.Series(..., name) -> evaluate_prediction.
    via_app = hx.evaluate_prediction(hx.HCL(), data, pd.Series(oc.y("readmission", data), name="readmission"),
                                     baselines=False, n_bootstrap=0)
    # The notebook path: the raw text straight into evaluate_prediction.
    via_text = hx.evaluate_prediction(hx.HCL(), data, pd.Series(text, index=ids, name="readmission"),
                                      baselines=False, n_bootstrap=0)
    for rep in (via_app, via_text):
        assert rep.task == "binary" and rep.positive_label == words[0] and rep.classes == [words[1], words[0]]
        assert rep.metric("auroc") > 0.75  # AUROC is about finding the positive (event) class
        assert list(rep.confusion.index) == [words[1], words[0]]
        assert int(rep.confusion.loc[words[0]].sum()) == int(round(0.25 * event.sum()))
        assert any(f"= {words[0]!r}" in n for n in rep.notes)
    assert via_app.metric("auroc") == pytest.approx(via_text.metric("auroc"))
    back = PredictionReport.from_dict(json.loads(json.dumps(via_app.to_dict())))
    assert back.positive_label == words[0] and back.confusion.equals(via_app.confusion)


def test_load_outcomes_digits_are_multiclass_and_kinds_can_be_forced(tmp_path):
    n = 60
    ids = [f"S{i}" for i in range(n)]
    pd.DataFrame({"sid": ids, "digit": np.arange(n) % 10, "visits": np.arange(n) % 4,
                  "score": np.linspace(0, 1, n)}).to_csv(tmp_path / "o.csv", index=False)
    oc = hx.load_outcomes(tmp_path / "o.csv")
    assert oc.kinds == {"digit": "multiclass", "visits": "multiclass", "score": "continuous"}
    assert oc.labels["digit"] == [str(d) for d in range(10)]
    assert oc.report["outcomes"]["digit"]["counts"]["7"] == 6
    forced = hx.load_outcomes(tmp_path / "o.csv", kinds={"visits": "continuous"})
    assert forced.kinds["visits"] == "continuous"
    with pytest.raises(hx.LoadError, match=r"o.csv: column 'score': .*kind 'binary' needs two values"):
        hx.load_outcomes(tmp_path / "o.csv", kinds={"score": "binary"})
    with pytest.raises(hx.LoadError, match=r"o.csv: kinds names column 'nope'"):
        hx.load_outcomes(tmp_path / "o.csv", kinds={"nope": "binary"})
    data = hx.MultimodalData.from_arrays({"a": np.random.default_rng(0).normal(size=(n, 3))}, ids=ids)
    cat = oc.y("digit", data)
    assert isinstance(cat, pd.Categorical) and list(cat.categories) == list(range(10)) and cat[13] == 3
    assert np.array_equal(oc.codes("digit", data), np.arange(n) % 10)
