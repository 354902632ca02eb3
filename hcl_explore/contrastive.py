"""The contrastive HCL estimator (README.md, "In Python"): the torch module, its losses and the training loop.

The user-facing estimator is :class:`hcl_explore.HCL` with ``estimator="contrastive"``; this module
holds what it drives (scvi-tools style):

* :class:`HCLModule` - the network: per-(modality, node) encoders, per-modality decoders and an
  optional supervised head. Nothing about data loading, devices or stopping lives in it.
* :func:`batch_losses` - the loss terms of one minibatch (pure function of module outputs).
* :func:`train` - minibatch training with a validation split, early stopping measured in the
  validation loss's own noise, a time budget (``max_time``), mixed precision on CUDA, per-epoch
  checkpoints and resume.
* :func:`node_scores` - the node blocks of new samples (what ``HCL.transform`` returns).

Losses, for one minibatch (all computed in float32)
---------------------------------------------------
Encoder ``f_{m,S}`` maps the standardized ``x_m`` to an ``r_S``-dim block for every node ``S``
containing ``m``. Each block is *batch-standardized*: every coordinate centred and scaled to unit
variance over the batch rows that observe ``m`` (call it ``h_{m,S}``). This rules out collapse and
puts all modalities of a node on one scale.

* **contrastive**: with ``contrast="nested"`` (default) one term per modality pair ``{m, m'}``
  that some shared node contains: ``a_i`` and ``b_j`` are the blocks of *every* shared node
  containing both modalities, side by side (``r`` = their total width), over the rows ``i``
  observing both. With ``contrast="node"`` one term per shared node S and pair in S, comparing
  only the S blocks (``r = r_S``); a node's term is then the mean over its pairs.

  - ``loss="infonce"``: logits ``l_ij = -||a_i - b_j||^2 / (2 tau r)`` (a Gaussian kernel; the
    positive pair is the same sample), symmetric cross-entropy
    ``(CE(l, diag) + CE(l^T, diag)) / 2``.
  - ``loss="paper"``: the paper's form linear in the similarities,
    ``mean_{i != j} s_ij - mean_i s_ii`` with ``s_ij = <a_i, b_j> / r``.

  Cosine similarity is replaced by ``<a, b> / r`` of batch-standardized blocks (their squared
  norm is ``r`` on average, so this is the cosine up to per-sample norm fluctuations) because with
  ``r = 1`` a cosine is +-1 and has no gradient. The contrastive loss is the mean over terms. Each
  node's blocks are compared only between modalities the node contains.

  Why nested: with one term per node, a pair node {a, b} is rewarded for *anything* a and b share,
  including what the global node carries; each modality's global block is a noisy estimate of the
  global factors, so the pair block learns their residual (uncorrelated with the global block,
  hence untouched by the decorrelation term) and leaks. Summing the similarities of all nodes a
  pair shares makes the global block already account for the global factors in every pair's
  term, so a pair block gains only from what is specific to its pair. On nonlinear data
  (n = 20,000, full lattice, 2 factors per node; ``benchmarks/probe_contrastive.py``) per-node
  contrast recovered pair nodes worse than the linear estimator (probe R^2 0.77-0.80 against
  0.86) with leakage up to 0.1; nested contrast recovers them at 0.88-0.91 with leakage < 0.01.
* **reconstruction** (weight ``reconstruction_weight``): a decoder per modality maps the
  concatenation of all of that modality's raw blocks to ``x_m``; mean squared error per feature,
  over the rows observing ``m``. The shared blocks enter *detached*, so the reconstruction trains
  the private encoder (and the decoder) on what the shared nodes leave, and never pulls private
  signal into a shared block.
* **decorrelation** (weight ``decorrelation_weight``): per modality, the sum of the squared
  off-diagonal entries of the correlation matrix of all its standardized blocks side by side
  (between blocks of different nodes and within a block), plus, with ``decorrelation="quadratic"``
  (default), the squared correlations between every block coordinate and the degree-2 monomials
  ``h_i h_j`` of each *other* node's block (batch-standardized): a nonlinear encoder can carry a
  square or product of another node's factors, which is uncorrelated with them; divided by the
  number of its block coordinates R_m, over the rows observing it; the mean over modalities.
* **supervised** (weight ``supervised_weight``, only when ``fit(..., y=...)``): a linear head on the
  node scores (for each node the mean of its present modalities' standardized blocks): MSE for a
  continuous outcome, logistic loss for a 0/1 outcome, over the labelled rows.

A sample missing modality ``m`` contributes nothing to any term that involves ``m``.

How the terms are computed (speed)
----------------------------------
:func:`batch_losses` evaluates the terms above with a few whole-batch operations (a plan of index
tensors is built once per module, :class:`_LossPlan`): the blocks of all modalities are
standardized as one ``(b, T)`` matrix; all contrastive pairs are one batched product
``(pairs, b, b)`` of zero-padded blocks, the InfoNCE logits coming from inner products and norms
(the ``-|a_i|^2`` of a row and ``-|b_j|^2`` of a column cancel in their softmax, so no pairwise
distance matrix is formed); the whole decorrelation term is one ``H^T [H, Q]`` product weighted
by a fixed mask. Rows missing a modality are masked (weights and ``-inf``-like logits), not
indexed, so nothing waits for the device; batches where every row has every modality skip the
masks (the caller knows it from the host copy of the mask). The values and gradients equal the
per-term formulas (``tests/test_contrastive.py``). On CPU the step then costs about what a plain
MLP autoencoder of the same widths costs (``benchmarks/bench_contrastive.py``).

Encoders
--------
``encoder="mlp"``: per (modality, node) an MLP with the given hidden widths plus a bias-free linear
skip path from the input (:class:`GroupedMLP`). ``init="linear"`` (default) starts the skip path at
the linear estimator's least-squares projection of each modality onto its node loadings and the
MLP's last layer at zero, so training starts from the linear solution and the network learns the
nonlinear correction; ``init="random"`` uses torch's default initialization.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from .contrastive_stream import HostBatch
from .lattice import Node, node_label

Callback = Callable[[str, dict], None]
LOSSES = ("infonce", "paper")
ENCODERS = ("linear", "mlp")
CHECKPOINT_NAME = "checkpoint.pt"
_EPS = 1e-5
#: On the CPU, a network whose widest encoder layer costs fewer multiply-adds per minibatch than
#: this trains with one intra-op thread (restored afterwards): its operations are too small for
#: threads to gain, and on a busy machine threads that wait on each other made every step 10-40x
#: slower (3 x 30 features, hidden 128: 2 threads 0.3-2.7 s per step against 0.06 s with one,
#: load 6-8 on 2 cores). Larger networks keep torch's setting.
SMALL_WORK_MACS = 8_000_000


# ---------------------------------------------------------------------------------------------- module
class GroupedMLP(nn.Module):
    """``K`` independent MLPs that share only their input: ``d_in -> hidden... -> out_sizes[k]``.

    Equivalent to ``K`` separate ``nn.Sequential`` MLPs (ReLU between layers), computed as one wide
    first layer and batched (einsum) later layers. ``hidden=()`` gives ``K`` linear maps. The output
    is the ``K`` outputs side by side, shape ``(b, sum(out_sizes))``. With ``skip=True`` (and hidden
    layers) a bias-free linear map of the input is added to the output: the MLP learns a
    correction to a linear encoder, which :meth:`set_linear` can start from a known solution.
    """

    def __init__(self, d_in: int, out_sizes: Sequence[int], hidden: Sequence[int] = (), skip: bool = False):
        super().__init__()
        self.out_sizes = [int(r) for r in out_sizes]
        self.hidden = [int(h) for h in hidden]
        K = len(self.out_sizes)
        self.skip = None
        if not self.hidden:
            self.first = nn.Linear(d_in, sum(self.out_sizes))
            return
        if skip:
            self.skip = nn.Linear(d_in, sum(self.out_sizes), bias=False)
        self.first = nn.Linear(d_in, K * self.hidden[0])
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        widths = self.hidden + [max(self.out_sizes)]
        for h_in, h_out in zip(widths[:-1], widths[1:]):
            bound = 1.0 / math.sqrt(h_in)
            self.weights.append(nn.Parameter(torch.empty(K, h_in, h_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(K, h_out).uniform_(-bound, bound)))
        r_max = widths[-1]
        keep = [k * r_max + j for k, r in enumerate(self.out_sizes) for j in range(r)]
        self.register_buffer("keep", torch.tensor(keep, dtype=torch.long), persistent=False)
        self.keep_all = len(keep) == K * r_max  # equal block sizes: no columns to drop (no gather)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first(x)
        if not self.hidden:
            return h
        K = len(self.out_sizes)
        h = h.view(x.shape[0], K, self.hidden[0])
        for W, b in zip(self.weights, self.biases):
            h = torch.einsum("bki,kio->bko", F.relu(h), W) + b
        h = h.reshape(x.shape[0], -1)
        if not self.keep_all:
            h = h[:, self.keep]
        return h if self.skip is None else h + self.skip(x)

    @torch.no_grad()
    def set_linear(self, P: torch.Tensor) -> None:
        """Make the map start as ``x -> x @ P.T`` (``P``: ``(sum(out_sizes), d_in)``): the linear
        layer (no hidden layers) or the skip path takes ``P``, and the MLP's last layer is zeroed
        so that it adds nothing until training moves it."""
        if not self.hidden:
            self.first.weight.copy_(P)
            self.first.bias.zero_()
            return
        if self.skip is None:
            raise ValueError("set_linear needs skip=True when the map has hidden layers.")
        self.skip.weight.copy_(P)
        self.weights[-1].zero_()
        self.biases[-1].zero_()


def _mlp(d_in: int, d_out: int, hidden: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(d_in, h), nn.ReLU()]
        d_in = h
    layers.append(nn.Linear(d_in, d_out))
    return nn.Sequential(*layers)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) \
        and math.isfinite(float(v))


def check_options(**opts: Any) -> None:
    """Check the contrastive estimator's numeric options that are given; a ValueError names the
    first bad one. ``hidden``: a sequence of positive integer widths (empty: no hidden layer);
    ``batch_size``, ``max_epochs``, ``patience``, ``shuffle_buffer``: integers >= 1; ``lr``, ``temperature``: numbers
    > 0; ``weight_decay``: a number >= 0; ``val_fraction``: a number in [0, 1); ``lr_decay``: a
    number in (0, 1]; ``max_time``: None or seconds > 0."""
    if "hidden" in opts:
        h = opts["hidden"]
        if isinstance(h, (str, bytes)) or not isinstance(h, (Sequence, np.ndarray)) \
                or not all(_is_int(w) and int(w) > 0 for w in h):
            raise ValueError(f"hidden must be a sequence of positive integer layer widths (e.g. (128,), or () for "
                             f"none), got {h!r}.")
    for k in ("batch_size", "max_epochs", "patience", "shuffle_buffer"):
        if k in opts and not (_is_int(opts[k]) and int(opts[k]) >= 1):
            raise ValueError(f"{k} must be an integer >= 1, got {opts[k]!r}.")
    for k in ("lr", "temperature"):
        if k in opts and not (_is_real(opts[k]) and float(opts[k]) > 0):
            raise ValueError(f"{k} must be a number > 0, got {opts[k]!r}.")
    if "weight_decay" in opts and not (_is_real(opts["weight_decay"]) and float(opts["weight_decay"]) >= 0):
        raise ValueError(f"weight_decay must be a number >= 0, got {opts['weight_decay']!r}.")
    if opts.get("max_time") is not None and not (_is_real(opts["max_time"]) and float(opts["max_time"]) > 0):
        raise ValueError(f"max_time must be a number of seconds > 0 (or None: no limit), got {opts['max_time']!r}.")
    if "lr_decay" in opts and not (_is_real(opts["lr_decay"]) and 0 < float(opts["lr_decay"]) <= 1):
        raise ValueError(f"lr_decay must be a number in (0, 1] (1: a fixed learning rate), got {opts['lr_decay']!r}.")
    if "val_fraction" in opts and not (_is_real(opts["val_fraction"]) and 0 <= float(opts["val_fraction"]) < 1):
        raise ValueError(f"val_fraction must be a number in [0, 1), got {opts['val_fraction']!r}.")


@dataclass
class ModuleSpec:
    """What :class:`HCLModule` is built from (JSON-able; saved with the model)."""

    modalities: list[str]
    dims: dict[str, int]
    nodes: list[Node]
    ranks: dict[Node, int]
    encoder: str = "mlp"
    hidden: tuple[int, ...] = (128,)
    n_outputs: int = 0
    skip: bool = True  # MLP encoders carry a linear skip path (files written before it had none)

    def __post_init__(self) -> None:
        check_options(hidden=self.hidden)

    def to_dict(self) -> dict:
        return {"modalities": list(self.modalities), "dims": dict(self.dims),
                "nodes": [node_label(n) for n in self.nodes],
                "ranks": {node_label(n): int(self.ranks[n]) for n in self.nodes},
                "encoder": self.encoder, "hidden": list(self.hidden), "n_outputs": int(self.n_outputs),
                "skip": bool(self.skip)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModuleSpec":
        nodes = [tuple(lbl.split("+")) for lbl in d["nodes"]]
        return cls(list(d["modalities"]), {k: int(v) for k, v in d["dims"].items()}, nodes,
                   {tuple(k.split("+")): int(v) for k, v in d["ranks"].items()}, d["encoder"],
                   tuple(int(h) for h in d["hidden"]), int(d.get("n_outputs", 0)), bool(d.get("skip", False)))


class HCLModule(nn.Module):
    """The HCL network.

    For modality ``m`` (key ``"m<j>"``, its position), ``encoders[m]`` maps ``(b, d_m)`` to the blocks
    of the nodes containing ``m``, side by side in lattice order, ``(b, R_m)``; ``decoders[m]`` maps
    ``(b, R_m)`` back to ``(b, d_m)`` (hidden widths reversed). ``head`` (optional) maps the stacked
    node scores ``(b, R)`` to ``n_outputs``. Buffers ``out_mean_<j>``, ``out_scale_<j>`` hold the
    training-set mean and sd of every block coordinate, used to standardize encodings at
    transform time.
    """

    def __init__(self, spec: ModuleSpec):
        super().__init__()
        if spec.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {spec.encoder!r}.")
        self.spec = spec
        hidden = tuple(spec.hidden) if spec.encoder == "mlp" else ()
        self.encoders = nn.ModuleDict()
        self.decoders = nn.ModuleDict()
        #: per modality: [(node, start, stop)] of its blocks in the encoder output
        self.blocks: dict[str, list[tuple[Node, int, int]]] = {}
        for j, m in enumerate(spec.modalities):
            mine = [n for n in spec.nodes if m in n]
            sizes = [spec.ranks[n] for n in mine]
            start, blocks = 0, []
            for n, r in zip(mine, sizes):
                blocks.append((n, start, start + r))
                start += r
            self.blocks[m] = blocks
            if not mine:
                continue
            self.encoders[f"m{j}"] = GroupedMLP(spec.dims[m], sizes, hidden, skip=spec.skip)
            self.decoders[f"m{j}"] = _mlp(start, spec.dims[m], tuple(reversed(hidden)))
            self.register_buffer(f"out_mean_{j}", torch.zeros(start))
            self.register_buffer(f"out_scale_{j}", torch.ones(start))
        self.n_factors = sum(spec.ranks[n] for n in spec.nodes)
        #: Index plans derived from the spec once, not per batch (contrast terms, monomials).
        self._plans: dict = {}
        self.head = nn.Linear(self.n_factors, spec.n_outputs) if spec.n_outputs else None

    def encode(self, xs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Raw encoder outputs ``{m: (b, R_m)}`` for the modalities that have nodes."""
        return {m: self.encoders[f"m{j}"](xs[m]) for j, m in enumerate(self.spec.modalities)
                if f"m{j}" in self.encoders}

    def decode(self, m: str, h: torch.Tensor) -> torch.Tensor:
        return self.decoders[f"m{self.spec.modalities.index(m)}"](h)

    def standardize_outputs(self, m: str, h: torch.Tensor) -> torch.Tensor:
        j = self.spec.modalities.index(m)
        return (h - getattr(self, f"out_mean_{j}")) / getattr(self, f"out_scale_{j}")


