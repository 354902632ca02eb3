"""The workspace's own datasets: uploaded files, checked before they are kept, stored by content.

```
<workspace>/staging/<token>/<name>          an upload while it is checked (removed afterwards)
<workspace>/files/<sha256>/<name>           a kept file: its folder is the SHA-256 of its bytes
<workspace>/datasets/<id>/manifest.json     a dataset: which kept file is which modality
```
An upload is written to a fresh staging folder, parsed with the library's loaders
(:func:`hcl_explore.io.load_modalities` / :func:`hcl_explore.io.load_outcomes`) alone and then
together with the dataset's other files (id column, shared samples, outcome ids), and only then
moved into ``files/``. A file that fails leaves every existing file untouched. Kept files are never
overwritten: two uploads with the same or similar names but different bytes get different folders,
and the same bytes are kept once. Manifests are plain JSON, written to a temporary name and renamed.

A manifest::

    {"id": ..., "name": null or a chosen name, "created": t, "updated": t, "version": k,
     "id_column": null or str, "outcomes_id_column": null or str,
     "modalities": {modality: {"file": display name, "path": "files/<sha256>/<name>", "sha256": ..., "size": ...}},
     "outcomes": null or {"file": ..., "path": ..., "sha256": ..., "size": ...},
     "removed": [{"modality" or "outcomes", "file", "sha256", "removed": t}]}

Stored files are never removed by a removal or a deletion (runs pin them by hash);
:func:`collect_garbage` reclaims the ones nothing refers to any more - no manifest (deleted ones in
``datasets/.deleted/`` included), no run's config, not the app's ``state.json``.

:func:`dataset_spec` turns a manifest into the dataset spec the rest of the app uses
(``runs.load_from_spec``), with the SHA-256 of every file so that :func:`verify` can refuse a file
that is gone or changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

try:
    import fcntl
except ImportError:  # pragma: no cover  (not POSIX: manifest updates are not locked)
    fcntl = None  # type: ignore[assignment]

FILES = "files"
STAGING = "staging"
DATASETS = "datasets"
_ID = re.compile(r"^[A-Za-z0-9_\-]+$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_STALE_STAGING_S = 24 * 3600


@dataclass
class Staged:
    """An upload written to the staging folder and parsed on its own; not kept yet."""

    name: str  # the display name (the uploaded file's name, without folders)
    path: str  # where it is staged: <workspace>/staging/<token>/<name>
    sha256: str
    size: int
    kind: str = "modality"  # or "outcomes"
    modality: str | None = None  # the proposed modality name (from the file name)


# ---------------------------------------------------------------------------------------------
# names and files
def display_name(name: str) -> str:
    """The file name shown to users and used on disk: no folders, no control characters, no
    leading dots, at most 200 bytes (the extension kept)."""
    base = str(name).replace("\\", "/").split("/")[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip().lstrip(".").strip()
    if not base:
        return "upload"
    stem, ext = _split_ext(base)
    while len((stem + ext).encode("utf-8")) > 200 and stem:
        stem = stem[:-1]
    return (stem + ext) if stem else ext.lstrip(".")[:200] or "upload"


def _split_ext(name: str) -> tuple[str, str]:
    low = name.lower()
    gz = ".gz" if low.endswith(".gz") else ""
    stem, ext = os.path.splitext(name[: len(name) - len(gz)])
    if len(ext) > 10:
        stem, ext = stem + ext, ""
    return stem, ext + (name[len(name) - len(gz):] if gz else "")


def modality_name(file_name: str) -> str:
    """The modality a file proposes: its name without extension ('+' is reserved for node labels)."""
    stem, _ = _split_ext(display_name(file_name))
    return stem.replace("+", "_").strip() or "modality"


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_bytes_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_json_atomic(path: str, obj: Any) -> None:
    _write_bytes_atomic(path, json.dumps(obj, indent=1, ensure_ascii=False).encode("utf-8"))


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError, RecursionError):  # missing, not text, not JSON
        return None


def _clean_staging(workspace: str) -> None:
    root = os.path.join(workspace, STAGING)
    now = time.time()
    for tok in os.listdir(root) if os.path.isdir(root) else []:
        p = os.path.join(root, tok)
        try:
            if now - os.path.getmtime(p) > _STALE_STAGING_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# staging
def stage_upload(workspace: str, name: str, data: bytes, kind: str = "modality", *,
                 id_column: str | None = None) -> Staged:
    """Write an upload to a fresh staging folder and parse it on its own (a modality table, or an
    outcomes table when ``kind="outcomes"``). Raises ValueError naming the file when it does not
    load; nothing is left behind then, and nothing outside the staging folder is ever written."""
    from . import io

    if kind not in ("modality", "outcomes"):
        raise ValueError(f"Unknown upload kind {kind!r}.")
    _clean_staging(workspace)
    disp = display_name(name)
    folder = os.path.join(workspace, STAGING, uuid.uuid4().hex)
    os.makedirs(folder)
    path = os.path.join(folder, disp)
    try:
        with open(path, "wb") as fh:
            fh.write(data)
        staged = Staged(disp, path, hashlib.sha256(data).hexdigest(), len(data), kind,
                        modality_name(disp) if kind == "modality" else None)
        try:
            if kind == "modality":
                io.load_modalities({staged.modality: path}, id_column=id_column or None)
            else:
                io.load_outcomes(path, id_column=id_column or None)
        except ValueError as exc:
            raise ValueError(_named(str(exc), disp)) from None
        except Exception as exc:  # noqa: BLE001  an unreadable upload must come back as a message
            raise ValueError(f"{disp}: could not be read ({type(exc).__name__}: {exc}).") from None
        return staged
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def discard(staged: Iterable[Staged]) -> None:
    """Remove staged uploads that will not be kept."""
    for s in staged:
        shutil.rmtree(os.path.dirname(s.path), ignore_errors=True)


def _named(msg: str, file: str) -> str:
    """A loader message that names ``file`` (the loader names files; a message about the whole set,
    such as ids not shared, gets the file that was being added in front)."""
    return msg if msg.startswith(file + ":") or file in msg else f"{file}: {msg}"


# ---------------------------------------------------------------------------------------------
# manifests
def _manifest_path(workspace: str, dataset_id: str) -> str:
    if not _ID.match(dataset_id or ""):
        raise ValueError(f"Not a dataset id: {dataset_id!r}.")
    return os.path.join(workspace, DATASETS, dataset_id, "manifest.json")


def exists(workspace: str, dataset_id: str | None) -> bool:
    try:
        return bool(dataset_id) and os.path.exists(_manifest_path(workspace, dataset_id))
    except ValueError:
        return False


def _entry_ok(e: Any) -> bool:
    return (isinstance(e, dict) and isinstance(e.get("file"), str) and isinstance(e.get("sha256"), str)
            and bool(_SHA.match(e["sha256"])) and isinstance(e.get("path"), str)
            and e["path"] == f"{FILES}/{e['sha256']}/{e['path'].split('/')[-1]}" and ".." not in e["path"].split("/"))


def read_manifest(workspace: str, dataset_id: str) -> dict:
    """A dataset's manifest, checked: ValueError naming the dataset when it is missing, damaged or
    of the wrong shape (its entries must point into ``files/<sha256>/``)."""
    path = _manifest_path(workspace, dataset_id)
    man = _read_json(path)
    if man is None and not os.path.exists(path):
        raise ValueError(f"Dataset {dataset_id!r} does not exist in this workspace.")
    if not isinstance(man, dict):
        raise ValueError(f"Dataset {dataset_id!r}: its manifest ({path}) is damaged (not a JSON object).")
    man.setdefault("modalities", {})
    man.setdefault("outcomes", None)
    man.setdefault("removed", [])
    if man.get("id") != dataset_id or not isinstance(man["modalities"], dict) \
            or not all(isinstance(k, str) and _entry_ok(e) for k, e in man["modalities"].items()) \
            or not (man["outcomes"] is None or _entry_ok(man["outcomes"])) or not isinstance(man["removed"], list) \
            or not isinstance(man.get("name"), (str, type(None))) \
            or not all(isinstance(man.get(k), (str, type(None))) for k in ("id_column", "outcomes_id_column")):
        raise ValueError(f"Dataset {dataset_id!r}: its manifest ({path}) is damaged (wrong fields).")
    return man


@contextlib.contextmanager
def _locked(workspace: str, dataset_id: str) -> Iterator[None]:
    """One writer per dataset at a time: two browser tabs (or people) adding or removing files of
    the same dataset read, change and rewrite its manifest in turn, so neither loses the other's
    change."""
    path = os.path.join(os.path.dirname(_manifest_path(workspace, dataset_id)), ".lock")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as fh:
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _save(workspace: str, man: dict) -> dict:
    man = dict(man, updated=time.time(), version=int(man.get("version", 0)) + 1)
    _write_json_atomic(_manifest_path(workspace, man["id"]), man)
    return man


def list_datasets(workspace: str) -> list[dict]:
    """The manifests of the workspace's datasets, newest first (each with ``"display"``, its name)."""
    root = os.path.join(workspace, DATASETS)
    out = []
    for did in os.listdir(root) if os.path.isdir(root) else []:
        if _ID.match(did) and exists(workspace, did):
            try:
                man = read_manifest(workspace, did)
            except ValueError:  # a damaged manifest hides no other dataset (broken_datasets lists it)
                continue
            out.append(dict(man, display=_auto_name(man)))
    return sorted(out, key=lambda m: m.get("created", 0), reverse=True)


