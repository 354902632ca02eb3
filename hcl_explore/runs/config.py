"""What a run does: one typed config, written by the Train page and the CLI alike
(``config.json`` of the run folder, :mod:`hcl_explore.runs.files`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

_KNOWN = ("kind", "dataset", "lattice", "lattice_name", "ranks", "params", "stability", "planned_s",
          "parent", "outcome", "options")


@dataclass
class RunConfig:
    """A fit run (``kind="fit"``) or an outcome evaluation (``kind="predict"``, into ``parent``).

    ``lattice`` is always ``{"nodes": [[modality, ...], ...]}`` (the candidate nodes) or
    ``{"preset": name}`` (resolved against the data's modalities when the run loads them);
    ``lattice_name`` is what the run list shows. ``ranks``: ``"auto"``, an int, or
    ``{node label: int | "auto"}``. ``params``: the ``HCL`` keyword arguments. Keys this class does
    not know are kept in ``extra`` and written back unchanged."""

    kind: str = "fit"
    dataset: dict = field(default_factory=dict)
    lattice: dict = field(default_factory=lambda: {"preset": "full"})
    lattice_name: str = "full"
    ranks: Any = "auto"
    params: dict = field(default_factory=dict)
    stability: Any = False
    planned_s: float | None = None
    parent: str | None = None
    outcome: str | None = None
    options: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, dataset: Mapping[str, Any], lattice: Any = "full", ranks: Any = "auto",
            params: Mapping[str, Any] | None = None, *, lattice_name: str | None = None, stability: Any = False,
            planned_s: float | None = None) -> "RunConfig":
        """A fit run; ``lattice`` a Lattice, a preset name, a list of nodes or a lattice dict."""
        lat = _lattice_dict(lattice)
        name = lattice_name or lat.get("preset") or "custom"
        return cls("fit", dict(dataset), lat, str(name), ranks, dict(params or {}), stability, planned_s)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        """From a config as written now or by older versions (a preset string as the lattice)."""
        d = dict(d)
        kind = str(d.get("kind", "fit"))
        lat = _lattice_dict(d.get("lattice")) if kind == "fit" else {}
        return cls(kind=kind, dataset=dict(d.get("dataset") or {}), lattice=lat,
                   lattice_name=str(d.get("lattice_name") or lat.get("preset") or ("custom" if lat else "")),
                   ranks=d.get("ranks", "auto"), params=dict(d.get("params") or {}),
                   stability=d.get("stability", False), planned_s=d.get("planned_s"), parent=d.get("parent"),
                   outcome=d.get("outcome"), options=dict(d.get("options") or {}),
                   extra={k: v for k, v in d.items() if k not in _KNOWN})

    def to_dict(self) -> dict:
        out: dict = dict(self.extra)
        out.update({"kind": self.kind, "dataset": self.dataset})
        if self.kind == "fit":
            out.update({"lattice": self.lattice, "lattice_name": self.lattice_name, "ranks": self.ranks,
                        "params": self.params, "stability": self.stability})
            if self.planned_s is not None:
                out["planned_s"] = self.planned_s
        else:
            out.update({"parent": self.parent, "outcome": self.outcome, "options": self.options})
        return out

    def resolve_lattice(self, modalities):
        """The candidate Lattice over the data's modalities."""
        from ..lattice import Lattice

        if "nodes" in self.lattice:
            return Lattice(list(modalities), [tuple(n) for n in self.lattice["nodes"]])
        return Lattice.preset(self.lattice.get("preset") or "full", list(modalities))


def _lattice_dict(lattice: Any) -> dict:
    from ..lattice import Lattice

    if lattice is None:
        return {"preset": "full"}
    if isinstance(lattice, Lattice):
        return {"nodes": [list(n) for n in lattice.nodes]}
    if isinstance(lattice, str):
        return {"preset": lattice}
    if isinstance(lattice, Mapping):
        if "nodes" in lattice:
            return {"nodes": [list(n) for n in lattice["nodes"]]}
        return {"preset": str(lattice.get("preset") or "full")}
    return {"nodes": [list(n) for n in lattice]}