# ---------------------------------------------------------------------------------------------- losses
def _batch_standardize(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Centre and scale every column over the rows with weight 1; rows with weight 0 become 0."""
    n = w.sum().clamp_min(1.0)
    mu = (h * w[:, None]).sum(0) / n
    c = (h - mu) * w[:, None]
    sd = torch.sqrt((c**2).sum(0) / n + _EPS)
    return c / sd


def contrastive_pair_loss(a: torch.Tensor, b: torch.Tensor, loss: str, temperature: float) -> torch.Tensor:
    """Contrastive loss between two ``(n, r)`` batch-standardized encodings of the same n samples."""
    r = a.shape[1]
    if loss == "infonce":
        logits = -torch.cdist(a, b).pow(2) / (2.0 * temperature * r)
        target = torch.arange(a.shape[0], device=a.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    if loss == "paper":
        s = a @ b.T / r
        n = a.shape[0]
        pos = torch.diagonal(s).mean()
        neg = (s.sum() - torch.diagonal(s).sum()) / max(n * (n - 1), 1)
        return neg - pos
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}.")


def node_scores_from(module: HCLModule, hs: Mapping[str, torch.Tensor], obs: torch.Tensor) -> torch.Tensor:
    """Stacked node scores ``(b, R)``: per node the mean of its present modalities' standardized
    blocks (0 where none is present)."""
    mods = module.spec.modalities
    cols = []
    for node in module.spec.nodes:
        acc, cnt = 0.0, 0.0
        for m in node:
            j = mods.index(m)
            _, s, e = next(bl for bl in module.blocks[m] if bl[0] == node)
            w = obs[:, j].to(hs[m].dtype)[:, None]
            acc = acc + hs[m][:, s:e] * w
            cnt = cnt + w
        cols.append(acc / torch.clamp(cnt, min=1.0))
    return torch.cat(cols, dim=1)


def _spans(module: HCLModule, m: str, nodes: Sequence[Node]) -> list[tuple[int, int]]:
    """Column spans of modality ``m``'s blocks for ``nodes`` in its encoder output."""
    where = {node: (s, e) for node, s, e in module.blocks[m]}
    return [where[node] for node in nodes]


def contrast_groups(nodes: Sequence[Node], modalities: Sequence[str], contrast: str) -> list[dict]:
    """The contrastive terms: each a set of nodes and the modality pairs it aligns.

    ``"node"``: one term per shared node S, over the pairs in S, comparing the S blocks.
    ``"nested"``: one term per modality pair {m, m'} that some shared node contains, comparing the
    blocks of *all* shared nodes containing the pair side by side. A pair's similarity is then the
    sum over the nodes it shares, so information common to more modalities is rewarded in the
    node that holds all of them and a pair node has nothing to gain from copying it.
    """
    shared = [n for n in nodes if len(n) >= 2]
    if contrast == "node":
        return [{"nodes": [n], "pairs": [(m, m2) for i, m in enumerate(n) for m2 in n[i + 1:]]} for n in shared]
    if contrast != "nested":
        raise ValueError(f"contrast must be 'nested' or 'node', got {contrast!r}.")
    out = []
    for i, m in enumerate(modalities):
        for m2 in modalities[i + 1:]:
            over = [n for n in shared if m in n and m2 in n]
            if over:
                out.append({"nodes": over, "pairs": [(m, m2)]})
    return out


def _quadratic_features(module: HCLModule, m: str, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Degree-2 monomials ``h_i h_j`` (i <= j) within each node block of modality ``m``, side by
    side ``(b, Q)``, and the ``(R_m, Q)`` 0/1 mask of (block coordinate, monomial) pairs from
    *different* nodes."""
    key = ("quadratic", m, str(h.device))
    if key not in module._plans:
        ii, jj, owner = [], [], []
        for k, (_, s, e) in enumerate(module.blocks[m]):
            for a in range(s, e):
                for b in range(a, e):
                    ii.append(a), jj.append(b), owner.append(k)
        col_owner = [k for k, (_, s, e) in enumerate(module.blocks[m]) for _ in range(s, e)]
        cross = torch.tensor([[float(c != o) for o in owner] for c in col_owner])
        module._plans[key] = (torch.tensor(ii, device=h.device), torch.tensor(jj, device=h.device),
                              cross.to(h.device))
    ii, jj, cross = module._plans[key]
    return h[:, ii] * h[:, jj], cross


class _LossPlan:
    """Index tensors for the fused loss of one module, contrast form and device (built once).

    The encoder outputs of all modalities are concatenated into one ``(b, T)`` matrix ``H``; every
    loss term is then a handful of whole-batch tensor operations instead of one small operation per
    (modality, node, pair): the batch standardization of all blocks at once, one batched matmul for
    every contrastive pair (blocks zero-padded to the widest pair; zero columns change no dot
    product or norm), one ``H^T [H, Q]`` product with a weight mask for the whole decorrelation
    term (cross-modality entries get weight 0), and per-modality decoders on inputs whose shared
    columns are detached with one ``where``.
    """

    def __init__(self, module: "HCLModule", contrast: str, decorrelation: str, device: torch.device):
        mods = module.spec.modalities
        self.mods = [m for j, m in enumerate(mods) if f"m{j}" in module.encoders]
        self.mod_index = [mods.index(m) for m in self.mods]  # position in obs
        self.offset: dict[str, int] = {}
        col_mod: list[int] = []  # position in self.mods of every column of H
        T = 0
        for k, m in enumerate(self.mods):
            self.offset[m] = T
            R = module.blocks[m][-1][2]
            col_mod += [k] * R
            T += R
        self.T = T
        self.col_mod = torch.tensor(col_mod, dtype=torch.long, device=device)
        # decoder inputs: shared blocks detached
        self.shared = {m: torch.tensor([len(node) >= 2 for node, s, e in module.blocks[m] for _ in range(s, e)],
                                       device=device)[None, :] for m in self.mods}
        # contrastive pairs: global columns of both sides, padded with index T (a zero column)
        groups = contrast_groups(module.spec.nodes, mods, contrast)
        pairs, member = [], []
        for g, grp in enumerate(groups):
            for m, m2 in grp["pairs"]:
                ca = [self.offset[m] + c for s, e in _spans(module, m, grp["nodes"]) for c in range(s, e)]
                cb = [self.offset[m2] + c for s, e in _spans(module, m2, grp["nodes"]) for c in range(s, e)]
                pairs.append((self.mods.index(m), self.mods.index(m2), ca, cb))
                member.append(g)
        self.n_pairs = len(pairs)
        if pairs:
            width = max(len(p[2]) for p in pairs)
            pad = lambda cs: cs + [T] * (width - len(cs))  # noqa: E731
            self.pair_a = torch.tensor([pad(p[2]) for p in pairs], dtype=torch.long, device=device)
            self.pair_b = torch.tensor([pad(p[3]) for p in pairs], dtype=torch.long, device=device)
            self.pair_mods = torch.tensor([[p[0], p[1]] for p in pairs], dtype=torch.long, device=device)
            self.pair_r = torch.tensor([float(len(p[2])) for p in pairs], device=device)
            G = torch.zeros(len(groups), len(pairs), device=device)
            G[torch.tensor(member), torch.arange(len(pairs))] = 1.0
            self.groups = G
        # decorrelation: weights over H^T [H, Q] (same modality only; 1/R_m; off-diagonal / cross-node)
        ii, jj, q_mod = [], [], []
        if decorrelation == "quadratic":
            for k, m in enumerate(self.mods):
                if len(module.blocks[m]) < 2:
                    continue
                for _, s, e in module.blocks[m]:
                    for a in range(s, e):
                        for b in range(a, e):
                            ii.append(self.offset[m] + a), jj.append(self.offset[m] + b), q_mod.append(k)
        node_of = np.array([bi for m in self.mods for bi, (_, s, e) in enumerate(module.blocks[m]) for _ in range(s, e)],
                           dtype=np.int64)
        cm = np.array(col_mod, dtype=np.int64)
        R_mod = np.array([module.blocks[m][-1][2] for m in self.mods], dtype=np.float64)
        R_col = R_mod[cm]
        same = cm[:, None] == cm[None, :]
        w_lin = same & ~np.eye(T, dtype=bool)  # off-diagonal correlations within a modality
        qi, qm = np.array(ii, dtype=np.int64), np.array(q_mod, dtype=np.int64)
        w_q = (cm[:, None] == qm[None, :]) & (node_of[:, None] != node_of[qi][None, :])  # other nodes' monomials
        W = np.concatenate([w_lin, w_q], axis=1) * np.where(R_col >= 2, 1.0 / R_col, 0.0)[:, None]
        self.has_dec = torch.tensor((R_mod >= 2).astype(np.float32), device=device)
        self.dec_weight = torch.from_numpy(W.astype(np.float32)).to(device)
        self.q_i = torch.tensor(ii, dtype=torch.long, device=device)
        self.q_j = torch.tensor(jj, dtype=torch.long, device=device)
        self.q_mod = torch.tensor(q_mod, dtype=torch.long, device=device)


def _loss_plan(module: "HCLModule", contrast: str, decorrelation: str, device: torch.device) -> _LossPlan:
    key = ("fused", contrast, decorrelation, str(device))
    if key not in module._plans:
        module._plans[key] = _LossPlan(module, contrast, decorrelation, device)
    return module._plans[key]


def _standardize_columns(h: torch.Tensor, w: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`_batch_standardize` of every column of ``h`` with its own row weights ``w`` (``(b, T)``
    0/1, or None: every row); returns the standardized matrix and the per-column row counts."""
    if w is None:
        c = h - h.mean(0)
        return c / torch.sqrt(c.pow(2).mean(0) + _EPS), None
    n = w.sum(0).clamp_min(1.0)
    mu = (h * w).sum(0) / n
    c = (h - mu) * w
    return c / torch.sqrt(c.pow(2).sum(0) / n + _EPS), n


def _fused_contrast(plan: _LossPlan, H: torch.Tensor, w_mod: torch.Tensor | None, loss: str,
                    temperature: float) -> torch.Tensor:
    """All contrastive pair terms in one batched product; mean over pairs within a group, then over
    groups (pairs with fewer than two rows observing both modalities are left out)."""
    b = H.shape[0]
    Hp = torch.cat([H, H.new_zeros(b, 1)], dim=1)
    A = Hp[:, plan.pair_a].permute(1, 0, 2)  # (P, b, r)
    B = Hp[:, plan.pair_b].permute(1, 0, 2)
    S = torch.bmm(A, B.transpose(1, 2))  # (P, b, b): <a_i, b_j>
    r = plan.pair_r[:, None, None]
    if w_mod is None:
        v = None
        n_v = torch.full((plan.n_pairs,), float(b), device=H.device)
    else:
        v = w_mod[:, plan.pair_mods[:, 0]] * w_mod[:, plan.pair_mods[:, 1]]  # (b, P): rows observing both
        v = v.T
        n_v = v.sum(1)
    if loss == "infonce":
        # -||a_i - b_j||^2 = 2<a_i, b_j> - |a_i|^2 - |b_j|^2; |a_i|^2 is constant along a row of the
        # softmax over j (and |b_j|^2 along a column), so each direction needs only the other norm.
        scale = 1.0 / (2.0 * temperature * r)
        two_s = 2.0 * S
        rows = (two_s - B.pow(2).sum(2)[:, None, :]) * scale  # softmax over j
        cols = (two_s - A.pow(2).sum(2)[:, :, None]) * scale  # softmax over i
        if v is not None:
            keep = v > 0
            big = torch.finfo(rows.dtype).min / 4
            rows = rows.masked_fill(~keep[:, None, :], big)
            cols = cols.masked_fill(~keep[:, :, None], big)
        diag_r = torch.diagonal(rows, dim1=1, dim2=2)
        diag_c = torch.diagonal(cols, dim1=1, dim2=2)
        ce_r = torch.logsumexp(rows, dim=2) - diag_r  # (P, b)
        ce_c = torch.logsumexp(cols, dim=1) - diag_c
        per_row = 0.5 * (ce_r + ce_c)
        terms = per_row.mean(1) if v is None else (per_row * v).sum(1) / n_v.clamp_min(1.0)
    elif loss == "paper":
        s = S / r
        d = torch.diagonal(s, dim1=1, dim2=2)
        if v is None:
            pos = d.mean(1)
            neg = (s.sum((1, 2)) - d.sum(1)) / max(b * (b - 1), 1)
        else:
            pos = (d * v).sum(1) / n_v.clamp_min(1.0)
            tot = torch.einsum("pi,pij,pj->p", v, s, v)
            neg = (tot - (d * v).sum(1)) / (n_v * (n_v - 1)).clamp_min(1.0)
        terms = neg - pos
    else:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}.")
    ok = (n_v >= 2).to(H.dtype)
    G = plan.groups * ok[None, :]
    per_group = G.sum(1)
    group_loss = (G * terms[None, :]).sum(1) / per_group.clamp_min(1.0)
    has = (per_group > 0).to(H.dtype)
    return (group_loss * has).sum() / has.sum().clamp_min(1.0)


def batch_losses(module: HCLModule, xs: Mapping[str, torch.Tensor], obs: torch.Tensor, *, loss: str,
                 temperature: float, weights: Mapping[str, float], y: torch.Tensor | None = None,
                 task: str | None = None, amp: bool = False, decorrelation: str = "quadratic",
                 contrast: str = "nested", raw: Mapping[str, torch.Tensor] | None = None,
                 complete: bool | None = None) -> dict[str, torch.Tensor]:
    """The loss terms of one minibatch (see the module docstring) and their weighted ``total``.

    ``xs[m]``: ``(b, d_m)`` standardized, zeros where missing; ``obs``: ``(b, M)`` bool.
    ``raw``: encoder outputs computed elsewhere (data-parallel training gathers them from every
    process); default ``module.encode(xs)``. ``complete``: whether every row observes every
    modality (the caller knows it from the host-side mask; None: read from ``obs``). Complete
    batches take a path without row weights; nothing here waits for the device.
    """
    dev_type = obs.device.type
    if raw is None:
        with torch.autocast(device_type=dev_type, dtype=torch.bfloat16, enabled=amp and dev_type == "cuda"):
            raw = module.encode(xs)
    plan = _loss_plan(module, contrast, decorrelation, obs.device)
    H_raw = torch.cat([raw[m].float() for m in plan.mods], dim=1)
    if complete is None:
        complete = bool(obs.all())
    b = H_raw.shape[0]
    if complete:
        w_mod = None
        H, _ = _standardize_columns(H_raw, None)
        n_mod = torch.full((len(plan.mods),), float(b), device=obs.device)
    else:
        w_mod = obs[:, plan.mod_index].float()  # (b, M')
        n_mod = w_mod.sum(0)
        H, _ = _standardize_columns(H_raw, w_mod[:, plan.col_mod])
    zero = torch.zeros((), device=obs.device)

    contrastive = _fused_contrast(plan, H, w_mod, loss, temperature) if plan.n_pairs else zero

    # reconstruction: per modality a decoder on its raw blocks, the shared ones detached
    rec = []
    for k, m in enumerate(plan.mods):
        h = raw[m].float()
        inp = torch.where(plan.shared[m], h.detach(), h)
        with torch.autocast(device_type=dev_type, dtype=torch.bfloat16, enabled=amp and dev_type == "cuda"):
            xhat = module.decode(m, inp)
        err = (xhat.float() - xs[m].float()).pow(2).mean(dim=1)
        rec.append(err.mean() if w_mod is None else (err * w_mod[:, k]).sum() / n_mod[k].clamp_min(1.0))
    rec_t = torch.stack(rec)
    rec_ok = (n_mod >= 1).to(rec_t.dtype)
    reconstruction = (rec_t * rec_ok).sum() / rec_ok.sum().clamp_min(1.0)

    # decorrelation: one product H^T [H, Q] over all modalities, weighted (zero across modalities)
    if plan.q_i.numel():
        q = H[:, plan.q_i] * H[:, plan.q_j]
        Q, _ = _standardize_columns(q, None if w_mod is None else w_mod[:, plan.q_mod])
        F_ = torch.cat([H, Q], dim=1)
    else:
        F_ = H
    n_col = n_mod[plan.col_mod].clamp_min(1.0)[:, None]
    Cm = (H.T @ F_) / n_col
    dec_ok = plan.has_dec * (n_mod >= 2).to(H.dtype)
    decorrelation = (Cm.pow(2) * plan.dec_weight * dec_ok[plan.col_mod][:, None]).sum() / dec_ok.sum().clamp_min(1.0)

    supervised = zero
    if module.head is not None and y is not None:
        lab = torch.isfinite(y)
        if int(lab.sum()) > 0:
            hs = {m: H[:, plan.offset[m]:plan.offset[m] + raw[m].shape[1]] for m in plan.mods}
            out = module.head(node_scores_from(module, hs, obs)[lab]).squeeze(-1)
            if task == "binary":
                supervised = F.binary_cross_entropy_with_logits(out, y[lab])
            else:
                supervised = F.mse_loss(out, y[lab])
    total = (contrastive + weights["reconstruction"] * reconstruction + weights["decorrelation"] * decorrelation
             + weights["supervised"] * supervised)
    return {"total": total, "contrastive": contrastive, "reconstruction": reconstruction,
            "decorrelation": decorrelation, "supervised": supervised}


# ---------------------------------------------------------------------------------------------- training
@dataclass
class TrainConfig:
    loss: str = "infonce"
    temperature: float = 0.1
    reconstruction_weight: float = 1.0
    decorrelation_weight: float = 1.0
    supervised_weight: float = 1.0
    decorrelation: str = "quadratic"
    contrast: str = "nested"
    max_epochs: int = 100
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.0
    patience: int = 3
    min_delta: float = 1e-4
    #: each epoch without a significant improvement multiplies the learning rate by this (1: off)
    lr_decay: float = 0.5
    amp: bool = True
    seed: int = 0
    max_time: float | None = None  # seconds of training (epochs) before stopping at the best epoch so far

    def __post_init__(self) -> None:
        check_options(temperature=self.temperature, max_epochs=self.max_epochs, batch_size=self.batch_size,
                      lr=self.lr, weight_decay=self.weight_decay, patience=self.patience, max_time=self.max_time,
                      lr_decay=self.lr_decay)

    def weights(self) -> dict[str, float]:
        return {"reconstruction": self.reconstruction_weight, "decorrelation": self.decorrelation_weight,
                "supervised": self.supervised_weight}


@dataclass
class TrainResult:
    history: list[float] = field(default_factory=list)  # mean training loss per epoch
    val_history: list[float] = field(default_factory=list)  # validation loss per epoch (NaN: no split)
    n_epochs: int = 0
    best_epoch: int = 0
    best_loss: float = float("nan")
    converged: bool = False  # stopped early (patience ran out) rather than at max_epochs
    resumed_from: int = 0  # epochs already done in the checkpoint this fit resumed from
    #: why training stopped: "patience", "max_epochs" or "max_time" (the time budget)
    stop_reason: str = ""
    #: standard error of each epoch's monitored loss over its minibatches (the improvement margin)
    noise: list[float] = field(default_factory=list)
    seconds: float = 0.0  # training time of this call (epochs, validation, checkpoints)
    #: monitored loss of the last significant improvement: patience counts the epochs since
    ref_loss: float = float("nan")


class Arrays:
    """Standardized float32 arrays on the CPU (zeros where a modality is missing) and the mask.

    Minibatches are gathered here and moved to the device one at a time, so the data never has
    to fit on the accelerator.
    """

    def __init__(self, X: Mapping[str, np.ndarray], observed: np.ndarray, y: np.ndarray | None = None):
        self.X = dict(X)
        self.observed = np.asarray(observed, dtype=bool)
        self.y = y

    def host(self, rows: np.ndarray) -> "HostBatch":
        """The rows ``rows`` as a host batch (copies)."""
        return HostBatch({m: x[rows] for m, x in self.X.items()}, self.observed[rows],
                         None if self.y is None else self.y[rows].astype(np.float32))

    def batch(self, rows: np.ndarray, device: torch.device):
        """``(xs {m: (b, d_m)}, observed (b, M), y (b,) or None)`` of ``rows`` on ``device``."""
        return to_device(self.host(rows), device)


def to_device(hb: "HostBatch", device: torch.device):
    """A host batch's tensors on ``device`` (pinned, non-blocking copies on CUDA)."""
    pin = device.type == "cuda"

    def put(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a))
        return (t.pin_memory() if pin else t).to(device, non_blocking=pin)

    xs = {m: put(x) for m, x in hb.X.items()}
    return xs, put(hb.observed), None if hb.y is None else put(hb.y)


