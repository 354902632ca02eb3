"""Progress of a run that tells the truth: the stages in words, one fraction rule, an ETA.

A run is a sequence of stages (:data:`STAGES`, in the order they run). Before the run starts,
:func:`plan_fit` / :func:`plan_predict` predict each stage's seconds from the size of the work
(samples, features, candidate nodes, iterations, epochs, resamples, prediction steps) with one
machine-speed constant; a run's worker puts its own start-up in front (:func:`with_start`: the
process start and the import of numpy, pandas and torch, predicted from the last start measured on
this machine). While it runs, :class:`Tracker` reads the library's ``callback(stage, info)`` events
and counts each stage's measured units (rows read or Dask partitions done, nodes tested, refinement
steps against the stopping rule, epochs of epochs planned, resamples, prediction steps). The one rule:

    progress = elapsed / (elapsed + remaining)

where ``remaining`` is the current stage's remaining units at its measured rate (after the first
few units; before that, its prediction) plus the later stages' predictions, scaled by how far the
finished stages' measured seconds were from their predictions. Start-up and loading are measured
stages like the others: until something that says how fast this machine computes has been measured,
the time they took counts as it is and the rest by the plan's shares, and loading (its seconds against
its prediction from the table's cells) is the first measure of speed. So the bar is the share of
the run's time spent, it never moves backwards, and the ETA (``remaining``) is given once the current
stage has done a few units. Pure Python, no UI: the worker (:mod:`hcl_explore.runs`) writes the numbers
into the run's status file and the Train page shows them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

#: Every stage a run can report, in words for people (the Train page, the CLI).
STAGES: dict[str, str] = {
    "queued": "waiting for a worker process",
    "starting": "starting the worker (loading the libraries)",
    "load": "loading the data",
    "covariance": "reading the data (covariances)",
    "noise": "estimating the noise of each feature",
    "ranks": "testing the candidate nodes",
    "refine": "refining the loadings",
    "epoch": "training the encoders",
    "save": "saving the model and the scores",
    "saved": "saving the model and the scores",
    "stability": "checking stability on subsamples",
    "predict": "evaluating the prediction",
    "done": "finished",
    "failed": "failed",
    "cancelled": "cancelled",
}

#: Seconds per floating-point operation of the cost model (a loaded 2-core CPU with numpy);
#: only the first predictions depend on it: finished stages recalibrate the rest.
SECONDS_PER_FLOP = 5e-10
#: Seconds per floating-point operation of the large BLAS products (the covariance pass's syrk,
#: the scores): about 1e-11 on an idle 2-core machine (50,000 x 900 float32: 0.8 s); a busy one is
#: several times slower, which the measured speed of earlier runs scales in.
SECONDS_PER_BLAS_FLOP = 4e-11
#: Seconds per parsed table cell (CSV loading).
SECONDS_PER_CELL = 3e-7
#: A worker's start (process, numpy, pandas, torch) when no start was measured on this machine yet.
STARTUP_SECONDS = 4.0
#: A start-up with no measured prediction (the first run on this machine) that has run past the
#: default is expected to need this share of its time so far again (not a fixed sliver): a busy
#: machine's start of 10 s does not rush the bar to the end of the start-up's share while it lasts.
OVERRUN = 0.25
#: The note :func:`with_start` leaves on a plan whose start-up is the default, not a measurement.
START_GUESSED = "start-up: no measurement on this machine yet"
#: Units a stage must have done before its own rate gives the ETA.
MIN_UNITS = 3
#: Refinement steps assumed before the stopping rule can be extrapolated.
REFINE_GUESS = 500
#: A run whose predicted seconds exceed this is flagged before launch.
SLOW_SECONDS = 600.0


def words(stage: str | None) -> str:
    """The stage in words ("refining the loadings"); unknown stages as given."""
    return STAGES.get(stage or "", stage or "")


@dataclass
class Plan:
    """Stages in run order with predicted seconds and planned units (None: unit-less)."""

    stages: list[str]
    seconds: dict[str, float]
    units: dict[str, float | None]
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return float(sum(self.seconds.values()))

    def to_dict(self) -> dict:
        """Plain JSON (a run's config records the plan shown at launch)."""
        return {"stages": list(self.stages), "seconds": {k: round(float(v), 3) for k, v in self.seconds.items()},
                "units": {k: (None if v is None else float(v)) for k, v in self.units.items()}}

    @classmethod
    def from_dict(cls, d: Any) -> "Plan | None":
        """A plan from :meth:`to_dict`'s shape; None when ``d`` is not one (an older or damaged config)."""
        try:
            stages = [str(s) for s in d["stages"]]
            seconds = {s: float(d["seconds"][s]) for s in stages}
            units = {s: (None if (d.get("units") or {}).get(s) is None else float(d["units"][s])) for s in stages}
        except (KeyError, TypeError, ValueError):
            return None
        if not stages or not all(math.isfinite(v) and v >= 0 for v in seconds.values()):
            return None
        return cls(stages, seconds, units)


def scaled(plan: Plan, speed: float | None) -> Plan:
    """``plan`` on a machine ``speed`` times slower than the cost model's constants (the speed a
    previous run measured here, :meth:`Tracker.calibration`); the start-up, measured as it is, is
    left alone."""
    if speed is None or not math.isfinite(float(speed)) or speed <= 0:
        return plan
    sp = min(max(float(speed), 0.1), 30.0)
    return Plan(list(plan.stages), {k: (v if k == "starting" else v * sp) for k, v in plan.seconds.items()},
                dict(plan.units), list(plan.notes))


def with_start(plan: Plan, seconds: float | None = None) -> Plan:
    """``plan`` with the worker's start-up (stage ``starting``) in front: ``seconds`` (the last start
    measured on this machine), else :data:`STARTUP_SECONDS`. A plan that has it keeps it."""
    if "starting" in plan.stages:
        return plan
    known = seconds is not None and math.isfinite(float(seconds)) and seconds > 0
    return Plan(["starting"] + list(plan.stages), {"starting": float(seconds) if known else STARTUP_SECONDS, **plan.seconds},
                {"starting": None, **plan.units}, list(plan.notes) + ([] if known else [START_GUESSED]))


def _reduced(d: int, n: int) -> int:
    return int(min(d, n, 40))


def plan_fit(n_samples: int, dims: Mapping[str, int], n_nodes: int, *, estimator: str = "linear",
             max_iter: int = 5000, max_epochs: int = 100, hidden: int = 128, stability: int | None = None,
             auto_ranks: bool = True, node_sizes: Sequence[int] | None = None) -> Plan:
    """Predicted seconds of each stage of a fit run (see the module docstring).

    ``node_sizes``: modalities per candidate node (default: a node of every size up to M, spread
    like the full lattice); ``stability``: resamples of the stability check after the fit."""
    n = max(1, int(n_samples))
    ds = [max(1, int(d)) for d in dims.values()]
    D = sum(ds)
    M = len(ds)
    c = SECONDS_PER_FLOP
    R = max(1, 2 * M)  # factors: unknown before the fit, about two per modality
    sizes = list(node_sizes) if node_sizes is not None else [min(M, 1 + (i % M)) for i in range(n_nodes)]
    kbar = sum(_reduced(d, n) for d in ds) / max(M, 1)
    sec: dict[str, float] = {"load": 0.3 + SECONDS_PER_CELL * n * D}
    units: dict[str, float | None] = {"load": None}
    stages = ["load"]
    # The contrastive estimator starts from a linear fit (its structure and projections).
    if True:
        # One BLAS syrk over the rows (plus shifting and masking each cell), then per-modality
        # eigendecompositions on one thread (measured with the search on one BLAS thread).
        sec["covariance"] = 0.05 + SECONDS_PER_BLAS_FLOP * n * D * D + 4e-9 * n * D
        sec["noise"] = 0.05 * M + c * 5.0 * sum(d ** 3 for d in ds)
        # The pair screen leaves few large nodes to test: their cost is counted up to 3 modalities.
        sec["ranks"] = 0.1 * M + 0.004 * len(sizes) + c * 10.0 * sum((min(s, 3) * kbar) ** 3 for s in sizes)
        units.update(covariance=float(n), noise=None, ranks=float(max(1, len(sizes))))
        stages += ["covariance", "noise", "ranks"]
    it = min(int(max_iter), REFINE_GUESS)
    sec["refine"] = 0.05 + it * (2e-4 + c * (4.0 * D * D * R + 40.0 * D * R))
    units["refine"] = float(max_iter)
    stages.append("refine")
    if estimator != "linear":
        per_epoch = c * 12.0 * n * (D * max(hidden, 1) + max(hidden, 1) * R) * max(1, M) + 0.02
        sec["epoch"] = 0.2 + int(max_epochs) * per_epoch
        units["epoch"] = float(max_epochs)
        stages.append("epoch")
    # Saving is mostly the scores (transform of every row): 1.0 s at n x D x R = 20,000 x 330 x 5
    # and 3.0 s at 100,000 x 150 x 5 on the 2-core machine, about 60 "flops" per n·D·R.
    sec["save"] = 0.2 + c * 20.0 * n * D * R
    units["save"] = None
    stages.append("save")
    if stability and estimator == "linear":
        one = 0.8 * sum(sec[s] for s in ("covariance", "noise", "ranks"))
        sec["stability"] = int(stability) * one
        units["stability"] = float(stability)
        stages.append("stability")
    return Plan(stages, sec, units)


def plan_predict(n_steps: int = 4, fit_seconds: float | None = None) -> Plan:
    """A prediction run: loading, then the evaluation - the representation refitted on the
    training part (about the parent fit's ``fit_seconds``), then ``n_steps - 1`` counted steps (the
    group lasso, each baseline)."""
    refit = 1.2 * float(fit_seconds) if fit_seconds and fit_seconds > 0 else 10.0
    return Plan(["load", "predict"], {"load": 1.0, "predict": refit + 2.0 * n_steps},
                {"load": None, "predict": float(max(1, n_steps - 1))})


def estimate_text(plan: Plan, n_nodes: int, n_features: int) -> str:
    """"63 candidate nodes × 649 features: expected about 2 min" for the Train page."""
    return f"{n_nodes:,} candidate nodes × {n_features:,} features: expected about {duration(plan.total)}"


def duration(seconds: float | None) -> str:
    """Seconds in words: "45 s", "3 min", "1 h 20 min"."""
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    s = max(0.0, float(seconds))
    if s < 90:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


# --------------------------------------------------------------------------------------------
# refinement: steps remaining against the stopping rule


def refine_remaining(history: Sequence[float], iteration: int, max_iter: int, tol: float = 1e-10,
                     stall_window: int = 25, stall_fraction: float = 1e-3) -> float:
    """Steps the refinement has left, extrapolated from its objective ``history`` (one value per
    step): the per-step gains shrink about geometrically, so the rate of the last steps says when
    the relative change drops under ``tol`` or the last ``stall_window`` steps gain less than
    ``stall_fraction`` of the total (the two stopping rules of ``linear.masked_factorization``);
    never more than the ``max_iter`` evaluations left."""
    left = max(0.0, float(max_iter - iteration))
    h = [float(v) for v in history if v is not None and math.isfinite(v)]
    if len(h) < 8:
        return min(left, float(REFINE_GUESS))
    gains = [max(h[i] - h[i + 1], 0.0) for i in range(len(h) - 1)]
    w = gains[-min(len(gains), 60):]
    pos = [(i, math.log(g)) for i, g in enumerate(w) if g > 0]
    total = max(h[0] - h[-1], 0.0)
    if len(pos) < 4 or total <= 0:
        return min(left, 5.0)
    mx = sum(i for i, _ in pos) / len(pos)
    my = sum(v for _, v in pos) / len(pos)
    sxx = sum((i - mx) ** 2 for i, _ in pos)
    slope = sum((i - mx) * (v - my) for i, v in pos) / sxx if sxx > 0 else 0.0
    g_now = math.exp(my + slope * (len(w) - 1 - mx))
    if slope >= -1e-6:  # not shrinking: the stall rule ends it once the window gains little
        recent = sum(gains[-stall_window:])
        return left if recent >= stall_fraction * total * 10 else min(left, float(stall_window))
    q = math.exp(slope)
    window = g_now * (1 - q ** stall_window) / (1 - q)
    steps = []
    if window > 0:
        steps.append(math.log(max(stall_fraction * total / window, 1e-300)) / slope)
    f = abs(h[-1]) or 1.0
    steps.append(math.log(max(tol * f / g_now, 1e-300)) / slope)
    est = max(0.0, min(steps))
    # Evaluations run ahead of steps (line searches): scale steps by evaluations per step so far.
    per_step = iteration / max(1, len(h) - 1)
    return min(left, est * max(1.0, per_step))


# --------------------------------------------------------------------------------------------
# the tracker

_UNCALIBRATED = ("starting", "load", "refine", "save")
_START_MARKERS = ("load", "save")
#: Stages whose time counts as it was spent while nothing says how fast the machine computes.
_SPENT_AS_MEASURED = ("starting", "load")


class Tracker:
    """Turns a run's events into (progress, ETA, step in words). ``now``: a clock (tests pass one)."""

    def __init__(self, plan: Plan, *, max_iter: int = 5000, tol: float = 1e-10, now=time.time,
                 start: float | None = None):
        self.plan = plan
        self.now = now
        self.t0 = now() if start is None else float(start)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.stage: str | None = None
        self.stage_t0 = self.t0
        self.done_units = 0.0
        self.total_units: float | None = None
        self.actual: dict[str, float] = {}
        self.history: list[float] = []
        self.iteration = 0
        self.fraction = 0.0
        self.eta: float | None = None
        self.detail = ""
        self.last_t = self.t0

    # ---- events
    def event(self, stage: str, info: Mapping[str, Any]) -> None:
        """One library event. Events report work done (a chunk of rows, a node, a step, an
        epoch, a resample), so a stage's first event closes the previous stage at the previous
        event's time; ``save`` (written by the worker) marks the start of saving."""
        t = self.now()
        if stage in ("saved", "done") or stage not in self.plan.seconds:
            self.last_t = t
            self._update()
            return
        if stage != self.stage:
            self._enter(stage, t if stage in _START_MARKERS else self.last_t)
        elif stage == "load" and info.get("n_samples"):
            self.actual["load"] = t - self.stage_t0  # the data are loaded: a first measure of speed
        self.last_t = t
        if stage == "noise":
            self.done_units, self.total_units = 1.0, 1.0
        elif stage == "covariance" and info.get("partitions") and info.get("partitions_done") is not None:
            # On a Dask cluster: partitions done of partitions (they run in parallel, rows are not in order).
            self.total_units = float(info["partitions"])
            self.done_units = float(info["partitions_done"])
            self.detail = f"{int(self.done_units):,} of {int(self.total_units):,} partitions"
        elif stage == "covariance":
            n = info.get("n_samples") or self.plan.units.get("covariance")
            self.total_units = float(n) if n else None
            self.done_units = float(info.get("rows", 0) or 0)
            self.detail = f"{int(self.done_units):,} of {int(self.total_units):,} rows" if self.total_units else ""
        elif stage == "ranks":
            self.done_units += 1
            # "of": the candidates the pair screen left (the plan only knows the lattice's size).
            of = info.get("of") or self.plan.units.get("ranks") or 1
            self.total_units = max(float(of), self.done_units)
            node = info.get("node")
            self.detail = f"node {int(self.done_units)} of about {int(self.total_units)}" + (
                f" ({'+'.join(node) if isinstance(node, (tuple, list)) else node})" if node else "")
        elif stage == "refine":
            self.iteration = int(info.get("iteration", self.iteration + 1) or 0)
            if "objective" in info and info["objective"] is not None:
                self.history.append(float(info["objective"]))
            self.done_units = float(len(self.history))
            left = refine_remaining(self.history, self.iteration, self.max_iter, self.tol)
            per_step = self.iteration / max(1, len(self.history) - 1) if len(self.history) > 1 else 1.0
            self.total_units = self.done_units + left / max(per_step, 1.0)
            self.detail = f"step {len(self.history):,}, about {int(round(left / max(per_step, 1.0))):,} to go"
        elif stage == "epoch":
            self.done_units = float(info.get("epoch", self.done_units + 1) or 0)
            me = info.get("max_epochs") or self.plan.units.get("epoch")
            self.total_units = float(me) if me else None
            self.detail = f"epoch {int(self.done_units)} of {int(self.total_units)}" if self.total_units else ""
        elif stage == "stability":
            if info.get("of"):
                self.done_units = float(info.get("resample", 0) or 0)
                self.total_units = float(info["of"])
                self.detail = f"resample {int(self.done_units)} of {int(self.total_units)}"
        elif stage == "predict":
            # "representation" marks the start of the refit (most of the time); the later steps
            # (group lasso, baselines) are counted when they start, i.e. when the one before ended.
            if info.get("step") != "representation":
                self.done_units += 1
            self.total_units = max(float(self.plan.units.get("predict") or 1), self.done_units + 1)
            step = str(info.get("step") or "").replace("_", " ")
            self.detail = {"representation": "refitting the representation on the training part",
                           "group lasso": "choosing the nodes that predict the outcome"}.get(
                step, f"baseline {step}" if step == "baseline" else step)
        self._update()

    def _enter(self, stage: str, t: float) -> None:
        if self.stage == "load":
            self.actual["load"] = t - self.stage_t0
        elif self.stage is not None:
            self.actual[self.stage] = self.actual.get(self.stage, 0.0) + (t - self.stage_t0)
        # Stages the run skipped count as done in no time.
        if stage in self.plan.stages and self.stage in self.plan.stages:
            for s in self.plan.stages[self.plan.stages.index(self.stage) + 1:self.plan.stages.index(stage)]:
                self.actual.setdefault(s, 0.0)
        self.stage, self.stage_t0 = stage, t
        self.done_units, self.total_units, self.detail = 0.0, self.plan.units.get(stage), ""

    # ---- the one rule
    def _projected(self) -> float | None:
        """The current stage's total seconds at its measured rate (None before a few units)."""
        f = (self.done_units / self.total_units) if self.total_units else 0.0
        if self.stage in self.plan.seconds and self.done_units >= MIN_UNITS and f > 0:
            return (self.now() - self.stage_t0) / min(f, 1.0)
        return None

    def calibrated(self) -> bool:
        return "load" in self.actual or any(s not in _UNCALIBRATED and self.plan.seconds.get(s, 0) > 0 for s in self.actual) or (
            self.stage not in _UNCALIBRATED and self._projected() is not None)

    def calibration(self) -> float:
        """Measured / predicted seconds over the finished stages (and the current one, at its rate)."""
        # Machine speed: the stages whose work is known in advance (not loading, not the
        # refinement, whose number of steps is the stopping rule's).
        done = [s for s in self.actual if s not in _UNCALIBRATED and self.plan.seconds.get(s, 0) > 0]
        pred = sum(self.plan.seconds[s] for s in done)
        act = sum(self.actual[s] for s in done)
        proj = self._projected()
        if proj is not None and self.stage not in _UNCALIBRATED:
            pred += self.plan.seconds[self.stage]
            act += proj
        if (pred <= 0 or act <= 0) and "load" in self.actual and self.plan.seconds.get("load"):
            # Nothing else measured yet: loading is a first (rough) measure of the machine's speed.
            pred, act = self.plan.seconds["load"], self.actual["load"]
        if pred <= 0 or act <= 0:
            return 1.0
        return min(max(act / pred, 0.33), 10.0)

    def plan_share(self) -> float:
        """The share of the run done if every stage takes its predicted seconds, with the time
        already spent starting and loading (measured) counted as it is."""
        stages = [s for s in self.plan.stages if s not in _SPENT_AS_MEASURED]
        spent = (self.stage_t0 if self.stage in stages else self.now()) - self.t0
        total = spent + sum(self.plan.seconds[s] for s in stages)
        if self.stage not in stages:
            return spent / total if total > 0 else 0.0
        i = stages.index(self.stage)
        done = spent + sum(self.plan.seconds[s] for s in stages[:i])
        f = (self.done_units / self.total_units) if self.total_units else 0.0
        return (done + self.plan.seconds[self.stage] * min(max(f, 0.0), 1.0)) / total

    def remaining(self) -> tuple[float, bool]:
        """(seconds left, whether measured enough to be shown as an ETA)."""
        t = self.now()
        cal = self.calibration()
        st = self.stage
        in_stage = t - self.stage_t0
        measured = False
        if st is None or st not in self.plan.seconds:
            cur = 0.0
        else:
            f = (self.done_units / self.total_units) if self.total_units else 0.0
            f = min(max(f, 0.0), 1.0)
            if self.done_units >= MIN_UNITS and f > 0 and in_stage > 0:
                cur = in_stage * (1.0 - f) / f
                measured = True
            elif st == "starting" and START_GUESSED in self.plan.notes:
                cur = max(self.plan.seconds[st] - in_stage, OVERRUN * in_stage)
            else:
                cur = max(self.plan.seconds[st] * cal * (1.0 - f) - in_stage * (1.0 - f), 0.1 * self.plan.seconds[st] * cal)
                measured = st != "load" and bool(self.actual) and cal != 1.0 and self.plan.units.get(st) is None
        later = 0.0
        if st in self.plan.stages:
            later_stages = self.plan.stages[self.plan.stages.index(st) + 1:]
        else:
            later_stages = [s for s in self.plan.stages if s not in self.actual and s != st]
        for s in later_stages:
            if s == "stability" and all(k in self.actual for k in ("covariance", "noise", "ranks")):
                n_res = self.plan.units.get("stability") or 0
                later += 0.8 * n_res * sum(self.actual[k] for k in ("covariance", "noise", "ranks"))
            else:
                later += self.plan.seconds[s] * cal
        return cur + later, measured

    def _update(self) -> None:
        elapsed = max(self.now() - self.t0, 1e-9)
        rem, measured = self.remaining()
        frac = elapsed / (elapsed + rem) if rem > 0 else 0.99
        if not self.calibrated():
            # Nothing measured yet: the prediction's absolute seconds may be far off, its shares less so.
            frac = min(frac, self.plan_share())
        self.fraction = round(min(max(self.fraction, frac), 0.99), 4)
        self.eta = rem if measured else None

    def snapshot(self) -> dict:
        """The fields the worker writes into the run's status."""
        self._update()
        out = {"progress": self.fraction, "step": words(self.stage), "detail": self.detail,
               "eta_s": None if self.eta is None else round(self.eta, 1)}
        return out


class Bar:
    """``fit(progress=True)``: a tqdm bar (a widget in Jupyter, text in a terminal) driven by the
    same :class:`Tracker` as the app's runs, so the notebook and the Train page agree."""

    def __init__(self, plan: Plan, desc: str = "HCL fit", **tracker: Any):
        from tqdm.auto import tqdm

        self.tracker = Tracker(plan, **tracker)
        self.bar = tqdm(total=100, desc=desc, unit="%")
        self.done = 0.0

    def update(self, stage: str, info: Mapping[str, Any]) -> None:
        self.tracker.event(stage, info)
        snap = self.tracker.snapshot()
        target = 100.0 if stage == "done" else 100.0 * float(snap["progress"])
        if target > self.done:
            self.bar.update(target - self.done)
            self.done = target
        self.bar.set_postfix_str(" · ".join(x for x in (snap["step"], snap["detail"]) if x), refresh=False)

    def close(self) -> None:
        self.bar.close()


def fit_bar(model, data, estimator: str) -> Bar:
    """The progress bar of ``model.fit(data, progress=True)`` for ``estimator``."""
    lat = model._resolve_lattice(list(data.modalities))
    dims = {m: len(data.feature_names[m]) for m in data.modalities}
    n = int(getattr(data, "n_samples", 0) or 0) or 1000
    auto = any(v is None for v in model._resolve_ranks(lat).values())
    plan = plan_fit(n, dims, len(lat.nodes), estimator=estimator, max_iter=int(model.max_iter),
                    max_epochs=int(getattr(model, "max_epochs", 100) or 100), auto_ranks=auto,
                    node_sizes=[len(nd) for nd in lat.nodes])
    return Bar(plan, desc="HCL contrastive fit" if estimator == "contrastive" else "HCL fit",
               max_iter=int(model.max_iter), tol=float(model.tol))


def status_line(status: Mapping[str, Any], now: float | None = None) -> dict:
    """For a page: {"state", "step" (words), "detail", "elapsed_s", "eta_s", "fraction", "why"} from a
    run's status (the ETA counts down from the status' last update)."""
    now = time.time() if now is None else now
    state = status.get("state", "?")
    started = status.get("started")
    end = status.get("finished") or now
    elapsed = (end - started) if started else None
    eta = status.get("eta_s")
    if eta is not None and state == "running":
        eta = max(0.0, float(eta) - max(0.0, now - float(status.get("updated") or now)))
    else:
        eta = None
    step = status.get("step") or words(status.get("stage"))
    frac = float(status.get("progress") or 0.0)
    if state == "running" and status.get("stage") == "starting" and elapsed is not None:
        # Nobody writes while the worker imports its libraries: the share of that time in the
        # run's predicted seconds (the last start's seconds, the plan made at launch).
        start_s = float(status.get("planned_start_s") or STARTUP_SECONDS)
        rest = float(status.get("planned_s") or 10.0)
        # The Tracker's rule for the start-up (a guessed one may overrun by much).
        left = max(start_s - elapsed, OVERRUN * elapsed if not status.get("planned_start_s") else 0.1 * start_s)
        frac = max(frac, min(elapsed / (elapsed + left + rest), 0.95))
    why = ""
    if state == "queued":
        created = status.get("created")
        waited = now - created if created else 0.0
        why = ("the worker process is starting" if waited < 10 else
               "the worker process has not started yet (the machine may be busy); it is started when the run is "
               "launched and needs no other run to finish")
    return {"state": state, "step": step if state == "running" else words(state), "detail": status.get("detail") or "",
            "elapsed_s": elapsed, "eta_s": eta, "fraction": frac, "why": why}
