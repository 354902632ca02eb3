"""What a run does: one typed config, written by the Train page and the CLI alike
(``config.json`` of the run folder, :mod:`hcl_explore.runs.files`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

_KNOWN = ("kind", "dataset", "lattice", "lattice_name", "ranks", "params", "stability", "planned_s",
          "parent", "outcome", "options", "dask", "plan")

#: The environment variable naming a Dask scheduler that fit runs use (docs/scale.md).
DASK_ENV = "HCL_EXPLORE_DASK"


def dask_default() -> str | None:
    """The scheduler address in ``$HCL_EXPLORE_DASK`` (None when unset or empty)."""
    return (os.environ.get(DASK_ENV) or "").strip() or None


@dataclass
class RunConfig:
    """A fit run (``kind="fit"``) or an outcome evaluation (``kind="predict"``, into ``parent``).

    ``lattice`` is always ``{"nodes": [[modality, ...], ...]}`` (the candidate nodes) or
    ``{"preset": name}`` (resolved against the data's modalities when the run loads them);
    ``lattice_name`` is what the run list shows. ``ranks``: ``"auto"``, an int, or
    ``{node label: int | "auto"}``. ``params``: the ``HCL`` keyword arguments. Keys this class does
    not know are kept in ``extra`` and written back unchanged.

    ``dask``: the address of a Dask scheduler the fit's covariance pass runs on (linear estimator;
    None: in the worker process). ``plan``: the progress plan shown at launch
    (:meth:`hcl_explore.progress.Plan.to_dict`), which the worker follows until its data are loaded.
    Both are written only when set, so configs without them read as before."""

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
    dask: str | None = None
    plan: dict | None = None

    @classmethod
    def fit(cls, dataset: Mapping[str, Any], lattice: Any = "full", ranks: Any = "auto",
            params: Mapping[str, Any] | None = None, *, lattice_name: str | None = None, stability: Any = False,
            planned_s: float | None = None, dask: str | None = None, plan: Any = None) -> "RunConfig":
        """A fit run; ``lattice`` a Lattice, a preset name, a list of nodes or a lattice dict.
        ``dask``: a scheduler address; None takes ``$HCL_EXPLORE_DASK`` for the linear estimator
        (the one that uses it), ``""`` means none.
        ``plan``: a :class:`hcl_explore.progress.Plan` (or its dict), which also gives ``planned_s``."""
        lat = _lattice_dict(lattice)
        name = lattice_name or lat.get("preset") or "custom"
        linear = (params or {}).get("estimator", "linear") == "linear"
        address = (dask_default() if linear else None) if dask is None else (str(dask).strip() or None)
        plan_d = plan.to_dict() if hasattr(plan, "to_dict") else (dict(plan) if isinstance(plan, Mapping) else None)
        if planned_s is None and plan_d is not None:
            planned_s = round(float(sum(plan_d.get("seconds", {}).values())), 1)
        return cls("fit", dict(dataset), lat, str(name), ranks, dict(params or {}), stability, planned_s,
                   dask=address, plan=plan_d)

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
                   extra={k: v for k, v in d.items() if k not in _KNOWN},
                   dask=(str(d["dask"]).strip() or None) if isinstance(d.get("dask"), str) else None,
                   plan=dict(d["plan"]) if isinstance(d.get("plan"), Mapping) else None)

    def to_dict(self) -> dict:
        out: dict = dict(self.extra)
        out.update({"kind": self.kind, "dataset": self.dataset})
        if self.kind == "fit":
            out.update({"lattice": self.lattice, "lattice_name": self.lattice_name, "ranks": self.ranks,
                        "params": self.params, "stability": self.stability})
            if self.planned_s is not None:
                out["planned_s"] = self.planned_s
            if self.dask:
                out["dask"] = self.dask
            if self.plan is not None:
                out["plan"] = self.plan
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
