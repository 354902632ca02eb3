"""The one rule for what kind an outcome is and, when it has two levels, which level is positive.

Every part of hcl-explore that meets an outcome asks this module: the outcome loader
(:func:`hcl_explore.io.load_outcomes`), the prediction protocol
(:func:`hcl_explore.predict.evaluate_prediction`), the app's Prediction page, and the contrastive
estimator's supervised head (``HCL.fit(data, y=...)``). So a text outcome such as ``"yes"/"no"`` or
``"readmitted"/"not readmitted"`` gets the same kind and the same positive class wherever it goes.

The rule (:func:`outcome_kind`; README.md, section "Prediction", shows it in use; docs/architecture.md
lists this module among the others):

* **binary**: exactly two distinct values. The positive level is, in this order,
  1. for numbers (and booleans): the larger value (1 of 0/1, ``True``, 2 of 1/2);
  2. for text: the one level that is a known "event" word (``yes``, ``true``, ``case``,
     ``readmitted``, ``dead``, ...);
  3. else the other level when exactly one is a known "reference" word or a negation
     (``no``, ``control``, ``wt``, ``healthy``, ``not readmitted``, ``non-smoker``, ...);
  4. else the rarer level (the event is usually the minority), ties broken by the
     alphabetically last level.
* **multiclass**: 3 to ``max_classes`` (20) distinct values that are text, or whole numbers
  (a digit label 0-9 is ten classes, not a number to regress on).
* **continuous**: numbers otherwise (fractional values, or more than ``max_classes`` whole
  numbers).
* text with more than ``max_classes`` levels is no outcome (free text); :func:`outcome_kind`
  raises a ValueError saying so.

A decided outcome is an :class:`OutcomeCoding`: the kind, the original labels in code order
(binary: ``[negative, positive]``; multiclass: numbers ascending or text sorted) and ``encode``
/ ``decode`` between labels and the codes the numerics use (0/1, or 0..K-1). A pandas
``Categorical`` (what :meth:`hcl_explore.io.Outcomes.y` returns for binary and multiclass
columns) carries its coding with it: its categories are the labels in code order, so the loader's
decision travels into :func:`~hcl_explore.predict.evaluate_prediction` unchanged.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

KINDS = ("binary", "multiclass", "continuous")
"""The outcome kinds. ``"categorical"`` (the loader's earlier name for multiclass) is read as ``"multiclass"``."""

MAX_CLASSES = 20
"""Most distinct values a multiclass outcome may have (text or whole numbers)."""

POSITIVE_WORDS = frozenset({
    "1", "true", "t", "yes", "y", "positive", "pos", "+", "case", "cases", "event", "events", "dead", "died",
    "death", "deceased", "readmitted", "readmission", "relapse", "relapsed", "recurrence", "progression",
    "progressed", "responder", "response", "disease", "diseased", "sick", "ill", "abnormal", "affected",
    "present", "mutant", "mut", "ko", "knockout", "treated", "treatment", "exposed", "high", "failure", "failed",
    "malignant", "tumor", "tumour", "cancer", "infected", "detected", "reactive", "fail",
})
"""Text levels taken as the positive (event) class of a binary outcome (compared in lower case)."""

NEGATIVE_WORDS = frozenset({
    "0", "false", "f", "no", "n", "negative", "neg", "-", "control", "controls", "ctrl", "healthy", "normal",
    "none", "absent", "alive", "survived", "censored", "wt", "wildtype", "wild type", "wild-type", "reference",
    "ref", "untreated", "unexposed", "placebo", "low", "benign", "non-responder", "nonresponder",
    "not detected", "nonreactive", "non-reactive", "unaffected", "pass", "success",
})
"""Text levels taken as the reference (negative) class of a binary outcome (compared in lower case)."""

_NEGATION = re.compile(r"^(not|no|non|without|un)[\s\-_]+\S|^non\S", re.IGNORECASE)


def canonical_kind(kind: str) -> str:
    """``kind`` in this module's vocabulary (``"categorical"`` -> ``"multiclass"``); ValueError otherwise."""
    k = str(kind)
    if k == "categorical":
        return "multiclass"
    if k not in KINDS:
        raise ValueError(f"Unknown outcome kind {kind!r}; one of {list(KINDS)}.")
    return k


def format_label(v: Any) -> str:
    """How a level is shown: whole numbers without ``.0`` (``1.0`` -> ``"1"``), others as given."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return str(int(f)) if math.isfinite(f) and f == int(f) and abs(f) < 1e15 else f"{f:g}"
    return str(v)


def _is_negative_word(label: str) -> bool:
    s = label.strip().lower()
    return s in NEGATIVE_WORDS or bool(_NEGATION.match(s)) and s not in POSITIVE_WORDS


def positive_level(levels: Sequence[Any], counts: Sequence[int] | None = None) -> Any:
    """The positive level of a two-level outcome by the rule above (numbers: the larger; text: the
    event word, else the level opposite a reference word or negation, else the rarer, ties
    alphabetically last). ``counts`` (same order as ``levels``) is only needed for the last step."""
    levels = list(levels)
    if len(levels) != 2:
        raise ValueError(f"A binary outcome has two levels, got {len(levels)}: {levels[:5]}.")
    if all(_is_number(v) for v in levels):
        return max(levels, key=float)
    text = [str(v) for v in levels]
    pos = [i for i, s in enumerate(text) if s.strip().lower() in POSITIVE_WORDS]
    if len(pos) == 1:
        return levels[pos[0]]
    neg = [i for i, s in enumerate(text) if _is_negative_word(s)]
    if len(neg) == 1:
        return levels[1 - neg[0]]
    if counts is not None and counts[0] != counts[1]:
        return levels[int(np.argmin(counts))]
    return max(levels, key=str)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating, bool, np.bool_)) and not isinstance(v, str)


@dataclass(frozen=True)
class OutcomeCoding:
    """An outcome's kind and its labels in code order.

    ``labels``: binary ``[negative, positive]``; multiclass the K levels (code k = ``labels[k]``);
    continuous ``[]``. ``display`` gives each label as shown (``1.0`` -> ``"1"``).
    """

    kind: str
    labels: tuple

    @property
    def classes(self) -> list[str]:
        """The labels as shown to people, in code order."""
        return [format_label(v) for v in self.labels]

    @property
    def positive(self) -> Any:
        """The positive label of a binary outcome (None otherwise)."""
        return self.labels[1] if self.kind == "binary" else None

    @property
    def positive_label(self) -> str | None:
        """The positive label as shown (None unless binary)."""
        return format_label(self.labels[1]) if self.kind == "binary" else None

    def encode(self, values: Any) -> np.ndarray:
        """Codes (float; NaN = missing): 0/1 (binary), 0..K-1 (multiclass), the values (continuous).
        A value that is not one of the labels is a ValueError naming it."""
        s = _as_series(values)
        if self.kind == "continuous":
            return pd.to_numeric(s, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan).copy()
        out = np.full(len(s), np.nan)
        ok = s.notna().to_numpy()
        keys = {_key(v): k for k, v in enumerate(self.labels)}
        vals = s.to_numpy(dtype=object)
        for i in np.flatnonzero(ok):
            k = keys.get(_key(vals[i]))
            if k is None:
                raise ValueError(f"Outcome value {vals[i]!r} (position {i}) is not one of the levels {self.classes}.")
            out[i] = k
        return out

    def decode(self, codes: Any) -> np.ndarray:
        """Original labels (object array; None where the code is NaN) of codes from :meth:`encode`."""
        c = np.asarray(codes, dtype=np.float64)
        out = np.empty(c.shape, dtype=object)
        for i, v in np.ndenumerate(c):
            out[i] = None if not np.isfinite(v) else self.labels[int(v)]
        return out

    def categorical(self, values: Any) -> pd.Categorical:
        """The values as a pandas Categorical whose categories are the labels in code order (the
        carrier that keeps this coding, e.g. through ``pd.Series(..., name=...)``)."""
        if self.kind == "continuous":
            raise ValueError("A continuous outcome has no categories.")
        codes = self.encode(values)
        return pd.Categorical.from_codes(np.where(np.isnan(codes), -1, codes).astype(int),
                                         categories=pd.Index(list(self.labels), dtype=object))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "labels": self.classes}


def _key(v: Any) -> Any:
    """A hashable key that matches 1, 1.0, np.int64(1) and "1" alike, and text stripped."""
    if _is_number(v):
        f = float(v)
        return ("n", f)
    s = str(v).strip()
    try:
        return ("n", float(s))
    except ValueError:
        return ("s", s)


def _as_series(values: Any) -> pd.Series:
    if isinstance(values, pd.Series):
        return values.reset_index(drop=True)
    if isinstance(values, pd.Categorical):
        return pd.Series(np.asarray(values, dtype=object))
    arr = np.asarray(values)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    return pd.Series(arr)


def _missing(s: pd.Series) -> np.ndarray:
    m = s.isna().to_numpy().copy()
    if s.dtype.kind == "O":
        m |= np.array([isinstance(x, str) and not x.strip() for x in s], dtype=bool)
    return m


def outcome_kind(values: Any, kind: str = "auto", *, max_classes: int = MAX_CLASSES,
                 name: str | None = None) -> OutcomeCoding:
    """Decide an outcome's kind and coding by the module's rule.

    Parameters
    ----------
    values : array-like, Series or Categorical (missing values: NaN / None / blank text).
        A Categorical (or categorical Series) keeps its categories as the labels in code order
        (two categories: the second is positive), so a decision made once is not made again.
    kind : "auto" or a kind to force ("binary", "multiclass", "continuous"; "categorical" is read
        as "multiclass"). Forcing checks that the values allow it.
    max_classes : most levels a multiclass outcome may have.
    name : the outcome's name, for error messages.
    """
    what = f"Outcome {name!r}" if name else "The outcome"
    if kind != "auto":
        kind = canonical_kind(kind)
    cat = values.dtype if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype) else (
        values.dtype if isinstance(values, pd.Categorical) else None)
    if cat is not None:
        labels = tuple(cat.categories)
        present = pd.Series(values).dropna().unique()
        if kind == "continuous":
            raise ValueError(f"{what} is categorical (levels {[format_label(v) for v in labels][:10]}); "
                             "it cannot be treated as continuous.")
        if len(labels) == 2 and kind in ("auto", "binary"):
            return OutcomeCoding("binary", labels)
        if kind == "binary" and len(present) != 2:
            raise ValueError(f"{what}: kind 'binary' needs two levels, found {len(present)}.")
        if kind == "binary":
            lv = [v for v in labels if v in set(present)]
            return OutcomeCoding("binary", tuple(lv))
        if len(labels) > max_classes:
            raise ValueError(f"{what} has {len(labels)} levels; at most {max_classes} classes are supported.")
        return OutcomeCoding("multiclass", labels)
    s = _as_series(values)
    miss = _missing(s)
    obs = s[~miss]
    if obs.empty:
        raise ValueError(f"{what} has no values.")
    if s.dtype.kind == "b" or all(isinstance(x, (bool, np.bool_)) for x in obs):
        nums = obs.astype(bool).astype(float)
        levels = [False, True]
        present = sorted(set(nums))
        if kind == "continuous":
            raise ValueError(f"{what} is boolean; it cannot be treated as continuous.")
        if len(present) < 2:
            raise ValueError(f"{what} is constant ({bool(present[0])}); nothing to predict.")
        return OutcomeCoding("binary", tuple(levels))
    num = pd.to_numeric(obs, errors="coerce") if obs.dtype.kind not in "iuf" else obs.astype(np.float64)
    numeric = bool(num.notna().all())
    if numeric:
        v = num.to_numpy(dtype=np.float64)
        levels = np.unique(v[np.isfinite(v)])
        if levels.size == 0:
            raise ValueError(f"{what} has no finite values.")
        whole = bool(np.all(levels == np.round(levels)))
        py = tuple(int(x) if whole else float(x) for x in levels)
        if kind == "continuous":
            return OutcomeCoding("continuous", ())
        if levels.size == 1:
            raise ValueError(f"{what} is constant ({format_label(levels[0])}); nothing to predict.")
        if kind == "binary" or (kind == "auto" and levels.size == 2):
            if levels.size != 2:
                raise ValueError(f"{what}: kind 'binary' needs two values, found {levels.size}.")
            pos = positive_level(list(py))
            return OutcomeCoding("binary", (py[0], py[1]) if pos == py[1] else (py[1], py[0]))
        if kind == "multiclass" or (kind == "auto" and whole and levels.size <= max_classes):
            if levels.size > max_classes:
                raise ValueError(f"{what} has {levels.size} distinct values; at most {max_classes} classes are supported.")
            return OutcomeCoding("multiclass", py)
        return OutcomeCoding("continuous", ())
    text = pd.Series([str(x).strip() for x in obs], dtype=object)
    vc = text.value_counts(sort=False)
    levels_t = sorted(vc.index)
    if kind == "continuous":
        bad = obs[pd.to_numeric(obs, errors="coerce").isna()]
        raise ValueError(f"{what} has text values (e.g. {bad.iloc[0]!r}); a continuous outcome must be numbers.")
    if len(levels_t) == 1:
        raise ValueError(f"{what} is constant ({levels_t[0]!r}); nothing to predict.")
    if kind == "binary" or (kind == "auto" and len(levels_t) == 2):
        if len(levels_t) != 2:
            raise ValueError(f"{what}: kind 'binary' needs two levels, found {len(levels_t)}.")
        pos = positive_level(levels_t, [int(vc[x]) for x in levels_t])
        neg = levels_t[0] if pos == levels_t[1] else levels_t[1]
        return OutcomeCoding("binary", (neg, pos))
    if len(levels_t) > max_classes:
        raise ValueError(f"{what} has {len(levels_t)} distinct text values (e.g. {levels_t[:3]}); at most "
                         f"{max_classes} classes are supported (free text is not an outcome).")
    return OutcomeCoding("multiclass", tuple(levels_t))


def supervised_task(y: Any) -> tuple[np.ndarray, str]:
    """For a supervised head (e.g. the contrastive estimator's): ``(codes, task)``.

    ``task`` is "binary" (codes 0/1, 1 = the positive level by this module's rule),
    "multiclass" (codes 0..K-1) or "continuous" (the values); NaN where ``y`` is missing.
    """
    coding = outcome_kind(y)
    return coding.encode(y), coding.kind
