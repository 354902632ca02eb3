"""Shared state of the app: the workspace on disk, the current dataset, the selected run.

Everything a user does is kept in the workspace folder (``$HCL_EXPLORE_WORKSPACE`` or
``./workspace``): uploads, the dataset and lattice choices (each browser's in ``browsers/``, the
last ones in ``state.json``) and runs, so a refresh, a closed tab or an app restart loses nothing,
and two people never change each other's current dataset. The selected run id lives in the URL
(``?run=``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from typing import Any

import streamlit as st

from .. import datasets, runs
from ..runs import files as RF
from ..lattice import Lattice, parse_node_label

DEFAULT_DATASET = {"bundled": "clinical", "name": "clinical (bundled sample)"}
#: The narrowest width (px) a figure gets across the page in a 1280-px wide window with the sidebar
#: open (the graphs' ``width=``: their labels are spaced for it; wider is fine). Graphs are not put
#: in half columns.
FULL_PX = 680


def workspace() -> str:
    return runs.workspace_dir()


def _state_path() -> str:
    return os.path.join(workspace(), "state.json")


_SESSION_KEY = "_hcl_working_state"
#: Where each browser's last choices are kept (``<workspace>/browsers/<browser key>.json``).
BROWSERS_DIR = "browsers"
_XSRF_COOKIE = "_streamlit_xsrf"


def browser_key(cookies: Any = None) -> str | None:
    """A stable, anonymous key of this browser: a hash of the token in Streamlit's XSRF cookie
    (``2|mask|masked token|time``; the server re-masks it on every page load but keeps the token,
    so the key is the same for every tab and reload of one browser and differs between browsers or
    browser profiles). None without the cookie (XSRF protection off, tests)."""
    if cookies is None:
        try:
            cookies = st.context.cookies
        except Exception:  # noqa: BLE001  no browser (AppTest, bare mode)
            return None
    raw = (cookies or {}).get(_XSRF_COOKIE)
    parts = str(raw or "").split("|")
    if len(parts) < 3 or parts[0] != "2":
        return None
    try:
        mask, masked = bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
    except ValueError:
        return None
    if not mask or not masked:
        return None
    token = bytes(b ^ mask[i % len(mask)] for i, b in enumerate(masked))
    return hashlib.sha256(b"hcl-explore browser " + token).hexdigest()[:32]


def _browser_state_path() -> str | None:
    key = browser_key()
    return os.path.join(workspace(), BROWSERS_DIR, f"{key}.json") if key else None


def get_state() -> dict:
    """This browser session's choices (dataset spec, lattice, ranks, settings). Each session has
    its own: a second tab or a second person choosing a dataset does not change this one. A new
    session (a reload, a page opened by its address, an app restart) starts from this browser's
    last choices (``browsers/<key>.json``, see :func:`browser_key`), or, in a browser that made
    none, from the last choices saved in the workspace (``state.json``); runs are shared by
    everyone."""
    cur = st.session_state.get(_SESSION_KEY)
    if cur is None:
        mine = _browser_state_path()
        cur = runs.read_json(mine, None) if mine else None
        if not isinstance(cur, dict) or not cur:
            cur = runs.read_json(_state_path(), None)
        if not isinstance(cur, dict) or not cur:
            cur = {"dataset": DEFAULT_DATASET}
        st.session_state[_SESSION_KEY] = cur
    return dict(cur)


def set_state(**kw: Any) -> dict:
    """Change this session's choices; they are saved as this browser's last choices and as the
    workspace's (the start of a browser that made none yet)."""
    cur = get_state()
    cur.update(kw)
    st.session_state[_SESSION_KEY] = cur
    mine = _browser_state_path()
    if mine:
        os.makedirs(os.path.dirname(mine), exist_ok=True)
        runs.write_json(mine, cur)
    runs.write_json(_state_path(), cur)
    return dict(cur)


@st.cache_resource(show_spinner="Loading data ...", max_entries=8)
def _load(spec_json: str, stamp: float):  # noqa: ARG001  stamp: reload when files change
    # Uploaded datasets carry their files' hashes: a file gone or changed is refused by name.
    return datasets.load(json.loads(spec_json))


def _stamp(spec: dict) -> float:
    paths = list((spec.get("modalities") or {}).values()) + [spec.get("outcomes")]
    return max([os.path.getmtime(p) for p in paths if p and os.path.exists(p)] + [0.0])


def load_dataset(spec: dict):
    """(data, outcomes, truth) for a dataset spec, cached; raises the loader's errors."""
    return _load(json.dumps(spec, sort_keys=True), _stamp(spec))


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|~$])")
_MD_LINE_START = re.compile(r"^(\s*\d*)([-+=>.)])", re.MULTILINE)
_MD_DIRECTIVE = re.compile(r":(?=[\w/\-]+:)")


def md(text: object) -> str:
    """``text`` (a user-supplied name, a loader message) escaped for Streamlit markdown: shown as
    written, never as formatting, links, LaTeX, emoji or icon codes. Newlines become spaces."""
    s = " ".join(str(text).splitlines())
    s = _MD_SPECIAL.sub(r"\\\1", s)
    s = _MD_LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), s)
    # ``:smile:`` / ``:material/home:`` are replaced after escaping: a zero-width space breaks them.
    return _MD_DIRECTIVE.sub(":\u200b", s)


def code(text: object) -> str:
    """``text`` as an inline code span (markdown inside it is not interpreted)."""
    s = " ".join(str(text).splitlines())
    ticks = max((len(t) for t in re.findall(r"`+", s)), default=0) + 1
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{'`' * ticks}{pad}{s}{pad}{'`' * ticks}"


