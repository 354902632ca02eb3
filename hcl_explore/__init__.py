"""hcl-explore: hierarchical contrastive learning over modality subsets.

Public API (DESIGN §4): :class:`Lattice`, :class:`MultimodalData`, :func:`simulate`, :class:`HCL`,
and :mod:`hcl_explore.metrics`.
"""

from . import metrics
from .data import MultimodalData, ParquetSource
from .lattice import Lattice, node_label
from .model import HCL, resolve_device
from .simulate import Truth, simulate

__all__ = [
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