def broken_datasets(workspace: str) -> dict[str, str]:
    """{dataset id: why its manifest cannot be read} for the datasets :func:`list_datasets` skips."""
    root = os.path.join(workspace, DATASETS)
    out = {}
    for did in os.listdir(root) if os.path.isdir(root) else []:
        if _ID.match(did) and exists(workspace, did):
            try:
                read_manifest(workspace, did)
            except ValueError as exc:
                out[did] = str(exc)
    return out


def _auto_name(man: Mapping[str, Any]) -> str:
    return man.get("name") or ("uploaded: " + ", ".join(man.get("modalities") or {}) if man.get("modalities") else "uploaded: (no files)")


def create_dataset(workspace: str, staged: Sequence[Staged] = (), *, name: str | None = None,
                   id_column: str | None = None) -> str:
    """A new dataset holding the staged uploads (checked together first; ValueError naming the file
    otherwise, and no dataset is created). Returns its id."""
    did = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:8]
    man = {"id": did, "name": name, "created": time.time(), "version": 0, "id_column": id_column or None,
           "outcomes_id_column": None, "modalities": {}, "outcomes": None, "removed": []}
    new = _with(man, staged)
    _check(workspace, new, staged)
    os.makedirs(os.path.dirname(_manifest_path(workspace, did)), exist_ok=True)
    with _locked(workspace, did):  # creates the lock file with the dataset, not at its first change
        _commit(workspace, new, staged)
    return did


