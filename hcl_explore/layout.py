"""The stacked loading layout (docs/architecture.md): features of all modalities stacked in
modality order (rows, D = sum d_m), factors of all present nodes stacked in node order (columns,
R = sum r_S). Every module that cuts W, scores or covariances into blocks uses these."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .lattice import Node

__all__ = ["block_slices", "node_columns", "column_nodes", "support_mask", "stack_loadings", "split_loadings",
           "canonical_rotation"]


def block_slices(modalities: Sequence[str], dims: Mapping[str, int]) -> dict[str, slice]:
    """Row slice of each modality in the stacked feature vector."""
    out, start = {}, 0
    for m in modalities:
        out[m] = slice(start, start + dims[m])
        start += dims[m]
    return out


def node_columns(nodes: Sequence[Node], ranks: Mapping[Node, int]) -> dict[Node, slice]:
    """Column slice of each node in the stacked W (nodes in the given order)."""
    out, start = {}, 0
    for node in nodes:
        out[node] = slice(start, start + ranks[node])
        start += ranks[node]
    return out


def column_nodes(nodes: Sequence[Node], ranks: Mapping[Node, int]) -> list[Node]:
    """The node of each column of the stacked W (R,)."""
    return [n for n in nodes for _ in range(ranks[n])]


def canonical_rotation(W: np.ndarray, col_nodes: Sequence[Node]) -> np.ndarray:
    """``W`` (D, R) with each node's columns rotated to orthogonal, by decreasing norm.

    ``z ~ N(0, I)`` makes a node's columns identifiable only up to a rotation, so this changes
    neither the model nor its likelihood: it picks the PCA-like basis in which factor 1 of a node
    explains the most variance, and its scores (``HCL.transform``) are orthonormal coordinates.
    Signs: the largest-magnitude loading of each column is positive (deterministic output).
    """
    W = np.array(W, dtype=np.float64, copy=True)
    col_node = list(col_nodes)
    for node in dict.fromkeys(col_node):
        cols = np.array([j for j, t in enumerate(col_node) if t == node])
        if cols.size == 0:
            continue
        U, s, _ = np.linalg.svd(W[:, cols], full_matrices=False)
        B = U * s
        big = np.abs(B).argmax(axis=0)
        B *= np.where(B[big, np.arange(B.shape[1])] < 0, -1.0, 1.0)
        W[:, cols] = B
    return W


def support_mask(modalities: Sequence[str], dims: Mapping[str, int], nodes: Sequence[Node], ranks: Mapping[Node, int]) -> np.ndarray:
    """Bool (D, R): entry (i, j) may be non-zero iff feature i's modality is in column j's node."""
    sl = block_slices(modalities, dims)
    mask = np.zeros((sum(dims[m] for m in modalities), sum(ranks[n] for n in nodes)), dtype=bool)
    for node, cols in node_columns(nodes, ranks).items():
        for m in node:
            mask[sl[m], cols] = True
    return mask


def stack_loadings(
    loadings: Mapping[tuple[str, Node], np.ndarray],
    modalities: Sequence[str],
    dims: Mapping[str, int],
    nodes: Sequence[Node],
    ranks: Mapping[Node, int],
) -> np.ndarray:
    """Stack per-(modality, node) blocks into W of shape (sum d_m, sum_S r_S); inverse of
    :func:`split_loadings`."""
    sl = block_slices(modalities, dims)
    W = np.zeros((sum(dims[m] for m in modalities), sum(ranks[n] for n in nodes)))
    for node, cols in node_columns(nodes, ranks).items():
        for m in node:
            W[sl[m], cols] = loadings[(m, node)]
    return W


def split_loadings(
    W: np.ndarray,
    modalities: Sequence[str],
    dims: Mapping[str, int],
    nodes: Sequence[Node],
    ranks: Mapping[Node, int],
) -> dict[tuple[str, Node], np.ndarray]:
    """Blocks ``{(modality, node): (d_m, r_S)}`` (views) of a stacked W (D, R)."""
    sl = block_slices(modalities, dims)
    return {(m, node): W[sl[m], cols] for node, cols in node_columns(nodes, ranks).items() for m in node}
