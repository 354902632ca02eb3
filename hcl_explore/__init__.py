"""hcl-explore: hierarchical contrastive learning over modality subsets.

Public API (README.md, "In Python"): :class:`Lattice`, :class:`MultimodalData`, :func:`simulate`, :class:`HCL`,
and :mod:`hcl_explore.metrics`.
"""

import importlib
from typing import Any

# simulate is both a submodule and a function: imported now (no torch), so that a later import of
# the submodule cannot shadow the function (a lazily resolved name would become the module).
from .simulate import Truth, simulate

# Names are imported on first use (PEP 562): ``import hcl_explore`` stays light (no torch, which
# takes seconds to import), so the app's first page and a run worker's first status are quick;
# ``hcl_explore.HCL`` imports the model (and torch) when it is first touched.
_WHERE = {
    "MultimodalData": "data", "ParquetSource": "data",
    "Dataset": "io", "LoadError": "io", "Outcomes": "io", "format_report": "io", "list_datasets": "io",
    "load_dataset": "io", "load_modalities": "io", "load_outcomes": "io", "read_table": "io",
    "report_frame": "io", "truth_ranks": "io",
    "Lattice": "lattice", "node_label": "lattice",
    "HCL": "model", "resolve_device": "model",
    "PredictionReport": "predict", "evaluate_prediction": "predict", "fit_group_lasso": "predict",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    elif name == "metrics":
        value = importlib.import_module(".metrics", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "PredictionReport",
    "evaluate_prediction",
    "fit_group_lasso",
    "Dataset",
    "LoadError",
    "Outcomes",
    "format_report",
    "list_datasets",
    "load_dataset",
    "load_modalities",
    "load_outcomes",
    "read_table",
    "report_frame",
    "truth_ranks",
    "HCL",
    "Lattice",
    "MultimodalData",
    "ParquetSource",
    "Truth",
    "metrics",
    "node_label",
    "resolve_device",
    "simulate",
]
__version__ = "0.1.0"
