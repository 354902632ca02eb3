"""Small real multi-view data sets vendored under ``benchmarks/data/`` (see its README.md).

    from benchmarks.real_data import REAL_DATASETS, load_real
    data, labels = load_real("mfeat")   # hx.MultimodalData, {"digit": (2000,) array}

Each ``<name>.npz`` holds ``views`` (modality names in order), ``ids``, ``X__<view>`` (float32,
samples x features), ``features__<view>`` (feature names) and ``label__<label>`` (one per label).
No view has missing rows in these sets; every sample has every modality.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import hcl_explore as hx  # noqa: E402

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

#: name -> one line on what it is (views x features).
REAL_DATASETS_INFO = {
    "nutrimouse": "40 mice: hepatic gene expression (120) + fatty acids (21); labels genotype (2), diet (5)",
    "covid_serology": "438 sera: 6 SARS-CoV-2 antigens x 11 antibody/Fc-receptor readouts; label status (5)",
    "mfeat": "2,000 handwritten digits, UCI Multiple Features: fou 76, fac 216, kar 64, pix 240, zer 47, "
             "mor 6; label digit (10)",
}
REAL_DATASETS = list(REAL_DATASETS_INFO)


def load_real(name: str) -> tuple[hx.MultimodalData, dict[str, np.ndarray]]:
    """Load a vendored data set: ``(MultimodalData, {label name: (n,) array})``.

    Features are float32 as stored (original units: fit with ``standardize=True`` or ``"auto"``).
    """
    if name not in REAL_DATASETS_INFO:
        raise ValueError(f"Unknown real data set {name!r}; available: {REAL_DATASETS}.")
    with np.load(os.path.join(DATA_DIR, f"{name}.npz"), allow_pickle=False) as z:
        views = [str(v) for v in z["views"]]
        X = {v: z[f"X__{v}"] for v in views}
        feats = {v: [str(f) for f in z[f"features__{v}"]] for v in views}
        ids = z["ids"]
        labels = {k[len("label__"):]: z[k] for k in z.files if k.startswith("label__")}
    data = hx.MultimodalData(X, ids=ids, feature_names=feats)
    return data, labels


if __name__ == "__main__":
    for nm in REAL_DATASETS:
        d, lab = load_real(nm)
        print(nm, d, {k: (v.shape, len(np.unique(v))) for k, v in lab.items()})
