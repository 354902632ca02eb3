"""Command line: ``python -m hcl_explore {demo,inspect,fit,predict,score,run,summary}`` (and
``worker``, the background process of the app's runs)."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import sys
import tempfile
import traceback
import warnings
from typing import Sequence

import pandas as pd


def _sources(specs: Sequence[str]) -> dict[str, str]:
    """``NAME=PATH`` or ``PATH`` (name = file name without extension) -> {name: path}."""
    out: dict[str, str] = {}
    for spec in specs:
        if "=" in spec and not os.path.exists(spec):
            name, path = spec.split("=", 1)
        else:
            path = spec
            name = os.path.basename(spec).split(".")[0]
        if name in out:
            raise ValueError(f"Two files give the modality name {name!r}; name them as NAME=PATH.")
        out[name] = path
    return out


def _check_output(path: str | None, option: str) -> None:
    """Refuse, before any work, an output path that cannot be written: its folder missing or not a
    folder, the path itself a folder, or no file creatable there (a probe file is made and removed)."""
    if not path:
        return
    full = os.path.abspath(path)
    folder = os.path.dirname(full)
    if os.path.isdir(full):
        raise ValueError(f"{option} {path}: is a folder; give a file name.")
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise ValueError(f"{option} {path}: the folder {folder} {what}.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".hcl_write_check_", dir=folder)
        os.close(fd)
        os.remove(probe)
        if os.path.exists(full) and not os.access(full, os.W_OK):
            raise PermissionError(errno.EACCES, "the file is read-only")
    except OSError as exc:
        raise ValueError(f"{option} {path}: cannot write there ({exc.strerror or exc}).") from None


def _load_model(path: str):
    """A saved model; a missing, damaged or foreign file is one ValueError naming it."""
    from hcl_explore.report import load_model

    return load_model(path)


def _workspace(path: str | None) -> str:
    from hcl_explore import runs

    try:
        return runs.workspace_dir(path)
    except OSError as exc:
        where = path or os.environ.get("HCL_EXPLORE_WORKSPACE") or os.path.join(os.getcwd(), "workspace")
        raise ValueError(f"--workspace {where}: cannot be used as a workspace folder ({exc.strerror or exc}).") from None


def _load(args: argparse.Namespace):
    """(data, outcomes or None) from --dataset or --modality/positional files."""
    import hcl_explore as hx

    specs = list(getattr(args, "files", None) or []) + list(getattr(args, "modality", None) or [])
    dataset = getattr(args, "dataset", None)
    if dataset is None and len(specs) == 1 and (os.path.isdir(specs[0]) or specs[0] in hx.list_datasets()):
        dataset = specs[0]
        specs = []
    if dataset is not None:
        if specs:
            raise ValueError("Give either a dataset folder or modality files, not both.")
        pre = getattr(args, "preprocessing", None)
        ds = hx.load_dataset(dataset, **({"preprocessing": pre} if pre else {}))
        return ds.data, ds.outcomes
    if not specs:
        raise ValueError("No input: give modality files (NAME=PATH) or a dataset folder (e.g. sample_data/clinical).")
    pre = getattr(args, "preprocessing", None)
    data = hx.load_modalities(_sources(specs), id_column=args.id_column, **({"preprocessing": pre} if pre else {}))
    outcomes = None
    if getattr(args, "outcomes", None):
        outcomes = hx.load_outcomes(args.outcomes, id_column=args.id_column)
        outcomes.align(data)
    return data, outcomes


def _parse_ranks(text: str):
    if text == "auto":
        return "auto"
    if text.isdigit():
        return int(text)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--ranks must be 'auto', an integer or a JSON object like '{{\"a+b\": 2}}': {exc}") from None


def _print_summary(model, out=None) -> None:
    out = out or sys.stdout
    df = model.summary()
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.precision", 3):
        print(df.to_string(index=False), file=out)
    print(
        f"\nrefinement: {model.n_iter_} evaluations, objective {model.objective_:.6g}, "
        f"converged={model.converged_}, device={model.device_}, fit time {model.timings_.get('total', float('nan')):.2f}s",
        file=out,
    )


def cmd_demo(args: argparse.Namespace) -> int:
    import hcl_explore as hx
    from hcl_explore import metrics

    mods = ["labs", "vitals", "notes"]
    ranks = {("labs", "vitals", "notes"): 2, ("labs", "vitals"): 2, ("vitals", "notes"): 1,
             ("labs",): 3, ("vitals",): 2, ("notes",): 2}
    data, truth = hx.simulate(n=args.n, dims={"labs": 60, "vitals": 40, "notes": 80}, ranks=ranks,
                              noise=[0.3, 0.4, 0.5], missing=args.missing, seed=args.seed)
    print(f"Simulated {data.n_samples} samples, modalities {mods}; {args.missing:.0%} lack one modality.")
    print("True structure: " + ", ".join(f"{hx.node_label(n)}:{r}" for n, r in truth.ranks.items() if r))
    model = hx.HCL(lattice=hx.Lattice.full(mods), ranks="auto", device=args.device, random_state=args.seed).fit(data)
    print("Found structure: " + ", ".join(f"{hx.node_label(n)}:{model.ranks_[n]}" for n in model.nodes_) + "\n")
    _print_summary(model)
    rep = metrics.recovery_report(truth, model)
    print(
        f"\nrecovery vs truth: structure F1 {rep['f1']:.2f}, rank accuracy {rep['rank_accuracy']:.2f}, "
        f"mean sin(theta) {rep['mean_sin_theta']:.3f}, W W^T relative error {rep['overall_gram_error']:.3f}"
    )
    return 0


def _estimator_params(args: argparse.Namespace) -> dict:
    """HCL keyword arguments from the shared estimator options of ``fit`` and ``run``."""
    from hcl_explore import runs

    params = runs.fit_params(args.estimator, args.standardize, args.device, epochs=args.epochs, loss=args.loss,
                             hidden=[int(h) for h in args.hidden.split(",") if h.strip()])
    if args.estimator == "contrastive" and getattr(args, "checkpoint_dir", None):
        params.update({"checkpoint_dir": args.checkpoint_dir, "resume": bool(args.resume)})
    return params


def _add_estimator_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--standardize", default="auto", choices=["auto", "yes", "no"])
    p.add_argument("--device", default="auto")
    # Any registered estimator (built-ins, modules of hcl_explore/estimators/, HCL_EXPLORE_ESTIMATORS):
    # checked when the fit starts, so that building the parser imports nothing heavy.
    p.add_argument("--estimator", default="linear",
                   help="linear (default), contrastive, or a registered estimator (docs/architecture.md)")
    p.add_argument("--epochs", type=int, default=100, help="contrastive: maximum epochs (early stopping may end sooner)")
    p.add_argument("--hidden", default="128", help="contrastive: hidden widths, comma-separated (0: linear encoders)")
    p.add_argument("--loss", default="infonce", choices=["infonce", "paper"], help="contrastive: loss")


def cmd_fit(args: argparse.Namespace) -> int:
    import hcl_explore as hx

    if args.resume and not args.checkpoint_dir:
        raise ValueError("--resume needs --checkpoint-dir.")
    _check_output(args.out, "--out")
    if args.checkpoint_dir and args.estimator == "contrastive":
        try:
            os.makedirs(args.checkpoint_dir, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"--checkpoint-dir {args.checkpoint_dir}: cannot create that folder "
                             f"({exc.strerror or exc}).") from None
        _check_output(os.path.join(args.checkpoint_dir, "checkpoint.pt"), "--checkpoint-dir")
    ranks = _parse_ranks(args.ranks)
    data, _ = _load(args)
    model = hx.HCL(lattice=args.lattice, ranks=ranks, **_estimator_params(args)).fit(data)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun every process trains; rank 0 reports and saves
    _print_summary(model)
    if args.out:
        model.save(args.out)
        print(f"\nsaved model to {args.out}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import hcl_explore as hx

    data, outcomes = _load(args)
    if args.json:
        rep = {"data": data.report}
        if outcomes is not None:
            rep["outcomes"] = outcomes.report
        print(json.dumps(rep, indent=2, default=str))
        return 0
    print(hx.format_report(data.report))
    if outcomes is not None:
        r = outcomes.report
        print(f"\noutcomes ({r['file']}, id column {r['id_column']!r}):")
        for c, kind in outcomes.kinds.items():
            info = r["outcomes"][c]
            extra = (f", {info['positives']} positive (= {outcomes.positive[c]!r})" if kind == "binary"
                     else f", mean {info['mean']:.3g}, sd {info['sd']:.3g}" if kind == "continuous"
                     else f", levels {info['levels']}")
            print(f"  {c}: {kind}, {info['labelled']} labelled{extra}")
        for d in r["dropped"]:
            print(f"  dropped {d['column']!r}: {d['reason']}")
        mt = r.get("matching", {})
        if mt:
            print(f"  matched to {mt['matched']} of {data.n_samples} samples; {mt['outcome_ids_not_in_data']} outcome id(s) "
                  f"not in the data{' (e.g. ' + ', '.join(mt['examples_not_in_data']) + ')' if mt['examples_not_in_data'] else ''}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import hcl_explore as hx

    _check_output(args.json, "--json")
    model = _load_model(args.model)
    # Load the tables the way the model's training data were cleaned (same columns and levels).
    args.preprocessing = model.preprocessing_
    data, outcomes = _load(args)
    if outcomes is None:
        raise ValueError("No outcomes: give --outcomes FILE (or a dataset folder whose dataset.json names one).")
    cols = outcomes.columns
    outcome = args.outcome or (cols[0] if len(cols) == 1 else None)
    if outcome is None:
        raise ValueError(f"Several outcome columns {cols}; choose one with --outcome.")
    if outcome not in cols:
        raise ValueError(f"No outcome column {outcome!r}; have {cols}.")
    y = outcomes.y(outcome, data)
    report = hx.evaluate_prediction(model, data, pd.Series(y, name=outcome), task=args.task, test_size=args.test_size,
                                    cv=args.cv, random_state=args.seed, refit=not args.no_refit,
                                    bias_correction=args.bias_correction, n_bootstrap=args.bootstrap)
    print(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report.to_dict(), fh, indent=1, default=str)
        print(f"\nwrote {args.json}")
    return 0


def _wide_parquet(specs: Sequence[str]) -> str | None:
    """The path when the input is one Parquet file, or one folder of Parquet files that is not a
    dataset folder (no dataset.json), holding every modality's columns side by side; else None."""
    if len(specs) != 1 or not os.path.exists(specs[0]):
        return None
    path = specs[0]
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "dataset.json")):
            return None
        from hcl_explore.data import parquet_files

        try:
            parquet_files(path)
        except ValueError:
            return None
        return path
    return path if path.lower().endswith((".parquet", ".parq", ".pq")) else None