def add_files(workspace: str, dataset_id: str, staged: Sequence[Staged]) -> dict:
    """Add staged uploads to a dataset once they load together with its other files; returns the new
    manifest. An upload with the display name of a file already in the dataset replaces that file
    (same modality name); otherwise it becomes a new modality with a name not yet taken. On failure
    raises ValueError naming the file, discards the staged uploads and changes nothing."""
    with _locked(workspace, dataset_id):
        try:
            man = read_manifest(workspace, dataset_id)
            new = _with(man, staged)
            _check(workspace, new, staged)
        except BaseException:
            discard(staged)
            raise
        return _commit(workspace, new, staged)


def _entry(s: Staged) -> dict:
    return {"file": s.name, "path": f"{FILES}/{s.sha256}/{s.name}", "sha256": s.sha256, "size": s.size}


def _with(man: Mapping[str, Any], staged: Sequence[Staged]) -> dict:
    new = json.loads(json.dumps(man))
    mods: dict = new["modalities"]
    for s in staged:
        if s.kind == "outcomes":
            new["outcomes"] = _entry(s)
            continue
        same = [m for m, e in mods.items() if e["file"] == s.name]
        if same:
            mods[same[0]] = _entry(s)
            continue
        base = s.modality or modality_name(s.name)
        m, k = base, 2
        while m in mods:
            m, k = f"{base}_{k}", k + 1
        mods[m] = _entry(s)
    return new


