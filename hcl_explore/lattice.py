"""Candidate sharing lattices over modalities.

A *node* is a non-empty subset of modalities, stored as a tuple of modality names in modality
order. A lattice is the set of nodes a model may use. Levels: ``global`` (all modalities),
``partial`` (2 <= |S| < M) and ``private`` (|S| = 1).
"""

from __future__ import annotations

from itertools import combinations
from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:  # networkx is imported by hasse() (a fifth of a second; the app's first page needs none)
    import networkx as nx

Node = tuple[str, ...]

LEVELS = ("global", "partial", "private")
PRESETS = ("full", "shared_private", "global_only", "pairwise")


class Lattice:
    """A candidate lattice: modalities in order and the allowed nodes.

    Parameters
    ----------
    modalities : sequence of str
        Modality names, in order. Node tuples follow this order.
    nodes : iterable of iterables of str, optional
        The allowed nodes. Each node may be given in any order; it is stored in modality order.
        Defaults to the full lattice (all ``2**M - 1`` non-empty subsets).
    """

    def __init__(self, modalities: Sequence[str], nodes: Iterable[Iterable[str]] | None = None):
        mods = [str(m) for m in modalities]
        if len(mods) == 0:
            raise ValueError("A lattice needs at least one modality.")
        if len(set(mods)) != len(mods):
            dup = sorted({m for m in mods if mods.count(m) > 1})
            raise ValueError(f"Duplicate modality name(s): {dup}.")
        bad = [m for m in mods if not m or "+" in m]
        if bad:
            raise ValueError(f"Modality name {bad[0]!r} is empty or contains '+', which joins node labels.")
        self._modalities: tuple[str, ...] = tuple(mods)
        self._index = {m: i for i, m in enumerate(mods)}
        if nodes is None:
            nodes = _all_subsets(self._modalities)
        canon: list[Node] = []
        seen: set[Node] = set()
        for raw in nodes:
            node = self._canonical(raw)
            if node in seen:
                raise ValueError(f"Duplicate node {node} in the lattice.")
            seen.add(node)
            canon.append(node)
        if not canon:
            raise ValueError("A lattice needs at least one node.")
        self._nodes: tuple[Node, ...] = tuple(sorted(canon, key=self._sort_key))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def full(cls, modalities: Sequence[str]) -> "Lattice":
        """All ``2**M - 1`` non-empty subsets of the modalities."""
        return cls(modalities)

    @classmethod
    def shared_private(cls, modalities: Sequence[str]) -> "Lattice":
        """The classic split: the global node plus one private node per modality."""
        mods = tuple(modalities)
        return cls(mods, [mods] + [(m,) for m in mods])

    @classmethod
    def global_only(cls, modalities: Sequence[str]) -> "Lattice":
        """Only the global node as a shared node, plus the private nodes (noise-absorbing)."""
        return cls.shared_private(modalities)

    @classmethod
    def pairwise(cls, modalities: Sequence[str]) -> "Lattice":
        """Global node, every pair of modalities, and every private node."""
        mods = tuple(modalities)
        nodes: list[tuple[str, ...]] = [mods] + [p for p in combinations(mods, 2)]
        nodes += [(m,) for m in mods]
        # For M = 2 the only pair is the global node itself.
        return cls(mods, list(dict.fromkeys(nodes)))

    @classmethod
    def preset(cls, name: str, modalities: Sequence[str]) -> "Lattice":
        """Build a preset lattice by name: one of ``PRESETS``."""
        builders = {
            "full": cls.full,
            "shared_private": cls.shared_private,
            "global_only": cls.global_only,
            "pairwise": cls.pairwise,
        }
        if name not in builders:
            raise ValueError(f"Unknown lattice preset {name!r}; choose one of {list(builders)}.")
        return builders[name](modalities)

    # ------------------------------------------------------------------ basic properties
    @property
    def modalities(self) -> tuple[str, ...]:
        return self._modalities

    @property
    def nodes(self) -> tuple[Node, ...]:
        """Nodes in a deterministic order: by size, then by modality order."""
        return self._nodes

    @property
    def n_modalities(self) -> int:
        return len(self._modalities)

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self):
        return iter(self._nodes)

    def __contains__(self, node: object) -> bool:
        try:
            return self._canonical(node) in set(self._nodes)  # type: ignore[arg-type]
        except (ValueError, TypeError):
            return False

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Lattice)
            and self._modalities == other._modalities
            and self._nodes == other._nodes
        )

    def __hash__(self) -> int:
        return hash((self._modalities, self._nodes))

    def __repr__(self) -> str:
        counts = {lv: sum(1 for n in self._nodes if self.level(n) == lv) for lv in LEVELS}
        return (
            f"Lattice(modalities={list(self._modalities)}, nodes={len(self._nodes)}: "
            f"{counts['global']} global, {counts['partial']} partial, {counts['private']} private)"
        )

    # ------------------------------------------------------------------ node helpers
    def _repr_html_(self) -> str:
        from . import display
        import pandas as pd

        M = len(self.modalities)
        levels = [node_level(n, M) for n in self.nodes]
        counts = ", ".join(f"{levels.count(lv)} {lv}" for lv in ("global", "partial", "private") if lv in levels)
        df = pd.DataFrame({"node": [node_label(n) for n in self.nodes], "level": levels, "size": [len(n) for n in self.nodes]})
        return display.block(f"Lattice over {M} modalities: {len(self.nodes)} candidate nodes ({counts})",
                             [f"modalities: {', '.join(self.modalities)}"], display.table(df))

    def plot(self, active=None, ranks=None):
        """The lattice as a Hasse diagram (a plotly Figure; the app's figure)."""
        from .figures import lattice_figure

        return lattice_figure(self, active=active, ranks=ranks)

    def node(self, raw: Iterable[str] | str) -> Node:
        """Canonical form of a node given in any order (a single name is a private node)."""
        return self._canonical(raw)

    def level(self, node: Iterable[str] | str) -> str:
        """``"global"``, ``"partial"`` or ``"private"``."""
        return node_level(self._canonical(node), self.n_modalities)

    def node_mask(self, node: Iterable[str] | str) -> list[bool]:
        """Which modalities (in order) a node contains."""
        node = self._canonical(node)
        return [m in node for m in self._modalities]

    def nodes_with(self, modality: str) -> list[Node]:
        """Nodes that contain ``modality``, in lattice order."""
        if modality not in self._index:
            raise ValueError(f"Unknown modality {modality!r}; lattice has {list(self._modalities)}.")
        return [n for n in self._nodes if modality in n]

    def subset(self, nodes: Iterable[Iterable[str]]) -> "Lattice":
        """A lattice over the same modalities with only the given nodes."""
        return Lattice(self._modalities, nodes)

    def to_dict(self) -> dict:
        return {"modalities": list(self._modalities), "nodes": [list(n) for n in self._nodes]}

    @classmethod
    def from_dict(cls, d: dict) -> "Lattice":
        return cls(d["modalities"], d["nodes"])

    def hasse(self) -> nx.DiGraph:
        """Hasse diagram of the lattice under inclusion.

        Edges go from a node to each node it covers (a strict subset in the lattice with no lattice
        node strictly between them). Node attributes: ``level``, ``size``, ``label``. Nodes and
        edges are inserted in a deterministic order.
        """
        import networkx as nx

        g = nx.DiGraph()
        for n in self._nodes:
            g.add_node(n, level=self.level(n), size=len(n), label=node_label(n))
        node_sets = {n: set(n) for n in self._nodes}
        for big in self._nodes:
            below = [s for s in self._nodes if node_sets[s] < node_sets[big]]
            for small in below:
                between = any(node_sets[small] < node_sets[mid] < node_sets[big] for mid in below)
                if not between:
                    g.add_edge(big, small)
        return g

    # ------------------------------------------------------------------ internals
    def _canonical(self, raw: Iterable[str] | str) -> Node:
        if isinstance(raw, str):
            items = [raw]
        else:
            try:
                items = [str(x) for x in raw]
            except TypeError as exc:
                raise ValueError(f"A node must be a collection of modality names, got {raw!r}.") from exc
        if not items:
            raise ValueError("Empty node: a node must contain at least one modality.")
        unknown = [m for m in items if m not in self._index]
        if unknown:
            raise ValueError(
                f"Unknown modality {unknown[0]!r} in node {tuple(items)}; "
                f"lattice modalities are {list(self._modalities)}."
            )
        if len(set(items)) != len(items):
            raise ValueError(f"Node {tuple(items)} repeats a modality.")
        return tuple(sorted(items, key=self._index.__getitem__))

    def _sort_key(self, node: Node) -> tuple:
        return (len(node), [self._index[m] for m in node])


def node_level(node: Sequence[str], n_modalities: int) -> str:
    """Level of a node of size ``len(node)`` in a lattice over ``n_modalities`` modalities."""
    if len(node) == n_modalities:
        return "global"
    if len(node) == 1:
        return "private"
    return "partial"


def node_label(node: Sequence[str]) -> str:
    """Human-readable label such as ``"labs+notes"``."""
    return "+".join(node)


def parse_node_label(label: str) -> Node:
    """Inverse of :func:`node_label`."""
    return tuple(label.split("+"))


def _all_subsets(mods: Sequence[str]) -> list[Node]:
    out: list[Node] = []
    for k in range(1, len(mods) + 1):
        out.extend(combinations(mods, k))
    return out
