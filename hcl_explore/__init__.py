"""hcl-explore: hierarchical contrastive learning over modality subsets.

Public API (README.md, "In Python"): :class:`Lattice`, :class:`MultimodalData`, :func:`simulate`, :class:`HCL`,
and :mod:`hcl_explore.metrics`.
"""

from . import metrics
from .data import MultimodalData, ParquetSource
from .io import (Dataset, LoadError, Outcomes, format_report, list_datasets, load_dataset, load_modalities,
                 load_outcomes, read_table, report_frame, truth_ranks)
from .lattice import Lattice, node_label
from .model import HCL, resolve_device
from .predict import PredictionReport, evaluate_prediction, fit_group_lasso
from .simulate import Truth, simulate

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