def _abs(workspace: str, rel: str) -> str:
    return os.path.join(workspace, *rel.split("/"))


def _check(workspace: str, man: Mapping[str, Any], staged: Sequence[Staged]) -> None:
    """Load the dataset the manifest would describe, staged files in place of kept ones."""
    from . import io

    at = {f"{FILES}/{s.sha256}/{s.name}": s.path for s in staged}
    paths = {m: at.get(e["path"]) or _abs(workspace, e["path"]) for m, e in man["modalities"].items()}
    kept = [e for e in list(man["modalities"].values()) + [man.get("outcomes")] if e and e["path"] not in at]
    for e in kept:
        _verify_one(_abs(workspace, e["path"]), e)
    blame = staged[0].name if len(staged) == 1 else None
    try:
        data = io.load_modalities(paths, id_column=man.get("id_column") or None) if paths else None
        oe = man.get("outcomes")
        if oe:
            opath = at.get(oe["path"]) or _abs(workspace, oe["path"])
            out = io.load_outcomes(opath, id_column=man.get("outcomes_id_column") or man.get("id_column") or None)
            if data is not None:
                out.align(data)
                mt = out.report["matching"]
                if mt["matched"] == 0:
                    raise io.LoadError(
                        f"{oe['file']}: none of its {len(out.frame):,} ids match a sample of the modality files "
                        f"(e.g. {', '.join(map(repr, mt['examples_not_in_data'][:3]))}); is it another dataset's outcomes?")
    except ValueError as exc:
        raise ValueError(_named(str(exc), blame) if blame else str(exc)) from None


@contextlib.contextmanager
def _files_lock(workspace: str, exclusive: bool) -> Iterator[None]:
    """``files/.lock``: commits hold it shared from the first stored byte to the manifest that
    refers to it; :func:`collect_garbage` holds it exclusively, so it never sees a stored file
    whose manifest is not written yet."""
    root = os.path.join(workspace, FILES)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, ".lock"), "a") as fh:
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _commit(workspace: str, man: dict, staged: Sequence[Staged]) -> dict:
    """Move staged uploads into ``files/<sha256>/`` (kept files are never overwritten unless their
    bytes no longer match their hash) and write the manifest."""
    with _files_lock(workspace, exclusive=False):
        return _commit_locked(workspace, man, staged)


def _commit_locked(workspace: str, man: dict, staged: Sequence[Staged]) -> dict:
    try:
        for s in staged:
            folder = os.path.join(workspace, FILES, s.sha256)
            os.makedirs(folder, exist_ok=True)
            dest = os.path.join(folder, s.name)
            if os.path.exists(dest) and sha256_file(dest) == s.sha256:
                continue
            tmp = f"{dest}.{uuid.uuid4().hex}.tmp"
            try:
                shutil.copyfile(s.path, tmp)
                if sha256_file(tmp) != s.sha256:
                    raise ValueError(f"{s.name}: the staged copy changed while it was saved; upload it again.")
                os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        return _save(workspace, man)
    finally:
        discard(staged)