def _batches(rows: np.ndarray, batch_size: int, drop_last: bool) -> list[np.ndarray]:
    """Training (``drop_last``): consecutive batches of ``batch_size``, a short last one dropped.
    Otherwise (validation): every row, in ``ceil(n / batch_size)`` batches of nearly equal size. The
    InfoNCE loss grows with the batch (log of the negatives): a short last batch (1,500 rows in
    batches of 256: one of 220) would add its offset to the between-batch spread that measures
    the validation loss's noise."""
    if not drop_last:
        k = -(-rows.size // batch_size)
        return [b for b in np.array_split(rows, k)] if k and rows.size // k >= 2 else \
            ([rows] if rows.size >= 2 else [])
    out = [rows[s:s + batch_size] for s in range(0, rows.size, batch_size)]
    if len(out) > 1 and out[-1].size < batch_size:
        out = out[:-1]
    return [b for b in out if b.size >= 2]


def _state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _save_checkpoint(path: str, payload: dict) -> None:
    tmp = path + ".tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str, signature: str, module: nn.Module, opt: torch.optim.Optimizer,
                    res: "TrainResult") -> tuple[dict[str, torch.Tensor], float, int, int]:
    """Restore a checkpoint written by :func:`train` into ``module``, ``opt`` and ``res``; returns
    (best weights, best loss, epochs without improvement, epochs done).

    Read with ``weights_only=True`` (no arbitrary unpickling), then checked: a dict with every key,
    weights of the module's names, shapes and finite values, numbers where numbers belong. A
    truncated, damaged or foreign file raises ``ValueError("<path>: not a valid checkpoint (...)")``
    and one of another run ``ValueError("<path> was written for another ...")``."""

    def bad(reason: str) -> ValueError:
        return ValueError(f"{path}: not a valid checkpoint ({reason}); remove it or use another "
                          "checkpoint_dir (or resume=False).")

    try:
        import zipfile

        # torch.load does not check the zip's CRCs: a flipped bit in the weights would load silently.
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                damaged = zf.testzip()
                # torch's reader takes a member marked as a folder (DOS attribute 0x10) for an empty one
                odd = [i.filename for i in zf.infolist() if i.is_dir() or i.external_attr & 0x10]
            if damaged is not None:
                raise bad(f"member {damaged!r} fails its CRC check")
            if odd:
                raise bad(f"member {odd[0]!r} is marked as a folder")
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except ValueError as exc:
        if str(exc).startswith(f"{path}: "):
            raise
        first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:200]
        raise bad(f"{type(exc).__name__}: {first}" if first else type(exc).__name__) from None
    except Exception as exc:  # noqa: BLE001  truncated zip, bad pickle, refused global ...: one line
        first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:200]
        raise bad(f"{type(exc).__name__}: {first}" if first else type(exc).__name__) from None
    keys = ("signature", "epoch", "module", "optimizer", "best_state", "best", "bad_epochs", "best_epoch",
            "history", "val_history")
    if not isinstance(ck, dict):
        raise bad(f"holds a {type(ck).__name__}, not a dict")
    missing = [k for k in keys if k not in ck]
    if missing:
        raise bad(f"no {', '.join(missing)}")
    if ck["signature"] != signature:
        raise ValueError(f"{path} was written for another data set, lattice or settings; "
                         "remove it or use another checkpoint_dir (or resume=False).")
    own = module.state_dict()
    for key in ("module", "best_state"):
        st = ck[key]
        if not isinstance(st, dict) or set(st) != set(own):
            raise bad(f"its {key!r} weights are not this network's")
        for name, t in st.items():
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(own[name].shape):
                raise bad(f"{key} weight {name!r} has the wrong shape")
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise bad(f"{key} weight {name!r} is not finite")
    params = list(module.parameters())
    ost = ck["optimizer"]
    if not isinstance(ost, dict) or not isinstance(ost.get("state"), dict) or not isinstance(ost.get("param_groups"), list):
        raise bad("its optimizer state is not a dict of state and param_groups")
    for idx, state in ost["state"].items():
        if not isinstance(idx, int) or not 0 <= idx < len(params) or not isinstance(state, dict):
            raise bad(f"optimizer state for an unknown parameter {idx!r}")
        for name, t in state.items():
            if not isinstance(t, torch.Tensor) or (t.dim() and tuple(t.shape) != tuple(params[idx].shape)):
                raise bad(f"optimizer {name!r} of parameter {idx} has the wrong shape")
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise bad(f"optimizer {name!r} of parameter {idx} is not finite")
    try:
        history = [float(v) for v in ck["history"]]
        val_history = [float(v) for v in ck["val_history"]]
        best, bad_epochs, start, best_epoch = float(ck["best"]), int(ck["bad_epochs"]), int(ck["epoch"]), int(ck["best_epoch"])
    except (TypeError, ValueError, OverflowError) as exc:
        raise bad(f"invalid counters: {exc}") from None
    if not (0 <= bad_epochs <= start and 0 <= best_epoch <= start and len(history) == len(val_history) == start):
        raise bad(f"inconsistent counters (epoch {start}, {len(history)} losses)")
    try:
        module.load_state_dict(ck["module"])
        opt.load_state_dict(ck["optimizer"])
    except Exception as exc:  # noqa: BLE001  optimizer state of another shape etc.
        first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:200]
        raise bad(f"{type(exc).__name__}: {first}") from None
    res.history, res.val_history, res.best_epoch, res.resumed_from = history, val_history, best_epoch, start
    # written since the noise-aware patience (older checkpoints: the best loss, no noise record)
    try:
        res.ref_loss = float(ck.get("ref", best))
        res.noise = [float(v) for v in ck.get("noise", [float("nan")] * start)][:start]
    except (TypeError, ValueError, OverflowError):
        raise bad("invalid counters: ref/noise") from None
    return ck["best_state"], best, bad_epochs, start