def current_dataset():
    """(spec, data, outcomes, truth, error message or None) of the dataset chosen on the data page."""
    spec = get_state().get("dataset") or DEFAULT_DATASET
    try:
        data, outcomes, truth = load_dataset(spec)
        return spec, data, outcomes, truth, None
    except ValueError as exc:
        return spec, None, None, None, str(exc)


def lattice_choice(modalities: list[str]) -> tuple[Lattice | None, dict, str]:
    """(candidate lattice, ranks {node: int | "auto"}, preset name) as saved by the lattice page.

    The lattice is None when every node was switched off (nothing can be trained). After a dataset
    switch a preset applies to the new modalities, and a custom lattice is kept when its modalities
    are all in the new dataset (the private nodes of new modalities are added); otherwise the full
    lattice."""
    s = get_state().get("lattice") or {}
    mods = list(modalities)
    saved = list(s.get("modalities") or [])
    preset = s.get("preset", "custom")
    if saved != mods:
        if preset != "custom" and preset in ("full", "shared_private", "global_only", "pairwise"):
            try:
                return Lattice.preset(preset, mods), {}, preset
            except ValueError:
                return Lattice.full(mods), {}, "full"
        if not saved or not set(saved) <= set(mods) or not s.get("nodes"):
            return Lattice.full(mods), {}, "full"
    if "nodes" in s and not s["nodes"]:
        return None, {}, "custom"
    nodes = [tuple(n) for n in s.get("nodes", [])] or Lattice.full(mods).nodes
    nodes += [(m,) for m in mods if m not in saved and saved and (m,) not in nodes]
    try:
        lat = Lattice(mods, nodes)
    except ValueError:
        return Lattice.full(mods), {}, "full"
    ranks = {lat.node(parse_node_label(k)): v for k, v in (s.get("ranks") or {}).items() if parse_node_label(k) in lat}
    return lat, ranks, preset


def selected_run() -> str | None:
    rid = st.query_params.get("run")
    if rid:
        try:
            if os.path.isdir(runs.run_path(workspace(), rid)):
                return rid
        except ValueError:
            return None
    return None


def select_run(rid: str | None) -> None:
    if rid:
        st.query_params["run"] = rid
    elif "run" in st.query_params:
        del st.query_params["run"]


def finished_runs(kind: str = "fit"):
    df = runs.list_runs(workspace())
    return df[(df.kind == kind) & (df.state == "done")] if len(df) else df


@st.cache_resource(max_entries=16, show_spinner=False)
def _model(path: str, mtime: float):  # noqa: ARG001
    from ..report import load_model

    return load_model(path)  # a ValueError naming the file on any damage (not cached: tried again)


def run_model(rid: str):
    """The fitted model of run ``rid`` (cached by file and modification time). A missing, empty,
    truncated or damaged model file raises ``ValueError`` with a message for the page."""
    path = RF.path(runs.run_path(workspace(), rid), RF.MODEL)
    try:
        mtime = os.path.getmtime(path)
    except OSError:
        raise ValueError(f"This run's model file is missing: {path}") from None
    try:
        return _model(path, mtime)
    except ValueError as exc:
        raise ValueError(f"This run's model file is damaged: {exc}") from None


def load_run_model(rid: str):
    """:func:`run_model` for a page: on a missing or damaged file the error is shown and the page
    stops there (one run's damage never crashes the app; other runs stay selectable above)."""
    try:
        return run_model(rid)
    except ValueError as exc:
        st.error(md(exc), icon=":material/error:")
        st.stop()


def run_scores(rid: str, label: str):
    """(scores of node ``label`` (n, r) or None, error message or None) of run ``rid``, read from its
    scores file by the safe reader. A damaged file gives the message, never an exception."""
    from ..report import read_scores

    try:
        sc = read_scores(runs.run_path(workspace(), rid))
    except ValueError as exc:
        return None, f"This run's scores file is damaged: {exc}"
    if sc is None:
        return None, None
    return sc[1].get(label), None


def run_pick(label: str = "Run", kind: str = "fit") -> str | None:
    """A select box over finished runs, defaulting to the run in the URL; keeps the URL in sync."""
    done = finished_runs(kind)
    if not len(done):
        st.info("No finished run yet. Launch one on the **Train** page.")
        return None
    ids = list(done.run_id)
    cur = selected_run()
    idx = ids.index(cur) if cur in ids else 0
    labels = {r.run_id: f"{r.dataset or 'dataset ?'} · {r.lattice or 'custom'} lattice · started {r.started} ({r.run_id})"
              for r in done.itertuples()}
    rid = st.selectbox(label, ids, index=idx, format_func=lambda r: labels.get(r, r),
                       help="Finished runs, newest first: the dataset, the candidate lattice and when the run started.")
    if rid != cur:
        select_run(rid)
    return rid


def device_label() -> str:
    """Where training runs, without importing torch (seconds on a busy machine) unless it is loaded."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        if torch.cuda.is_available():
            return f"GPU: {torch.cuda.get_device_name(0)}"
        return f"CPU ({os.cpu_count()} cores; no CUDA GPU found)"
    if os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version"):
        return f"NVIDIA GPU driver found (the worker uses the GPU when CUDA works); {os.cpu_count()} CPU cores"
    return f"CPU ({os.cpu_count()} cores; no CUDA GPU found)"


def ago(t: float | None) -> str:
    if not t:
        return ""
    s = time.time() - t
    return f"{s:.0f} s ago" if s < 120 else f"{s / 60:.0f} min ago"