def remove_file(workspace: str, dataset_id: str, modality: str | None = None, *, outcomes: bool = False) -> dict:
    """Remove a modality's file (or the outcomes file) from a dataset, for good: the manifest no
    longer lists it and records the removal; adding other files later does not bring it back. The
    kept bytes stay in ``files/`` (other datasets and past runs may use them)."""
    with _locked(workspace, dataset_id):
        man = read_manifest(workspace, dataset_id)
        if outcomes:
            e = man.get("outcomes")
            if not e:
                return man
            man["outcomes"] = None
            man["removed"].append({"outcomes": True, "file": e["file"], "sha256": e["sha256"], "removed": time.time()})
        else:
            if modality not in man["modalities"]:
                raise ValueError(f"The dataset has no modality {modality!r}.")
            e = man["modalities"].pop(modality)
            man["removed"].append({"modality": modality, "file": e["file"], "sha256": e["sha256"], "removed": time.time()})
        return _save(workspace, man)


def update_dataset(workspace: str, dataset_id: str, *, rename: Mapping[str, str] | None = None,
                   id_column: str | None | type(...) = ..., name: str | None | type(...) = ...) -> dict:
    """Rename modalities (``{old: new}``), set the id column (None = detect) or the dataset's name."""
    with _locked(workspace, dataset_id):
        man = read_manifest(workspace, dataset_id)
        if rename:
            new_names = [str(rename.get(m, m)).strip() for m in man["modalities"]]
            for n in new_names:
                if not n or "+" in n:
                    raise ValueError(f"Modality name {n!r} is not allowed (it must be non-empty and contain no '+').")
            dups = sorted({n for n in new_names if new_names.count(n) > 1})
            if dups:
                raise ValueError(f"Two files have the same modality name ({', '.join(dups)}); rename one.")
            man["modalities"] = dict(zip(new_names, man["modalities"].values()))
        if id_column is not ...:
            man["id_column"] = (id_column or "").strip() or None
        if name is not ...:
            man["name"] = (name or "").strip() or None
        return _save(workspace, man)


class DatasetInUse(ValueError):
    """Deleting a dataset that runs used, without naming those runs (``confirm_runs``)."""

    def __init__(self, dataset_id: str, run_ids: Sequence[str]):
        self.run_ids = list(run_ids)
        shown = ", ".join(self.run_ids[:10]) + (f" and {len(self.run_ids) - 10} more" if len(self.run_ids) > 10 else "")
        super().__init__(f"Dataset {dataset_id!r} was used by {len(self.run_ids)} run(s): {shown}. They keep their "
                         "results and their own copy of the files; confirm with those run ids to delete it.")


def delete_dataset(workspace: str, dataset_id: str, *, confirm_runs: Sequence[str] = ()) -> str:
    """Delete a dataset from the workspace's list. When runs used it (``runs.runs_using_dataset``)
    this raises :class:`DatasetInUse` listing them, unless ``confirm_runs`` names every one of them.
    Nothing is lost: the manifest moves to ``datasets/.deleted/`` and the stored files stay in
    ``files/`` (past runs verify and load them by hash). Returns where the manifest went."""
    from . import runs

    with _locked(workspace, dataset_id):
        if not exists(workspace, dataset_id):
            raise ValueError(f"Dataset {dataset_id!r} does not exist in this workspace.")
        used = runs.runs_using_dataset(workspace, dataset_id)
        missing = [r for r in used if r not in set(confirm_runs)]
        if missing:
            raise DatasetInUse(dataset_id, used)
        trash = os.path.join(workspace, DATASETS, ".deleted")
        os.makedirs(trash, exist_ok=True)
        dest = os.path.join(trash, f"{dataset_id}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")
        shutil.copytree(os.path.dirname(_manifest_path(workspace, dataset_id)), dest)
        os.remove(_manifest_path(workspace, dataset_id))
    shutil.rmtree(os.path.dirname(_manifest_path(workspace, dataset_id)), ignore_errors=True)
    return dest


# ---------------------------------------------------------------------------------------------
# reclaiming stored files
_HEX64 = re.compile(rb"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")