def distributed_context(device: torch.device) -> tuple[int, int]:
    """(rank, world size). Under ``torchrun`` (WORLD_SIZE > 1 in the environment) the process group
    is created here when the caller has not: NCCL on CUDA, gloo on the CPU."""
    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _gather_rows(t: torch.Tensor) -> torch.Tensor:
    """All processes' row blocks concatenated in rank order, differentiable: the backward pass
    hands each process the summed gradient of its own rows."""
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(t), dim=0)


def _encoder_macs(module: HCLModule, batch_size: int) -> int:
    """Multiply-adds of the widest encoder's first layer for one minibatch."""
    out = 0
    for j, m in enumerate(module.spec.modalities):
        if f"m{j}" in module.encoders:
            enc = module.encoders[f"m{j}"]
            width = enc.first.out_features + (enc.skip.out_features if enc.skip is not None else 0)
            out = max(out, batch_size * module.spec.dims[m] * width)
    return out


def _adam(params: list[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam with the fused kernel where torch has one for the parameters' device: one pass over
    each tensor instead of a dozen elementwise ops (on the CPU, 2.4 against 8.5 ms per step for
    the probe's 400k parameters; 10-15 % of a step). The update is Adam's either way."""
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device or dtype
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def train(module: HCLModule, data: Arrays, train_rows: np.ndarray, val_rows: np.ndarray, cfg: TrainConfig,
          device: torch.device, *, task: str | None = None, callback: Callback | None = None,
          checkpoint_dir: str | None = None, resume: bool = False, signature: str = "",
          stream: Any = None) -> TrainResult:
    """Train ``module`` in place (Adam, minibatches, early stopping on the validation loss).

    ``stream``: an object whose ``epoch(e)`` yields the training minibatches of epoch ``e``
    (0-based) as host batches (``X``, ``observed``, ``y``), e.g.
    :class:`hcl_explore.contrastive_stream.ParquetBatches` for data bigger than memory; the
    training rows then come from it (``train_rows`` is unused) and ``data``/``val_rows`` hold the
    in-memory validation rows only.

    Every epoch: shuffle the training rows (seeded by ``(cfg.seed, epoch)``, so a resumed run draws
    the same batches), one pass of minibatches, then the validation loss. The best weights (lowest
    validation loss, or training loss without a split) are restored at the end.

    Stopping (``TrainResult.stop_reason``): ``"patience"`` after ``cfg.patience`` epochs without an
    improvement, ``"max_epochs"``, or ``"max_time"`` once ``cfg.max_time`` seconds of training have
    passed (checked between minibatches: the epoch under way ends there, its validation loss is
    taken, and it counts like any other epoch). Patience counts the epochs since the last one that
    *improved*: whose monitored loss fell below that of the previous improving epoch by more than
    the loss's own noise - the standard error of the epoch's mean over its minibatches
    (``TrainResult.noise``) - and by at least ``cfg.min_delta`` relative. A loss that only drifts
    within its noise therefore runs out of patience instead of resetting it with every tiny step
    down, while a slow drift that adds up to more than the noise still counts. The weights kept
    are those of the lowest monitored loss (``best_epoch``), significant or not. Every epoch without
    a significant improvement also multiplies Adam's learning rate by ``cfg.lr_decay`` (a plateau
    schedule): the smaller steps settle into the minimum that the large ones overshoot, so
    training reaches its plateau in fewer epochs (nonlinear probe, n = 15,000 training rows: 9-10
    epochs at R^2 0.86-0.88 where lr 1e-3 and patience 10 took 20-30 epochs for +0.002).
    With ``checkpoint_dir`` the full state (weights, optimizer and its learning rate, best weights,
    histories, patience counter) is written atomically after every epoch to
    ``checkpoint_dir/checkpoint.pt``; ``resume=True`` continues from it (``signature`` must match
    the one it was written with: same data shape, lattice, ranks and settings).

    ``callback("epoch", info)`` after every epoch; an exception raised there stops training.

    On the CPU a small network (widest encoder layer under ``SMALL_WORK_MACS`` multiply-adds per
    minibatch) trains with one intra-op thread; torch's setting is restored on return.

    Data-parallel under ``torchrun`` (torch.distributed initialized, or WORLD_SIZE > 1): every
    process holds the data and draws the same global batches; each encodes its own 1/world of the
    rows, the encodings are all-gathered (differentiably) so that every loss term - the contrastive
    ones need every sample of the batch as negatives - is the single-process loss of the global
    batch, and gradients are averaged. The loss trajectory therefore matches one process with the
    same batch size. Only rank 0 writes checkpoints and calls ``callback``; a stop there (an
    exception) is broadcast so that every process stops.
    """
    import torch.distributed as dist

    rank, world = distributed_context(device)
    if world > 1 and cfg.batch_size % world:
        raise ValueError(f"batch_size ({cfg.batch_size}) must be a multiple of the number of processes ({world}).")
    module.to(device)
    if world > 1:
        for t in module.state_dict().values():
            dist.broadcast(t, src=0)  # identical starting weights everywhere
    if rank != 0:
        checkpoint_dir = None
        callback = None
    opt = _adam(list(module.parameters()), cfg.lr, cfg.weight_decay)
    res = TrainResult()
    best_state = _state_copy(module)
    best = math.inf
    bad = 0
    start = 0
    ck_path = os.path.join(checkpoint_dir, CHECKPOINT_NAME) if checkpoint_dir else None
    if ck_path and resume and os.path.exists(ck_path):
        best_state, best, bad, start = load_checkpoint(ck_path, signature, module, opt, res)
    ref = res.ref_loss if math.isfinite(res.ref_loss) else best
    if ck_path:
        os.makedirs(checkpoint_dir, exist_ok=True)
    use_amp = cfg.amp and device.type == "cuda"
    weights = cfg.weights()
    keys = ("total", "contrastive", "reconstruction", "decorrelation", "supervised")

    deadline = None if cfg.max_time is None else time.perf_counter() + float(cfg.max_time)

    def run_pass(rows: np.ndarray, training: bool) -> tuple[dict[str, float], bool]:
        """Mean loss terms over the pass, with ``"noise"``: the standard error of the mean total
        over its minibatches; and whether the time budget cut the pass short. Sums stay on the
        device until the end of the pass: one host sync per epoch, not per batch."""
        sums = torch.zeros(len(keys) + 1, device=device)
        count, n_batches, cut = 0, 0, False
        module.train(training)
        if training and stream is not None:
            host = stream.epoch(epoch)
        else:
            host = (data.host(idx) for idx in _batches(rows, cfg.batch_size, drop_last=training))
        for hb in host:
            size = len(hb.observed)
            if training and deadline is not None and n_batches and time.perf_counter() > deadline:
                cut = True
                break
            if training and world > 1 and size % world:
                continue  # a short last batch that does not split evenly
            xs, obs, y = to_device(hb, device)
            complete = bool(hb.observed.all())  # from the host copy: no device sync
            with torch.set_grad_enabled(training):
                raw = None
                if training and world > 1:
                    local = np.array_split(np.arange(size), world)[rank]
                    xl, _, _ = to_device(hb.rows(local), device)
                    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                        enc = module.encode(xl)
                    raw = {m: _gather_rows(h.float()) for m, h in enc.items()}
                terms = batch_losses(module, xs, obs, loss=cfg.loss, temperature=cfg.temperature, weights=weights,
                                     decorrelation=cfg.decorrelation, contrast=cfg.contrast,
                                     y=y, task=task, amp=use_amp, raw=raw, complete=complete)
            if training:
                opt.zero_grad(set_to_none=True)
                terms["total"].backward()
                if world > 1:
                    for p_ in module.parameters():
                        if p_.grad is not None:
                            dist.all_reduce(p_.grad, op=dist.ReduceOp.SUM)
                            p_.grad /= world
                opt.step()
            tot = terms["total"].detach().float()
            sums += torch.cat([torch.stack([terms[k].detach().float() for k in keys]) * size,
                               (tot * tot * size)[None]])
            count += size
            n_batches += 1
        vals = (sums / max(count, 1)).tolist()
        out = dict(zip(keys, vals[:-1]))
        # between-batch spread of the total (weighted by batch size), over the number of batches
        var = max(vals[-1] - out["total"] ** 2, 0.0)
        out["noise"] = math.sqrt(var / (n_batches - 1)) if n_batches > 1 else 0.0
        return out, cut

    converged = bad >= cfg.patience
    stop_reason = "patience" if converged else ""
    epoch = start
    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    one_thread = device.type == "cpu" and world == 1 and threads > 1 \
        and _encoder_macs(module, cfg.batch_size) < SMALL_WORK_MACS
    if one_thread:
        torch.set_num_threads(1)
    try:
        while epoch < cfg.max_epochs and not stop_reason:

            t0 = time.perf_counter()
            lr_now = float(opt.param_groups[0]["lr"])  # this epoch's (the plateau rule lowers it after)
            perm = None if stream is not None else np.random.default_rng([cfg.seed, epoch]).permutation(train_rows)
            tr, cut = run_pass(perm, training=True)
            if val_rows.size >= 2:
                va, _ = run_pass(val_rows, training=False)
                monitored, noise = va["total"], va["noise"]
            else:
                va, monitored, noise = {}, tr["total"], tr["noise"]
            epoch += 1
            res.history.append(tr["total"])
            res.val_history.append(va.get("total", float("nan")))
            res.noise.append(noise)
            if not math.isfinite(monitored):
                raise FloatingPointError(f"The loss became {monitored} at epoch {epoch}; lower lr.")
            # Patience counts from the last epoch that beat the one before it by more than the noise
            # (ref); the weights kept are those of the lowest loss, significant or not.
            margin = max(cfg.min_delta * max(1.0, abs(ref)) if math.isfinite(ref) else 0.0, noise)
            if not math.isfinite(ref) or monitored < ref - margin:
                ref, bad = monitored, 0
            else:
                bad += 1
                # A plateau: smaller steps settle into the minimum the last ones overshot, so the
                # next epoch either improves (patience resets) or confirms the plateau sooner.
                for g in opt.param_groups:
                    g["lr"] *= cfg.lr_decay
            if not math.isfinite(best) or monitored < best:
                best, res.best_epoch = monitored, epoch
                best_state = _state_copy(module)
            res.ref_loss = ref
            converged = bad >= cfg.patience
            if converged:
                stop_reason = "patience"
            elif cut or (deadline is not None and time.perf_counter() > deadline):
                stop_reason = "max_time"
            elif epoch >= cfg.max_epochs:
                stop_reason = "max_epochs"
            if ck_path:
                _save_checkpoint(ck_path, {
                    "signature": signature, "epoch": epoch, "module": _state_copy(module), "optimizer": opt.state_dict(),
                    "best_state": best_state, "best": best, "bad_epochs": bad, "best_epoch": res.best_epoch,
                    "history": list(res.history), "val_history": list(res.val_history), "ref": ref,
                    "noise": list(res.noise)})
            stop: BaseException | None = None
            if callback is not None:
                info = {"epoch": epoch, "max_epochs": cfg.max_epochs, "loss": tr["total"],
                        **{k: tr[k] for k in keys[1:]}, "val_loss": va.get("total", float("nan")),
                        "best_loss": best, "noise": noise, "lr": lr_now, "seconds": time.perf_counter() - t0,
                        "stop_reason": stop_reason}
                try:
                    callback("epoch", info)
                except BaseException as exc:  # noqa: BLE001  re-raised below, after telling the others
                    stop = exc
            if world > 1:
                flag = torch.tensor([1.0 if stop is not None else 0.0], device=device)
                dist.all_reduce(flag)
                if flag.item() > 0 and stop is None:
                    stop = RuntimeError("training stopped by rank 0")
            if stop is not None:
                raise stop
    finally:
        if one_thread:
            torch.set_num_threads(threads)
    if not stop_reason:
        stop_reason = "max_epochs"
    module.load_state_dict(best_state)
    res.n_epochs = epoch
    res.best_loss = best
    res.converged = converged
    res.stop_reason = stop_reason
    res.seconds = time.perf_counter() - t_start
    return res


@torch.no_grad()
def raw_encodings(module: HCLModule, data: Arrays, rows: np.ndarray, device: torch.device,
                  batch_size: int = 8192) -> dict[str, np.ndarray]:
    """Raw encoder outputs ``{m: (len(rows), R_m)}`` (float64), computed in batches."""
    module.eval()
    mods = [m for j, m in enumerate(module.spec.modalities) if f"m{j}" in module.encoders]
    out: dict[str, list[np.ndarray]] = {m: [np.zeros((0, module.blocks[m][-1][2]))] for m in mods}
    for s in range(0, rows.size, batch_size):
        xs, _, _ = data.batch(rows[s:s + batch_size], device)
        for m, h in module.encode(xs).items():
            out[m].append(h.float().cpu().numpy().astype(np.float64))
    return {m: np.concatenate(v) for m, v in out.items()}


@torch.no_grad()
def reconstruction_mse(module: HCLModule, data: Arrays, rows: np.ndarray, device: torch.device,
                       batch_size: int = 8192) -> dict[str, float]:
    """Mean squared reconstruction error per standardized feature ``{m: float}`` over the rows of
    ``rows`` that observe ``m``."""
    module.eval()
    mods = module.spec.modalities
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for s in range(0, rows.size, batch_size):
        xs, obs, _ = data.batch(rows[s:s + batch_size], device)
        for m, h in module.encode(xs).items():
            o = obs[:, mods.index(m)]
            err = ((module.decode(m, h).float() - xs[m].float()) ** 2).mean(dim=1)
            sums[m] = sums.get(m, 0.0) + float(err[o].sum())
            counts[m] = counts.get(m, 0) + int(o.sum())
    return {m: sums[m] / counts[m] for m in sums if counts[m] > 0}


def set_output_stats(module: HCLModule, enc: Mapping[str, np.ndarray], observed: np.ndarray) -> None:
    """Store the mean and sd of every block coordinate over the observed rows (transform-time scale)."""
    for j, m in enumerate(module.spec.modalities):
        if m not in enc:
            continue
        h = enc[m][observed[:, j]]
        mu = h.mean(0) if h.shape[0] else np.zeros(h.shape[1])
        sd = h.std(0) if h.shape[0] > 1 else np.ones(h.shape[1])
        getattr(module, f"out_mean_{j}").copy_(torch.as_tensor(mu, dtype=torch.float32))
        getattr(module, f"out_scale_{j}").copy_(torch.as_tensor(np.where(sd > 1e-8, sd, 1.0), dtype=torch.float32))


def node_scores(module: HCLModule, enc: Mapping[str, np.ndarray], observed: np.ndarray,
                fill: float = 0.0) -> dict[Node, np.ndarray]:
    """``{node: (n, r_S)}``: per node the mean over its *present* modalities of their standardized
    blocks; ``fill`` where a sample has none of the node's modalities."""
    mods = module.spec.modalities
    std = {}
    for j, m in enumerate(mods):
        if m in enc:
            mu = getattr(module, f"out_mean_{j}").cpu().numpy().astype(np.float64)
            sd = getattr(module, f"out_scale_{j}").cpu().numpy().astype(np.float64)
            std[m] = (enc[m] - mu) / sd
    n = observed.shape[0]
    out: dict[Node, np.ndarray] = {}
    for node in module.spec.nodes:
        r = module.spec.ranks[node]
        acc = np.zeros((n, r))
        cnt = np.zeros((n, 1))
        for m in node:
            j = mods.index(m)
            _, s, e = next(bl for bl in module.blocks[m] if bl[0] == node)
            o = observed[:, j:j + 1]
            acc += np.where(o, std[m][:, s:e], 0.0)
            cnt += o
        out[node] = np.where(cnt > 0, acc / np.maximum(cnt, 1), fill)
    return out


def signature_of(spec: ModuleSpec, cfg: TrainConfig, n_samples: int, extra: Mapping[str, Any]) -> str:
    """What a checkpoint must agree with to be resumed (max_epochs, patience and the time budget
    may change; so checkpoints written before ``max_time`` existed still resume)."""
    c = {k: v for k, v in vars(cfg).items() if k not in ("max_epochs", "patience", "max_time", "lr_decay")}
    return json.dumps({"spec": spec.to_dict(), "cfg": c, "n": int(n_samples), **extra}, sort_keys=True, default=str)