def cmd_score(args: argparse.Namespace) -> int:
    """Factor scores of new rows with a saved model, written to a Parquet file chunk by chunk."""
    from hcl_explore import dask_source as DS

    _check_output(args.out, "--out")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive number of rows, got {args.batch_size}.")
    model = _load_model(args.model)
    specs = list(args.files) + list(args.modality)
    wide = None if args.dataset else _wide_parquet(specs)
    if wide is not None:
        # One table with every modality's columns: streamed batch by batch, never loaded whole.
        n = DS.score_parquet(model, wide, args.out, id_column=args.id_column, batch_size=args.batch_size,
                             scale=args.scale)
    else:
        # Modality files or a dataset folder: loaded the way the model's training data were cleaned.
        args.preprocessing = model.preprocessing_
        data, _ = _load(args)
        if list(data.modalities) != list(model.modalities_):
            raise ValueError(f"The data's modalities {list(data.modalities)} differ from the model's {model.modalities_}.")
        id_name = args.id_column or next(iter({(model.preprocessing_ or {}).get(m, {}).get("id_column")
                                               for m in model.modalities_} - {None}), None) or "id"
        n = DS.score_data(model, data, args.out, chunk_size=args.batch_size, id_name=id_name, scale=args.scale)
    print(f"scored {n} rows: {len(DS.score_columns(model))} score columns -> {args.out}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from hcl_explore.runs import run_worker

    return run_worker(args.run_dir)


def cmd_run(args: argparse.Namespace) -> int:
    """Create a run directory (the app's format) and execute it here, headless."""
    from hcl_explore import runs

    ws = _workspace(args.workspace)
    if args.dataset:
        spec = {"bundled": args.dataset, "name": args.dataset} if not os.path.isdir(args.dataset) else \
            {"folder": os.path.abspath(args.dataset), "name": os.path.basename(os.path.abspath(args.dataset))}
    else:
        srcs = _sources(list(args.files) + list(args.modality))
        if not srcs:
            raise ValueError("No input: give --dataset or modality files (NAME=PATH).")
        spec = {"modalities": {k: os.path.abspath(v) for k, v in srcs.items()}, "id_column": args.id_column,
                "outcomes": os.path.abspath(args.outcomes) if args.outcomes else None, "name": "files"}
    params = _estimator_params(args)
    rid = runs.create_run(ws, runs.RunConfig.fit(spec, args.lattice, _parse_ranks(args.ranks), params,
                                                 stability=runs.stability_option(args.stability > 0, args.stability)))
    d = runs.run_path(ws, rid)
    print(f"run {rid} in {d}", flush=True)
    from hcl_explore.runs import files as RF

    log = RF.path(d, RF.LOG)
    # The worker's own output (warnings, a failure's traceback) goes to the run's log, as for runs
    # the app launches; here only its one-line result is printed.
    with open(log, "a", encoding="utf-8") as fh, contextlib.redirect_stderr(fh):
        rc = runs.run_worker(d)
    st = runs.read_status(ws, rid)
    if st["state"] != "done":
        raise ValueError(f"run {rid} {st['state']}: {st.get('error') or 'see the log'} (full log: {log})")
    _print_summary(_load_model(RF.path(d, RF.MODEL)))
    return rc


def cmd_summary(args: argparse.Namespace) -> int:
    _print_summary(_load_model(args.model))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hcl_explore", description="Hierarchical contrastive learning over modality subsets.")
    p.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="simulate a 3-modality data set, fit HCL with automatic ranks, print the summary")
    d.add_argument("--n", type=int, default=3000)
    d.add_argument("--missing", type=float, default=0.1)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default="auto")
    d.set_defaults(func=cmd_demo)
    f = sub.add_parser("fit", help="fit HCL on modality tables (CSV/TSV/Parquet) or a dataset folder")
    f.add_argument("files", nargs="*", metavar="NAME=PATH", help="modality files (or one dataset folder)")
    f.add_argument("--modality", action="append", default=[], metavar="NAME=PATH")
    f.add_argument("--dataset", default=None, help="a folder with dataset.json, or a bundled dataset name (clinical, omics)")
    f.add_argument("--id-column", default=None)
    f.add_argument("--lattice", default="full", choices=["full", "shared_private", "global_only", "pairwise"])
    f.add_argument("--ranks", default="auto")
    _add_estimator_options(f)
    f.add_argument("--checkpoint-dir", default=None, help="contrastive: write a checkpoint there after every epoch")
    f.add_argument("--resume", action="store_true", help="contrastive: continue from the checkpoint in --checkpoint-dir")
    f.add_argument("--out", default=None, help="save the fitted model (.npz)")
    f.set_defaults(func=cmd_fit)
    i = sub.add_parser("inspect", help="load modality tables (and outcomes) and print the load report")
    i.add_argument("files", nargs="*", metavar="NAME=PATH", help="modality files, or one dataset folder")
    i.add_argument("--modality", action="append", default=[], metavar="NAME=PATH")
    i.add_argument("--dataset", default=None, help="a folder with dataset.json, or a bundled dataset name")
    i.add_argument("--id-column", default=None)
    i.add_argument("--outcomes", default=None, help="an outcomes table (CSV/TSV/Parquet)")
    i.add_argument("--json", action="store_true", help="print the full report as JSON")
    i.set_defaults(func=cmd_inspect)
    pr = sub.add_parser("predict", help="evaluate prediction of an outcome from a saved model's hierarchy vs baselines")
    pr.add_argument("model", help="a model saved by `fit --out` (.npz)")
    pr.add_argument("files", nargs="*", metavar="NAME=PATH", help="modality files, or one dataset folder")
    pr.add_argument("--modality", action="append", default=[], metavar="NAME=PATH")
    pr.add_argument("--dataset", default=None, help="a folder with dataset.json, or a bundled dataset name")
    pr.add_argument("--id-column", default=None)
    pr.add_argument("--outcomes", default=None, help="the outcomes table (CSV/TSV/Parquet)")
    pr.add_argument("--outcome", default=None, help="which outcome column")
    pr.add_argument("--task", default="auto", choices=["auto", "binary", "multiclass", "continuous"])
    pr.add_argument("--test-size", type=float, default=0.25)
    pr.add_argument("--cv", type=int, default=5)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples for the intervals")
    pr.add_argument("--no-refit", action="store_true", help="use the saved representation as is (may have seen the test samples)")
    pr.add_argument("--bias-correction", action="store_true", help="continuous outcomes: the bias-corrected estimator")
    pr.add_argument("--json", default=None, help="also write the report as JSON here")
    pr.set_defaults(func=cmd_predict)
    sc = sub.add_parser("score", help="factor scores of new rows with a saved model, streamed to a Parquet file")
    sc.add_argument("model", help="a model saved by `fit --out` (.npz)")
    sc.add_argument("files", nargs="*", metavar="DATA",
                    help="one Parquet file or folder of Parquet files with every modality's columns (streamed), "
                         "or modality files NAME=PATH, or a dataset folder")
    sc.add_argument("--modality", action="append", default=[], metavar="NAME=PATH")
    sc.add_argument("--dataset", default=None, help="a folder with dataset.json, or a bundled dataset name")
    sc.add_argument("--id-column", default=None,
                    help="the sample id column (default: the model's; without one, the row number)")
    sc.add_argument("--out", required=True, help="the scores (.parquet): the id, then one column per factor '<node>:<k>'")
    sc.add_argument("--batch-size", type=int, default=16384, help="rows scored at a time")
    sc.add_argument("--scale", default="data", choices=["data", "unit"], help="as HCL.transform(scale=...)")
    sc.set_defaults(func=cmd_score)
    w = sub.add_parser("worker", help=argparse.SUPPRESS)
    w.add_argument("run_dir")
    w.set_defaults(func=cmd_worker)
    r = sub.add_parser("run", help="create a run directory (as the app does) and execute it here")
    r.add_argument("files", nargs="*", metavar="NAME=PATH")
    r.add_argument("--modality", action="append", default=[], metavar="NAME=PATH")
    r.add_argument("--dataset", default=None, help="a dataset folder or a bundled dataset name (clinical, omics)")
    r.add_argument("--id-column", default=None)
    r.add_argument("--outcomes", default=None)
    r.add_argument("--workspace", default=None, help="default: $HCL_EXPLORE_WORKSPACE or ./workspace")
    r.add_argument("--lattice", default="full", choices=["full", "shared_private", "global_only", "pairwise"])
    r.add_argument("--ranks", default="auto")
    r.add_argument("--stability", type=int, default=0, metavar="N",
                   help="after the fit, refit the structure on N subsamples and save how often each node is "
                        "found (saved with the run; linear estimator; 0 = off)")
    _add_estimator_options(r)
    r.set_defaults(func=cmd_run)
    s = sub.add_parser("summary", help="print the summary of a saved model")
    s.add_argument("model")
    s.set_defaults(func=cmd_summary)
    for sp in sub.choices.values():  # --debug also after the command (SUPPRESS: keep one given before it)
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="on an error, show the full traceback")
    return p


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command. Every error is one line on stderr (``error: ...``) and a nonzero exit: 2 for
    bad input (a ValueError: files, options, damaged model or checkpoint), 1 for anything else,
    130 when interrupted. ``--debug`` shows the traceback instead."""
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    # Library warnings are held back until the command ends: shown after a success, dropped after
    # an error (whose one line says what matters; --debug shows them with the traceback).
    with warnings.catch_warnings(record=True) as caught:
        try:
            rc = _run(args, debug)
        except BaseException:
            _show_warnings(caught)
            raise
    if rc == 0 or debug:
        _show_warnings(caught)
    return rc


def _show_warnings(caught) -> None:
    seen = set()
    for w in caught:
        key = (str(w.message), w.category)
        if key not in seen:
            seen.add(key)
            print(f"warning: {_one_line(w.message)}", file=sys.stderr)


def _run(args: argparse.Namespace, debug: bool) -> int:
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001  one line for the user; --debug for the traceback
        if debug:
            traceback.print_exc()
        if isinstance(exc, ValueError):
            print(f"error: {_one_line(exc)}", file=sys.stderr)
            return 2
        msg = _one_line(exc)
        hint = "" if debug else " (--debug shows the traceback)"
        print(f"error: {type(exc).__name__}{': ' + msg if msg else ''}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