def referenced_hashes(workspace: str) -> set[str]:
    """The SHA-256 of every stored file something still refers to: the manifests of the datasets,
    those of deleted datasets (``datasets/.deleted/``), every run's config (the hashes it pinned)
    and the app's ``state.json`` and ``browsers/*.json``. Read as raw bytes, so a damaged file still protects every hash it
    spells."""
    found: set[str] = set()
    sources: list[str] = []
    droot = os.path.join(workspace, DATASETS)
    for dirpath, _, names in os.walk(droot):
        for f in names:
            if not f.endswith(".json"):
                continue
            man = _read_json(os.path.join(dirpath, f))
            if f == "manifest.json" and isinstance(man, dict):
                # its files, not those it lists as removed
                entries = list((man.get("modalities") or {}).values()) + [man.get("outcomes")]
                if all(isinstance(e, dict) or e is None for e in entries):
                    found.update(str(e.get("sha256")) for e in entries if e)
                    found.update(m.group(0).decode() for e in entries if e
                                 for m in [_HEX64.search(str(e.get("path", "")).encode())] if m)
                    continue
            sources.append(os.path.join(dirpath, f))  # anything else: every hash it spells
    rroot = os.path.join(workspace, "runs")
    for rid in os.listdir(rroot) if os.path.isdir(rroot) else []:
        d = os.path.join(rroot, rid)
        if os.path.isdir(d):
            sources += [os.path.join(d, f) for f in os.listdir(d) if f.endswith(".json")]
    sources.append(os.path.join(workspace, "state.json"))
    broot = os.path.join(workspace, "browsers")  # each browser's last choices (hcl_explore.ui.common)
    sources += [os.path.join(broot, f) for f in (os.listdir(broot) if os.path.isdir(broot) else []) if f.endswith(".json")]
    for p in sources:
        try:
            with open(p, "rb") as fh:
                found.update(h.decode() for h in _HEX64.findall(fh.read()))
        except OSError:
            continue
    return found


def collect_garbage(workspace: str, *, min_age_s: float = 60.0, dry_run: bool = False) -> list[str]:
    """Remove the stored files (``files/<sha256>/``) that nothing refers to any more (see
    :func:`referenced_hashes`): files removed from every dataset and pinned by no run. A file any
    manifest - also a deleted dataset's - or any run refers to is never removed, nor one stored in
    the last ``min_age_s`` seconds. Stale leftovers (``*.tmp`` in ``files/``, staging folders older
    than a day) go too. Returns the removed paths, relative to the workspace (with ``dry_run``:
    what would be removed)."""
    root = os.path.join(workspace, FILES)
    if not os.path.isdir(root):
        return []
    removed: list[str] = []
    now = time.time()
    with _files_lock(workspace, exclusive=True):
        keep = referenced_hashes(workspace)
        for sha in sorted(os.listdir(root)):
            folder = os.path.join(root, sha)
            if not os.path.isdir(folder) or not _SHA.match(sha):
                continue
            try:
                young = now - max([os.path.getmtime(folder)] + [os.path.getmtime(os.path.join(folder, f))
                                                                  for f in os.listdir(folder)]) < min_age_s
            except OSError:
                continue
            if young:
                continue
            if sha in keep:
                for f in os.listdir(folder):  # a stray temporary beside a kept file
                    p = os.path.join(folder, f)
                    if f.endswith(".tmp") and now - os.path.getmtime(p) >= min_age_s:
                        removed.append(os.path.relpath(p, workspace))
                        if not dry_run:
                            os.remove(p)
                continue
            removed.append(os.path.relpath(folder, workspace))
            if not dry_run:
                shutil.rmtree(folder)
    if not dry_run:
        _clean_staging(workspace)
    return removed


# ---------------------------------------------------------------------------------------------
# specs
def dataset_spec(workspace: str, dataset_id: str) -> dict:
    """The dataset spec of ``runs.load_from_spec`` for a stored dataset, with ``dataset_id`` and
    ``files`` ({absolute path: {"file": display name, "sha256": ...}}) for :func:`verify`."""
    man = read_manifest(workspace, dataset_id)
    ws = os.path.abspath(workspace)
    files = {}
    mods = {}
    for m, e in man["modalities"].items():
        mods[m] = _abs(ws, e["path"])
        files[mods[m]] = {"file": e["file"], "sha256": e["sha256"]}
    spec: dict = {"modalities": mods, "id_column": man.get("id_column") or None, "outcomes": None,
                  "name": _auto_name(man), "dataset_id": man["id"]}
    if man.get("outcomes"):
        spec["outcomes"] = _abs(ws, man["outcomes"]["path"])
        files[spec["outcomes"]] = {"file": man["outcomes"]["file"], "sha256": man["outcomes"]["sha256"]}
        if man.get("outcomes_id_column"):
            spec["outcomes_id_column"] = man["outcomes_id_column"]
    spec["files"] = files
    return spec


