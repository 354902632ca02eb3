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
into the run's status file (at each event and every half second between them) and the Train page
shows them.

What the plan cannot count in advance is corrected as soon as the run says it: the factors the
search finds (the refinement's and the scores' cost grows with them; before the search,
:func:`factors_prior` reads them off the data's spectrum), the rank confirmation that reports
nothing while it runs (predicted from the measured noise and rank stages, then counted down), and a
prediction run's steps of unequal length (their predicted shares, at the rate of the steps done).
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
    "confirm": "confirming the structure (subsamples)",
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

#: The cost model's constants: every stage of in-process fits of the clinical sample, nutrimouse
#: (2 x 40), COVID serology (6 x 438), mfeat (6 x 2,000) and simulated 2-10 modalities at n = 500 to
#: 50,000, in CPU seconds of the worker's process (what an idle 2-core machine takes: the structure
#: search and the refinement run on one BLAS thread, hcl_explore/blas.py). A busier machine is
#: slower by a factor that the measured speed of earlier runs (:func:`scaled`) and the finished
#: stages of this run (:meth:`Tracker.calibration`) scale in. ``benchmarks/bench_app.py --only
#: progress`` prints the shown progress against the true share of launched runs.
#: Seconds per floating-point operation of small products on one BLAS thread (the refinement:
#: mfeat's 649 x 227 loadings, 31 ms a step).
SECONDS_PER_FLOP = 8e-11
#: Seconds per floating-point operation of the large BLAS products (the covariance pass's syrk):
#: 50,000 x 900 float32 in 1.0 s.
SECONDS_PER_BLAS_FLOP = 2e-11
#: Seconds per parsed table cell (CSV loading: 50,000 x 900 cells in 5.8 s), plus a fixed part
#: and one per file.
SECONDS_PER_CELL = 1.3e-7
LOAD_SECONDS = 0.05
LOAD_PER_FILE = 0.01
#: Loading predicted to take at least this long is a first measure of the machine's speed.
LOAD_MEASURES = 0.05
#: One refinement step (an evaluation of the objective): a fixed part (the L-BFGS bookkeeping,
#: 1 ms) plus 4 D^2 R flops (R factors): 0.9-1.9 ms at D = 140-360, 51 ms for mfeat's 649 x 227.
REFINE_STEP_SECONDS = 1e-3
#: Steps assumed by the plan: 20 plus one per factor (11-40 steps with 3-15 factors in 9 of the 10
#: measured fits, 213 with mfeat's 227); the stopping rule's extrapolation (:func:`refine_remaining`)
#: takes over once a few steps are done.
REFINE_PLANNED = 20
#: One candidate node tested by the structure search: 6 ms plus its reduced eigenproblem.
NODE_SECONDS = 6e-3
#: Structure-only searches on subsamples that confirm the ranks of small data (the estimator's
#: resample confirmation, up to this many samples where the half folds are too small: 16 of them,
#: or 32 where a node is ambiguous - 24 expected -, each about this share of the fit's noise and
#: rank stages: nutrimouse 0.36 s, COVID serology 12 s); otherwise two folds, about
#: ``CONFIRM_FOLDS`` times the rank stage (0.2-1.5 measured).
CONFIRM_MAX_N = 1000
CONFIRM_MAX_WORK = 5e7
CONFIRM_RESAMPLES = 24
CONFIRM_SHARE = 0.8
CONFIRM_FOLDS = 0.8
#: Seconds per floating-point operation of the contrastive encoders' epochs (torch, as before).
EPOCH_SECONDS_PER_FLOP = 5e-10
#: A worker's start (process, numpy, pandas, torch) when no start was measured on this machine yet.
STARTUP_SECONDS = 4.0
#: A start-up with no measured prediction (the first run on this machine) that has run past the
#: default is expected to need this share of its time so far again (not a fixed sliver): a busy
#: machine's start of 10 s does not rush the bar to the end of the start-up's share while it lasts.
OVERRUN = 0.25
#: A measured start-up counted down never leaves less than this share of it (or of its time so
#: far) to go: the next start of a busy machine takes 2.7-3.2 s after one of 2.7 s.
START_SLACK = 0.15
#: The note :func:`with_start` leaves on a plan whose start-up is the default, not a measurement.
START_GUESSED = "start-up: no measurement on this machine yet"
#: Units a stage must have done before its own rate gives the ETA.
MIN_UNITS = 3
#: Refinement steps assumed left before the stopping rule can be extrapolated (a few steps in).
REFINE_GUESS = 500
#: A run whose predicted seconds exceed this is flagged before launch.
SLOW_SECONDS = 600.0


def words(stage: str | None) -> str:
    """The stage in words ("refining the loadings"); unknown stages as given."""
    return STAGES.get(stage or "", stage or "")


@dataclass
class Plan:
    """Stages in run order with predicted seconds and planned units (None: unit-less).

    ``factors``: the number of factors R the plan assumed (unknown before the search) and
    ``per_factor``: the stages whose seconds depend on it, as ``[a, b, c]`` (seconds =
    a + b R + c R^2: the refinement's steps and their products, the scores), predicted again with
    the factors found once the search has found the ranks (:func:`with_factors`). ``weights``: a
    stage whose units are unequal steps (a prediction run's refit, group lasso and baselines), the
    predicted share of each step."""

    stages: list[str]
    seconds: dict[str, float]
    units: dict[str, float | None]
    notes: list[str] = field(default_factory=list)
    factors: float | None = None
    per_factor: dict[str, list[float]] = field(default_factory=dict)
    weights: dict[str, list[float]] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return float(sum(self.seconds.values()))

    def to_dict(self) -> dict:
        """Plain JSON (a run's config records the plan shown at launch)."""
        d = {"stages": list(self.stages), "seconds": {k: round(float(v), 3) for k, v in self.seconds.items()},
             "units": {k: (None if v is None else float(v)) for k, v in self.units.items()}}
        if self.factors:
            d["factors"] = float(self.factors)
            d["per_factor"] = {k: [float(f"{x:.4g}") for x in v] for k, v in self.per_factor.items()}
        if self.weights:
            d["weights"] = {k: [round(float(x), 4) for x in v] for k, v in self.weights.items()}
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "Plan | None":
        """A plan from :meth:`to_dict`'s shape; None when ``d`` is not one (an older or damaged config)."""
        try:
            stages = [str(s) for s in d["stages"]]
            seconds = {s: float(d["seconds"][s]) for s in stages}
            units = {s: (None if (d.get("units") or {}).get(s) is None else float(d["units"][s])) for s in stages}
            factors = float(d["factors"]) if d.get("factors") else None
            per_factor = {str(k): [float(x) for x in v][:3] for k, v in (d.get("per_factor") or {}).items()
                          if k in seconds}
            weights = {str(k): [float(x) for x in v] for k, v in (d.get("weights") or {}).items() if k in seconds}
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        if not stages or not all(math.isfinite(v) and v >= 0 for v in seconds.values()):
            return None
        if not all(len(v) == 3 and all(math.isfinite(x) and x >= 0 for x in v) for v in per_factor.values()) or not all(
                w and all(math.isfinite(x) and x >= 0 for x in w) and sum(w) > 0 for w in weights.values()):
            per_factor, weights = {}, {}
        return cls(stages, seconds, units, factors=factors if per_factor else None, per_factor=per_factor,
                   weights=weights)


def scaled(plan: Plan, speed: float | None) -> Plan:
    """``plan`` on a machine ``speed`` times slower than the cost model's constants (the speed a
    previous run measured here, :meth:`Tracker.calibration`); the start-up, measured as it is, is
    left alone."""
    if speed is None or not math.isfinite(float(speed)) or speed <= 0:
        return plan
    sp = min(max(float(speed), 0.1), 30.0)
    return Plan(list(plan.stages), {k: (v if k == "starting" else v * sp) for k, v in plan.seconds.items()},
                dict(plan.units), list(plan.notes), plan.factors,
                {k: [x * sp for x in v] for k, v in plan.per_factor.items()},
                {k: list(v) for k, v in plan.weights.items()})


def with_start(plan: Plan, seconds: float | None = None) -> Plan:
    """``plan`` with the worker's start-up (stage ``starting``) in front: ``seconds`` (the last start
    measured on this machine), else :data:`STARTUP_SECONDS`. A plan that has it keeps it."""
    if "starting" in plan.stages:
        return plan
    known = seconds is not None and math.isfinite(float(seconds)) and seconds > 0
    return Plan(["starting"] + list(plan.stages), {"starting": float(seconds) if known else STARTUP_SECONDS, **plan.seconds},
                {"starting": None, **plan.units}, list(plan.notes) + ([] if known else [START_GUESSED]),
                plan.factors, {k: list(v) for k, v in plan.per_factor.items()}, {k: list(v) for k, v in plan.weights.items()})


def with_factors(plan: Plan, factors: float) -> Plan:
    """``plan`` with the stages that depend on the number of factors (:attr:`Plan.per_factor`)
    predicted for ``factors`` (found by the structure search) instead of the plan's guess."""
    if not plan.per_factor or not factors or factors <= 0:
        return plan
    R = float(factors)
    seconds = dict(plan.seconds)
    for s, (a, b, c) in plan.per_factor.items():
        if s in seconds:
            seconds[s] = a + b * R + c * R * R
    return Plan(list(plan.stages), seconds, dict(plan.units), list(plan.notes), R,
                {k: list(v) for k, v in plan.per_factor.items()}, {k: list(v) for k, v in plan.weights.items()})


#: :func:`factors_prior`: rows of each modality it looks at, and factors per eigenvalue over the
#: noise edge (the fit finds more, weaker ones in whitened units: 227 factors for mfeat's 66
#: eigenvalues over the edge, 15 for nutrimouse's 6, 11 for COVID serology's 6, 11 for the clinical
#: sample's 17, and 0.4-0.8 per eigenvalue on simulated structures).
PRIOR_ROWS = 1000
FACTORS_PER_SPIKE = 3.0


def factors_prior(data: Any, seed: int = 0) -> float | None:
    """The factors a fit of ``data`` (in memory) is expected to find, before the search: per
    modality, the eigenvalues of the standardized features' correlation (up to
    :data:`PRIOR_ROWS` rows) over the noise edge ``(1 + sqrt(d/n))^2``, summed, times
    :data:`FACTORS_PER_SPIKE`, and at least two per modality. None when the data cannot be read
    (no ``X``). 40 ms for mfeat, 0.3 s at 50,000 x 900, at most ~5e8 flops a modality."""
    import numpy as np

    try:
        mods = list(data.modalities)
        observed = np.asarray(data.observed, dtype=bool)
        rng = np.random.default_rng(seed)
        spikes = 0
        for j, m in enumerate(mods):
            X = np.asarray(data.X[m])
            rows = np.flatnonzero(observed[:, j])
            # At most ~5e8 flops per modality (rows x d x min(rows, d)): wide blocks get fewer rows.
            d_m = max(int(X.shape[1]), 1)
            cap = PRIOR_ROWS
            while cap > 100 and cap * d_m * min(cap, d_m) > 5e8:
                cap = int(cap * 0.8)
            if rows.size > cap:
                rows = np.sort(rng.choice(rows, cap, replace=False))
            X = np.asarray(X[rows], dtype=np.float64)
            n, d = X.shape
            if n < 3 or d < 1:
                continue
            with np.errstate(all="ignore"):
                mu = np.nanmean(X, axis=0)
                sd = np.nanstd(X, axis=0)
            sd = np.where(np.isfinite(sd) & (sd > 0), sd, 1.0)
            Z = np.nan_to_num((X - np.nan_to_num(mu)) / sd)
            lam = np.linalg.eigvalsh(Z.T @ Z / n if d <= n else Z @ Z.T / n)
            spikes += int(np.sum(lam > (1.0 + math.sqrt(d / n)) ** 2))
        return float(max(2 * len(mods), FACTORS_PER_SPIKE * spikes))
    except (AttributeError, TypeError, ValueError, KeyError, IndexError, np.linalg.LinAlgError, MemoryError):
        return None


def _confirm_seconds(noise_s: float, ranks_s: float, small: bool) -> float:
    """The rank confirmation's seconds from the noise and rank stages' (predicted or measured)."""
    return CONFIRM_RESAMPLES * CONFIRM_SHARE * (noise_s + ranks_s) if small else CONFIRM_FOLDS * ranks_s


def _reduced(d: int, n: int) -> int:
    return int(min(d, n, 40))


def plan_fit(n_samples: int, dims: Mapping[str, int], n_nodes: int, *, estimator: str = "linear",
             max_iter: int = 5000, max_epochs: int = 100, hidden: int = 128, stability: int | None = None,
             auto_ranks: bool = True, node_sizes: Sequence[int] | None = None,
             factors: float | None = None) -> Plan:
    """Predicted seconds of each stage of a fit run (see the module docstring).

    ``node_sizes``: modalities per candidate node (default: a node of every size up to M, spread
    like the full lattice); ``stability``: resamples of the stability check after the fit;
    ``factors``: the factors expected (:func:`factors_prior` of the data; default a third of the
    smaller of features and samples, at least two per modality and at most 250), which the
    refinement's and the scores' seconds depend on until the search has found them."""
    n = max(1, int(n_samples))
    ds = [max(1, int(d)) for d in dims.values()]
    D = sum(ds)
    M = len(ds)
    # Factors: unknown before the search (rescaled once found); the data's prior, else two per modality.
    # Without the data's prior: real tables have many weak factors (a third of min(D, n): mfeat
    # 227 of 649 features, nutrimouse 15 of 40 samples), at most 250.
    R = float(factors) if factors and factors > 0 else float(max(1, 2 * M, min(D / 3, n / 3, 250)))
    # Wider than tall (and past 500 features): the estimator works in the samples' space, on each
    # block's leading components (no D x D matrix): its products are over the reduced dimensions.
    wide = D > n and D > 500
    D_ref = sum(_reduced(d, n) for d in ds) if wide else D
    sizes = list(node_sizes) if node_sizes is not None else [min(M, 1 + (i % M)) for i in range(n_nodes)]
    kbar = sum(_reduced(d, n) for d in ds) / max(M, 1)
    sec: dict[str, float] = {"load": LOAD_SECONDS + LOAD_PER_FILE * M + SECONDS_PER_CELL * n * D}
    units: dict[str, float | None] = {"load": None}
    per_factor: dict[str, list[float]] = {}
    stages = ["load"]
    # The contrastive estimator starts from a linear fit (its structure and projections).
    # One BLAS syrk over the rows (plus shifting and masking each cell), then per-modality
    # eigendecompositions on one thread.
    sec["covariance"] = 0.01 + 0.008 * M + SECONDS_PER_BLAS_FLOP * n * D * min(D, n) + 4e-9 * n * D
    sec["noise"] = 0.008 * M + 4e-9 * sum(d ** 3 for d in ds)
    # The pair screen leaves some of the candidates to test (those the pairs of modalities support:
    # 3-20 of 15-1,023 on simulated structures, 20-63 of 63 on real data); a node's cost is its
    # reduced eigenproblem, counted up to 3 modalities.
    screened = auto_ranks and M > 1
    small = screened and n <= CONFIRM_MAX_N and n * D * D <= CONFIRM_MAX_WORK
    # Small real data leave every candidate (COVID serology: 63 of 63, nutrimouse 3 of 3).
    tested = min(len(sizes), 2 * M + math.sqrt(len(sizes))) if screened and not small else len(sizes)
    per_node = sum(NODE_SECONDS + 1e-8 * (min(s, 3) * kbar) ** 3 for s in sizes) / max(1, len(sizes))
    sec["ranks"] = 4e-4 * len(sizes) + tested * per_node
    units.update(covariance=float(n), noise=None, ranks=float(max(1, round(tested))))
    stages += ["covariance", "noise", "ranks"]
    if screened:
        # The found ranks confirmed (no events while it runs): on two half folds, or on subsamples
        # (units: the resamples) where the data are small (CONFIRM_MAX_N samples, n D^2 up to
        # CONFIRM_MAX_WORK: nutrimouse, COVID serology; the estimator resamples where the half
        # folds are too small to confirm, or disagree). Predicted again from the measured noise
        # and rank stages once they are done (Tracker).
        sec["confirm"] = _confirm_seconds(sec["noise"], sec["ranks"], small)
        units["confirm"] = float(CONFIRM_RESAMPLES) if small else None
        stages.append("confirm")
    # Steps: 11-40 with 3-15 factors, 213 with mfeat's 227: about 20 + R (never past max_iter).
    # min(max_iter, 20 + R) * (step + flops * 4 D^2 R), as [a, b, c] in R (max_iter below 20 + R:
    # a fixed number of steps).
    k, fl = REFINE_STEP_SECONDS, SECONDS_PER_FLOP * 4.0 * D_ref * D_ref
    if int(max_iter) >= REFINE_PLANNED + R:
        per_factor["refine"] = [0.01 + REFINE_PLANNED * k, k + REFINE_PLANNED * fl, fl]
    else:
        per_factor["refine"] = [0.01 + int(max_iter) * k, int(max_iter) * fl, 0.0]
    a, b, c2 = per_factor["refine"]
    sec["refine"] = a + b * R + c2 * R * R
    units["refine"] = float(max_iter)
    stages.append("refine")
    if estimator != "linear":
        per_epoch = EPOCH_SECONDS_PER_FLOP * 12.0 * n * (D * max(hidden, 1) + max(hidden, 1) * R) * max(1, M) + 0.02
        sec["epoch"] = 0.2 + int(max_epochs) * per_epoch
        units["epoch"] = float(max_epochs)
        stages.append("epoch")
    # Saving: the model, its summary over the lattice's nodes and the scores (standardizing every
    # row, then its factors): 0.01-0.08 s for small sets, 0.65 s for mfeat (227 factors), 2.4 s at
    # 50,000 x 900.
    per_factor["save"] = [0.02 + 5e-5 * len(sizes) + 4e-8 * n * D, 2e-9 * n * D, 0.0]
    sec["save"] = per_factor["save"][0] + per_factor["save"][1] * R
    units["save"] = None
    stages.append("save")
    if stability and estimator == "linear":
        one = 0.8 * sum(sec[s] for s in ("covariance", "noise", "ranks"))
        sec["stability"] = int(stability) * one
        units["stability"] = float(stability)
        stages.append("stability")
    return Plan(stages, sec, units, factors=float(R), per_factor=per_factor)


#: A prediction run's steps, in the order they report: the representation refitted on the training
#: part with the group lasso on its scores, scoring the test part (bootstrap intervals), then each
#: baseline; their shares of the run's time, measured on the clinical sample (readmission),
#: nutrimouse (genotype), COVID serology (status, 5 classes) and mfeat (digit, 10 classes):
#: 0.10-0.37, 0.004-0.03, 0.16-0.58, 0.03-0.06, 0.15-0.39, 0.01-0.18.
PREDICT_SHARES = {"representation": 0.2, "scoring": 0.02, "raw": 0.4, "pca": 0.05, "shared_private": 0.22,
                  "global_node": 0.11}
#: The shares where the features outnumber the samples (nutrimouse, 141 features x 40 mice: 0.40,
#: 0.01, 0.08, 0.05, 0.43, 0.02): the group lasso's path and the HCL fits (their rank confirmation
#: on subsamples) dominate, the raw features' ridge on 30 rows is quick.
PREDICT_SHARES_WIDE = {"representation": 0.38, "scoring": 0.01, "raw": 0.1, "pca": 0.05, "shared_private": 0.4,
                       "global_node": 0.06}
PREDICT_BASELINES = ("raw", "pca", "shared_private", "global_node")


def plan_predict(n_steps: int = 4, fit_seconds: float | None = None, *, n_samples: int | None = None,
                 n_features: int | None = None, n_classes: int | None = None,
                 baselines: Sequence[str] | None = None) -> Plan:
    """A prediction run: loading, then the evaluation - the representation refitted on the
    training part (about the parent fit's ``fit_seconds``) and the group lasso, the test part's
    scores, then each baseline, as steps of unequal predicted shares (:data:`PREDICT_SHARES`).

    The evaluation's seconds grow with the classes and the features (the cross-validated group
    lasso and the raw-feature baseline fit one coefficient per feature and class), twice when the
    features outnumber the samples (the penalty paths converge slowly there), plus the HCL fits
    (the refit and two baselines, about the parent fit's seconds each). CPU seconds measured: the
    clinical sample 12.1 (predicted 12.4), nutrimouse 24.5 (24.0), COVID serology 42 (51),
    mfeat's 10 digits 307 (308). Without the data's size (an older caller): ``n_steps`` equal
    steps after the refit."""
    fit = float(fit_seconds) if fit_seconds and fit_seconds > 0 else None
    if n_features:
        base = [b for b in (PREDICT_BASELINES if baselines is None else baselines) if b in PREDICT_SHARES]
        names = ["representation", "scoring"] + base
        K = max(1, int(n_classes or 1))
        K = 1 if K <= 2 else K
        D = max(1, int(n_features))
        wide = bool(n_samples and D > n_samples)
        w = [(PREDICT_SHARES_WIDE if wide else PREDICT_SHARES)[k] for k in names]
        core = (0.04 * K * D + 3.0 * K + 3.0) * (2.0 if wide else 1.0)
        total = core * sum(w) + 1.5 * (fit or 1.0) * (1 + sum(1 for b in base if b in ("shared_private", "global_node"))) / 3
        load = LOAD_SECONDS + 2 * LOAD_PER_FILE + SECONDS_PER_CELL * int(n_samples or 0) * D
        return Plan(["load", "predict"], {"load": load, "predict": total}, {"load": None, "predict": float(len(w))},
                    weights={"predict": w})
    refit = 1.2 * fit if fit else 10.0
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

_UNCALIBRATED = ("starting", "load", "confirm", "refine", "save")
_START_MARKERS = ("load", "save")
#: Stages that report nothing while they run (the rank confirmation): entered when the stage before
#: them has done all its units, left when the next stage reports (entered then, not before).
_SILENT = ("confirm",)
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
        #: The current stage's first counted event (time, units then): its rate is measured from
        #: there, not from the stage's start (set-up before the first unit is not a unit's cost).
        self.first_t: float | None = None
        self.first_units = 0.0
        #: A weighted stage: when its last step ended.
        self.step_t = self.t0
        #: Factors the structure search found (the sum of the ranks events' ranks).
        self.found_rank = 0.0
        self.rescaled = False

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
            self._enter(stage, t if stage in _START_MARKERS or self.stage in _SILENT else self.last_t)
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
            if isinstance(info.get("rank"), (int, float)) and not isinstance(info.get("rank"), bool):
                self.found_rank += max(0.0, float(info["rank"]))
            node = info.get("node")
            self.detail = f"node {int(self.done_units)} of about {int(self.total_units)}" + (
                f" ({'+'.join(node) if isinstance(node, (tuple, list)) else node})" if node else "")
            if info.get("of") and self.done_units >= float(info["of"]) and "confirm" in self.plan.seconds:
                # The last candidate is tested: the confirmation runs (silently) until the refinement reports.
                self._enter("confirm", t)
                self._update()
                return
        elif stage == "refine":
            self.iteration = int(info.get("iteration", self.iteration + 1) or 0)
            if "objective" in info and info["objective"] is not None:
                self.history.append(float(info["objective"]))
            self.done_units = float(len(self.history))
            left = refine_remaining(self.history, self.iteration, self.max_iter, self.tol)
            if self.plan.factors:
                # Too few steps to extrapolate the stopping rule: the steps the plan assumed; and
                # until the run has done them, never fewer (the early extrapolation runs short: 100
                # steps said of mfeat's 213 at step 20).
                planned = min(float(self.max_iter - self.iteration),
                              max(REFINE_PLANNED + self.plan.factors - self.iteration, 1.0))
                left = planned if len(self.history) < 8 else max(left, planned)
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
            if self.plan.weights.get("predict"):
                self.total_units = float(len(self.plan.weights["predict"]))
                self.done_units = min(self.done_units, self.total_units)
                if info.get("step") != "representation":
                    self.step_t = t
            step = str(info.get("step") or "").replace("_", " ")
            self.detail = {"representation": "refitting the representation on the training part",
                           "group lasso": "choosing the nodes that predict the outcome"}.get(
                step, f"baseline {step}" if step == "baseline" else step)
        self._first(t)
        self._update()

    def _first(self, t: float) -> None:
        if self.first_t is None and self.done_units > 0:
            self.first_t, self.first_units = t, self.done_units

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
        self.first_t, self.first_units, self.step_t = None, 0.0, t
        if stage in ("confirm", "refine", "epoch", "save") and not self.rescaled:
            self._rescale_factors()

    def _rescale_factors(self) -> None:
        """The search has found the ranks: the stages whose seconds depend on the number of factors
        (the refinement, the scores) predicted with the factors found instead of the plan's guess."""
        self.rescaled = True
        if self.plan.factors and self.found_rank > 0 and self.plan.per_factor:
            self.plan = with_factors(self.plan, self.found_rank)

    # ---- the one rule
    def _done_fraction(self) -> float:
        """The share of the current stage's work done: its units, or its steps' predicted shares."""
        w = self.plan.weights.get(self.stage or "")
        if w:
            k = int(min(max(self.done_units, 0.0), len(w)))
            return sum(w[:k]) / sum(w)
        f = (self.done_units / self.total_units) if self.total_units else 0.0
        return min(max(f, 0.0), 1.0)

    def _rate(self) -> float | None:
        """Seconds per unit of the current stage, measured from its first counted event to its
        last (None before :data:`MIN_UNITS` units)."""
        if (self.first_t is None or self.done_units < MIN_UNITS or self.done_units <= self.first_units
                or self.last_t <= self.first_t or self.stage in self.plan.weights):
            return None
        return (self.last_t - self.first_t) / (self.done_units - self.first_units)

    def _projected(self) -> float | None:
        """The current stage's total seconds at its measured rate (None before a few units)."""
        if self.stage not in self.plan.seconds:
            return None
        w = self.plan.weights.get(self.stage)
        if w:
            f = self._done_fraction()
            return (self.step_t - self.stage_t0) / f if f > 0 and self.step_t > self.stage_t0 else None
        rate = self._rate()
        if rate is None or not self.total_units:
            return None
        return (self.first_t - self.stage_t0) + rate * max(self.total_units - self.first_units, 0.0)

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
        if (pred <= 0 or act <= 0) and "load" in self.actual and self.plan.seconds.get("load", 0) >= LOAD_MEASURES:
            # Nothing else measured yet: loading is a first (rough) measure of the machine's speed
            # (when it is long enough to say anything).
            # Only a slower load says something (a busy machine): small files load faster than any
            # cost model of cells, from the page cache.
            pred, act = self.plan.seconds["load"], max(self.actual["load"], self.plan.seconds["load"])
        if pred <= 0 or act <= 0:
            return 1.0
        # The constants are an idle machine's: a busy one is slower, and a stage's work depends on
        # the data (a fast one is measured as fast, down to a tenth of its prediction).
        return min(max(act / pred, 0.1), 10.0)

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
        return (done + self.plan.seconds[self.stage] * self._done_fraction()) / total

    def _later_plan(self) -> Plan:
        """The plan for the later stages: while the candidates are tested, the factors found so far
        plus the prior's share for the candidates still to test."""
        if self.stage != "ranks" or self.rescaled or not self.plan.per_factor or self.found_rank <= 0:
            return self.plan
        f = self._done_fraction()
        return with_factors(self.plan, self.found_rank + (self.plan.factors or 0.0) * (1.0 - f))

    def _confirm_predicted(self, cal: float) -> float:
        """The rank confirmation's seconds: from the measured noise and rank stages (the current one
        at its rate) once they ran, else the plan's."""
        if "noise" in self.actual and ("ranks" in self.actual or self.stage == "ranks"):
            ranks = self.actual.get("ranks")
            if ranks is None:
                # The candidates left to test ("of") against those the plan assumed.
                of = (self.total_units or 0.0) / max(self.plan.units.get("ranks") or 1.0, 1.0)
                ranks = self._projected() or max(self.now() - self.stage_t0, self.plan.seconds["ranks"] * cal * max(of, 1.0))
            return _confirm_seconds(self.actual["noise"], ranks, bool(self.plan.units.get("confirm")))
        return self.plan.seconds["confirm"] * cal

    def _weighted_remaining(self, t: float, cal: float) -> tuple[float, bool]:
        """A stage of unequal steps: the current step's predicted share of the stage's seconds (at
        the rate of the steps done, else predicted) counted down, and the later steps'."""
        w = self.plan.weights[self.stage]
        W = sum(w)
        k = int(min(max(self.done_units, 0.0), len(w)))
        if k >= len(w):
            return 0.0, True
        proj = self._projected()
        stage_s = proj if proj is not None else self.plan.seconds[self.stage] * cal
        step_s = stage_s * w[k] / W
        in_step = max(t - self.step_t, 0.0)
        later = stage_s * sum(w[k + 1:]) / W
        if k == 0 and step_s > 0:
            later *= max(1.0, in_step / step_s)  # the first step overruns: so will the others
        return max(step_s - in_step, OVERRUN * in_step) + later, proj is not None

    def remaining(self) -> tuple[float, bool]:
        """(seconds left, whether measured enough to be shown as an ETA)."""
        t = self.now()
        cal = self.calibration()
        st = self.stage
        in_stage = t - self.stage_t0
        measured = False
        rate = self._rate()
        if st is None or st not in self.plan.seconds:
            cur = 0.0
        elif st in self.plan.weights:
            cur, measured = self._weighted_remaining(t, cal)
        elif rate is not None and self.total_units:
            # At the measured rate, counted down from the last unit (a status rewritten between
            # events moves on), never below a tenth of it.
            left = rate * max(self.total_units - self.done_units, 0.0)
            cur = max(left - (t - self.last_t), 0.1 * left)
            measured = True
        else:
            f = self._done_fraction()
            if st == "refine" and self.total_units and self.plan.factors:
                # The first steps: the steps left (the plan's until the stopping rule can be
                # extrapolated) at the plan's seconds per step.
                per_step = max(self.plan.seconds[st] - 0.01, 0.0) / (REFINE_PLANNED + self.plan.factors)
                cur = max(per_step * cal * max(self.total_units - self.done_units, 0.0) - in_stage,
                          0.1 * self.plan.seconds[st] * cal)
            elif st == "starting" and START_GUESSED in self.plan.notes:
                cur = max(self.plan.seconds[st] - in_stage, OVERRUN * in_stage)
            elif st == "starting":
                # The last start measured here, counted down: starts vary by a fifth or more on a
                # busy machine, so never less than START_SLACK of it (or of the time so far).
                cur = max(self.plan.seconds[st] - in_stage, START_SLACK * max(self.plan.seconds[st], in_stage))
            elif st in _SILENT:
                # Nothing reports while it runs: its prediction counted down to a tenth of it, then
                # (overrun: its length is the data's, 16 or 32 resamples) half the overrun again.
                pred = self._confirm_predicted(cal)
                cur = max(pred - in_stage, 0.1 * pred, 0.5 * (in_stage - pred))
            else:
                cur = max(self.plan.seconds[st] * cal * (1.0 - f) - in_stage * (1.0 - f), 0.1 * self.plan.seconds[st] * cal)
                measured = st != "load" and bool(self.actual) and cal != 1.0 and self.plan.units.get(st) is None
        later = 0.0
        if st in self.plan.stages:
            later_stages = self.plan.stages[self.plan.stages.index(st) + 1:]
        else:
            later_stages = [s for s in self.plan.stages if s not in self.actual and s != st]
        plan = self._later_plan()
        for s in later_stages:
            if s == "confirm" and self.stage == "ranks":
                later += self._confirm_predicted(cal)
            elif s == "stability" and all(k in self.actual for k in ("covariance", "noise", "ranks")):
                n_res = self.plan.units.get("stability") or 0
                later += 0.8 * n_res * sum(self.actual[k] for k in ("covariance", "noise", "ranks"))
            else:
                later += plan.seconds[s] * cal
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
                    node_sizes=[len(nd) for nd in lat.nodes], factors=factors_prior(data) if hasattr(data, "X") else None)
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
        left = max(start_s - elapsed, OVERRUN * elapsed if not status.get("planned_start_s")
                   else START_SLACK * max(start_s, elapsed))
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