def _verify_one(path: str, meta: Mapping[str, Any]) -> None:
    name = meta.get("file") or os.path.basename(path)
    if not os.path.isfile(path):
        raise ValueError(f"{name}: the workspace copy of this file is missing ({path}); upload it again.")
    if sha256_file(path) != meta.get("sha256"):
        raise ValueError(f"{name}: the workspace copy of this file was changed after it was uploaded "
                         f"(its SHA-256 no longer matches, {path}); upload it again.")


def verify(spec: Mapping[str, Any]) -> None:
    """Check that every file of a stored dataset's spec is there with the bytes it was uploaded with;
    raises ValueError naming the file otherwise. Specs without hashes (bundled data, folders, older
    uploads) pass unchecked."""
    for path, meta in (spec.get("files") or {}).items():
        _verify_one(path, meta)


def load(spec: Mapping[str, Any], **kwargs: Any):
    """``runs.load_from_spec`` after :func:`verify`: (data, outcomes or None, truth or None)."""
    from . import runs

    verify(spec)
    return runs.load_from_spec(spec, **kwargs)


# ---------------------------------------------------------------------------------------------
# what the data page does with a batch of uploads
def ingest(workspace: str, dataset_id: str, uploads: Sequence[tuple]) -> tuple[list[str], dict[str, str]]:
    """Stage, check and add uploads one by one: ``uploads`` holds ``(name, bytes, kind)`` or
    ``(name, bytes, kind, modality)``. Returns (display names added, {display name: error}); a
    failed upload changes nothing."""
    added: list[str] = []
    errors: dict[str, str] = {}
    for up in uploads:
        name, data, kind = up[0], up[1], up[2]
        disp = display_name(name)
        try:
            man = read_manifest(workspace, dataset_id)
            s = stage_upload(workspace, name, data, kind, id_column=man.get("id_column") if kind == "modality" else
                             (man.get("outcomes_id_column") or man.get("id_column")))
            if len(up) > 3 and up[3]:
                s.modality = str(up[3])
            add_files(workspace, dataset_id, [s])
            added.append(disp)
        except ValueError as exc:
            errors[disp] = str(exc)
    return added, errors


def import_uploads(workspace: str, uploads: Sequence[Mapping[str, Any]], outcomes_path: str | None = None,
                   id_column: str | None = None) -> tuple[str, list[str], dict[str, str]]:
    """A dataset from the upload list older versions kept in ``state.json``
    (``[{"file", "path", "modality"}]`` and an outcomes path): (dataset id, added, errors)."""
    did = create_dataset(workspace, id_column=id_column)
    items: list[tuple] = []
    errors: dict[str, str] = {}
    for u in uploads:
        try:
            with open(u["path"], "rb") as fh:
                items.append((u.get("file") or os.path.basename(u["path"]), fh.read(), "modality", u.get("modality")))
        except OSError as exc:
            errors[display_name(u.get("file") or u["path"])] = f"{u.get('file')}: cannot be read ({exc.strerror})."
    if outcomes_path:
        try:
            with open(outcomes_path, "rb") as fh:
                items.append((os.path.basename(outcomes_path).removeprefix("outcomes__"), fh.read(), "outcomes"))
        except OSError as exc:
            errors[os.path.basename(outcomes_path)] = f"{os.path.basename(outcomes_path)}: cannot be read ({exc.strerror})."
    added, errs = ingest(workspace, did, items)
    return did, added, {**errors, **errs}
