"""Reading ``.npz`` files (saved models, a run's factor scores) that may be damaged or hostile.

``np.load`` trusts a file: a header declaring a shape of 10**12 allocates (or fails deep inside
numpy), a truncated or bit-flipped file raises ``BadZipFile``/``EOFError``/``OSError`` from wherever
it broke. :func:`read_npz` checks everything it can *before* allocating, from the zip directory and
each member's ``.npy`` header, and turns every failure into one ``ValueError`` naming the file:

* the file is a zip with at most ``max_members`` members, each a ``NAME.npy`` (stored or deflated,
  not encrypted, no duplicate names);
* every header is a version 1.0/2.0 ``.npy`` header (parsed by ``numpy.lib.format``, never with
  pickle) declaring a plain dtype (no object, structured or sub-array dtype) and a shape whose size
  in bytes is within ``max_bytes`` (one member and all members together);
* the zip directory's sizes agree with the header (header + data = the member's size), and the data
  read matches (length and CRC);
* a ``meta`` member is a 0-d unicode array holding a JSON object; it comes back parsed (a dict).

``required`` names members that must be there, with their shape (``None`` entries: any length) and
dtype kinds (``"f"``, ``"iu"``, ...); it may also be a function of the parsed ``meta`` (so that the
expected shapes of a model's arrays follow from its header). :func:`read_model_file` does that for
a model written by ``HCL.save``, then :func:`validate_model_arrays` checks the arrays against the
header (``W`` is (sum of dims, sum of ranks), and so on).
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Union

import numpy as np
from numpy.lib import format as npformat

#: Default limit on the bytes of the arrays of one file (each member and all together).
DEFAULT_MAX_BYTES = 1 << 30
#: Default limit on the number of members of one file.
DEFAULT_MAX_MEMBERS = 4096
#: Longest ``.npy`` header accepted (numpy writes ~128 bytes; its own limit is 10000 characters).
MAX_HEADER_BYTES = 16384

#: Largest ``meta`` member (the JSON header: names of every feature, ...) read.
MAX_META_BYTES = 256 << 20

#: Dtype kinds an array may have: bool, integers, floats, complex, bytes and unicode strings.
ALLOWED_KINDS = "biufcSU"

ShapeSpec = Union[tuple, None]
Requirements = Mapping[str, tuple]  # {name: (shape, kinds)} or (shape, kinds, OPTIONAL)

#: Third element of a requirement: the member may be absent; when present it must match.
OPTIONAL = "optional"


@dataclass(frozen=True)
class AtMost:
    """A shape entry of a requirement: any length up to ``n`` (a limit derived from a header)."""

    n: int


@dataclass(frozen=True)
class MemberInfo:
    """One member of an ``.npz``: its ``.npy`` header and where its data lies."""

    name: str  # the key (member name without ``.npy``)
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    header_size: int  # bytes before the data (magic + header)
    nbytes: int  # bytes of data the header declares
    file_size: int  # uncompressed size from the zip directory
    compress_size: int


class _Bad(Exception):
    """Internal: a reason the file is refused (becomes the ValueError naming the file)."""


def _fail(path: str, what: str, reason: str) -> ValueError:
    return ValueError(f"{path}: not a valid {what} ({reason}).")


def _check_eocd(path: str, size: int, max_members: int) -> int:
    """The end-of-central-directory record: present, and not announcing too many members (checked
    before ``zipfile`` builds an object per member). Returns the number of members it announces."""
    if size < 22:
        raise _Bad("empty file" if size == 0 else f"only {size} bytes; not a zip archive")
    with open(path, "rb") as fh:
        tail_len = min(size, 22 + 65535)
        fh.seek(size - tail_len)
        tail = fh.read(tail_len)
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or pos + 22 > len(tail):
        raise _Bad("not a zip archive, or truncated: no zip directory at its end")
    _sig, _disk, _cd_disk, _n_here, n_total, _cd_size, _cd_off, _clen = struct.unpack("<4s4H2LH", tail[pos:pos + 22])
    if n_total > max_members:
        raise _Bad(f"{n_total} members; at most {max_members} are accepted")
    return n_total


def _read_exact(fp, n: int, what: str) -> bytes:
    data = b""
    while len(data) < n:
        chunk = fp.read(n - len(data))
        if not chunk:
            raise _Bad(f"{what}: ended after {len(data)} of {n} bytes")
        data += chunk
    return data


def _parse_header(fp, name: str, info: zipfile.ZipInfo) -> MemberInfo:
    """Read and check one member's ``.npy`` header (nothing of its data)."""
    magic = _read_exact(fp, 8, f"member {name!r}: header")
    try:
        major, minor = npformat.read_magic(io.BytesIO(magic))
    except Exception as exc:  # noqa: BLE001  numpy says why in its own words
        raise _Bad(f"member {name!r} is not a .npy array: {exc}") from None
    if (major, minor) not in ((1, 0), (2, 0)):
        raise _Bad(f"member {name!r}: unsupported .npy version {major}.{minor}")
    len_fmt = "<H" if major == 1 else "<I"
    len_bytes = _read_exact(fp, struct.calcsize(len_fmt), f"member {name!r}: header length")
    hlen = struct.unpack(len_fmt, len_bytes)[0]
    if hlen > MAX_HEADER_BYTES:
        raise _Bad(f"member {name!r}: header of {hlen} bytes (at most {MAX_HEADER_BYTES})")
    header = _read_exact(fp, hlen, f"member {name!r}: header")
    reader = npformat.read_array_header_1_0 if major == 1 else npformat.read_array_header_2_0
    try:
        shape, fortran, dtype = reader(io.BytesIO(len_bytes + header))
    except Exception as exc:  # noqa: BLE001  a malformed header: numpy's message, one line
        msg = " ".join(str(exc).split())
        raise _Bad(f"member {name!r}: malformed .npy header: {msg[:200]}") from None
    if not isinstance(shape, tuple) or not all(type(x) is int and x >= 0 for x in shape):
        raise _Bad(f"member {name!r}: invalid shape {shape!r}")
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise _Bad(f"member {name!r}: object arrays are not accepted (dtype {dtype})")
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in ALLOWED_KINDS:
        raise _Bad(f"member {name!r}: unsupported dtype {dtype}")
    if dtype.itemsize == 0:
        raise _Bad(f"member {name!r}: zero-width dtype {dtype}")
    nbytes = math.prod(shape) * dtype.itemsize
    return MemberInfo(name, shape, dtype, bool(fortran), 8 + len(len_bytes) + hlen, nbytes,
                      int(info.file_size), int(info.compress_size))


def _members(zf: zipfile.ZipFile, size: int, max_bytes: int, max_members: int) -> dict[str, MemberInfo]:
    infos = zf.infolist()
    if len(infos) > max_members:
        raise _Bad(f"{len(infos)} members; at most {max_members} are accepted")
    if not infos:
        raise _Bad("an empty zip archive")
    out: dict[str, MemberInfo] = {}
    total = 0
    for info in infos:
        fname = info.filename
        if not fname.endswith(".npy") or len(fname) <= 4 or "/" in fname or "\\" in fname:
            raise _Bad(f"member {fname!r} is not a NAME.npy array")
        name = fname[:-4]
        if name in out:
            raise _Bad(f"member {fname!r} appears twice")
        if info.flag_bits & 0x1:
            raise _Bad(f"member {fname!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _Bad(f"member {fname!r}: unsupported compression {info.compress_type}")
        if info.file_size > max_bytes + MAX_HEADER_BYTES + 16:
            raise _Bad(f"member {fname!r} decompresses to {info.file_size:,} bytes; at most {max_bytes:,} are accepted")
        if info.compress_size > size or info.header_offset + info.compress_size > size:
            raise _Bad(f"member {fname!r} extends past the end of the file (truncated?)")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise _Bad(f"member {fname!r}: stored sizes disagree ({info.compress_size} vs {info.file_size})")
        with zf.open(info) as fp:
            m = _parse_header(fp, name, info)
        if m.nbytes > max_bytes:
            raise _Bad(f"member {name!r} declares shape {m.shape} of {m.dtype} = {m.nbytes:,} bytes; "
                       f"at most {max_bytes:,} are accepted")
        if m.header_size + m.nbytes != m.file_size:
            raise _Bad(f"member {name!r}: the header declares {m.nbytes:,} bytes of data, the member holds "
                       f"{m.file_size - m.header_size:,}")
        total += m.nbytes
        if total > max_bytes:
            raise _Bad(f"the arrays total more than {max_bytes:,} bytes")
        out[name] = m
    return out


def _read_data(zf: zipfile.ZipFile, m: MemberInfo) -> np.ndarray:
    with zf.open(m.name + ".npy") as fp:
        _read_exact(fp, m.header_size, f"member {m.name!r}: header")
        count = math.prod(m.shape)
        arr = np.empty(count, dtype=m.dtype)
        view = memoryview(arr.view(np.uint8)) if count else memoryview(b"")
        got = 0
        while got < m.nbytes:
            k = fp.readinto(view[got:])
            if not k:
                raise _Bad(f"member {m.name!r}: data ended after {got:,} of {m.nbytes:,} bytes")
            got += k
        if fp.read(1):  # also reaches the end of the member: its CRC is checked there
            raise _Bad(f"member {m.name!r}: more data than its header declares")
    if m.fortran_order:
        arr = arr.reshape(m.shape[::-1]).transpose()
    else:
        arr = arr.reshape(m.shape)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not np.little_endian):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _parse_meta(arr: np.ndarray) -> dict:
    if arr.shape != () or arr.dtype.kind != "U":
        raise _Bad(f"member 'meta' must be a 0-d unicode array, not shape {arr.shape} of {arr.dtype}")
    try:
        meta = json.loads(str(arr[()]))
    except (ValueError, RecursionError) as exc:
        raise _Bad(f"member 'meta' is not valid JSON: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(meta, dict):
        raise _Bad(f"member 'meta' holds a JSON {type(meta).__name__}, not an object")
    return meta


def _check_required(members: Mapping[str, MemberInfo], required: Requirements) -> None:
    for name, spec in required.items():
        shape, kinds = spec[0], spec[1]
        optional = len(spec) > 2 and spec[2] == OPTIONAL
        m = members.get(name)
        if m is None:
            if optional:
                continue
            raise _Bad(f"no {name!r} array")
        if kinds and m.dtype.kind not in kinds:
            raise _Bad(f"{name!r} has dtype {m.dtype}; expected kind {' or '.join(repr(k) for k in kinds)}")
        if shape is not None:
            shape = tuple(shape)

            def fits(e, a):
                return e is None or (a <= e.n if isinstance(e, AtMost) else int(e) == a)
            if len(shape) != len(m.shape) or not all(fits(e, a) for e, a in zip(shape, m.shape)):
                want = "(" + ", ".join("*" if e is None else f"<={e.n}" if isinstance(e, AtMost) else str(e)
                                       for e in shape) + ("," if len(shape) == 1 else "") + ")"
                raise _Bad(f"{name!r} has shape {m.shape}; expected {want}")


def _open(path: str, max_members: int) -> tuple[zipfile.ZipFile, int]:
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise _Bad("no such file") from None
    except OSError as exc:
        raise _Bad(exc.strerror or str(exc)) from None
    if os.path.isdir(path):
        raise _Bad("a folder, not a file")
    n_total = _check_eocd(path, size, max_members)
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise _Bad(f"not a zip archive, or damaged: {exc}") from None
    if len(zf.infolist()) != n_total:  # zipfile reads the directory by its size: a damaged size drops members
        zf.close()
        raise _Bad(f"the zip directory lists {len(zf.infolist())} members, its end record {n_total} (damaged)")
    return zf, size


def read_npz_header(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES,
                    max_members: int = DEFAULT_MAX_MEMBERS, what: str = "model file") -> dict[str, MemberInfo]:
    """The members of an ``.npz`` ({name: :class:`MemberInfo`}), every header checked; no array
    data is read. Raises ``ValueError("<path>: not a valid <what> (...)")``."""
    path = os.fspath(path)
    try:
        zf, size = _open(path, max_members)
        with zf:
            return _members(zf, size, max_bytes, max_members)
    except _Bad as exc:
        raise _fail(path, what, str(exc)) from None
    except Exception as exc:  # noqa: BLE001  any other way a damaged zip breaks: one message
        raise _fail(path, what, f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None


def read_npz(path: str | os.PathLike, *, required: Requirements | Callable[[dict], Requirements] | None = None,
             max_bytes: int = DEFAULT_MAX_BYTES, max_members: int = DEFAULT_MAX_MEMBERS,
             meta: str | None = "meta", keep: Callable[[str], bool] | None = None,
             what: str = "model file") -> dict[str, Any]:
    """The arrays of an ``.npz`` as {name: ndarray}, checked before anything large is allocated
    (see the module docstring). The ``meta`` member, when there is one, comes back as the parsed
    JSON object (a dict). ``required`` is a mapping {name: (shape, dtype kinds)} or a function of
    the parsed meta (None when there is none) returning one. With ``keep``, only the required members
    and those with ``keep(name)`` true are read (the others are checked, never read). Every failure is ``ValueError("<path>: not a valid <what> (...)")``."""
    path = os.fspath(path)
    try:
        zf, size = _open(path, max_members)
        with zf:
            members = _members(zf, size, max_bytes, max_members)
            out: dict[str, Any] = {}
            meta_dict: dict | None = None
            if meta is not None and meta in members:
                if members[meta].nbytes > MAX_META_BYTES:
                    raise _Bad(f"member {meta!r} declares {members[meta].nbytes:,} bytes; at most "
                               f"{MAX_META_BYTES:,} are accepted for a header")
                meta_dict = _parse_meta(_read_data(zf, members[meta]))
                out[meta] = meta_dict
            req = required(meta_dict) if callable(required) else (required or {})
            _check_required(members, req)
            for name, m in members.items():
                if name == meta and meta in out:
                    continue
                if keep is not None and name not in req and not keep(name):
                    continue
                out[name] = _read_data(zf, m)
            return out
    except _Bad as exc:
        raise _fail(path, what, str(exc)) from None
    except ValueError as exc:
        if str(exc).startswith(f"{path}: "):
            raise  # already names the file (a requirement function's own check)
        raise _fail(path, what, " ".join(str(exc).split())[:300]) from None
    except Exception as exc:  # noqa: BLE001  BadZipFile (CRC), zlib.error, EOFError, OSError ...: one message
        raise _fail(path, what, f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None


# --------------------------------------------------------------------------------------------
# Saved models (HCL.save): the header's promises about the arrays


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _model_dims(meta: Mapping[str, Any]) -> tuple[list[str], int, int]:
    """(modalities, D, R) from a model header, checking the keys they come from (raises _Bad)."""
    if meta.get("format") != "hcl_explore.HCL":
        raise _Bad("not an hcl_explore model (format " + repr(meta.get("format"))[:60] + ")")
    if not _is_int(meta.get("version")):
        raise _Bad("no format version")
    mods = meta.get("modalities")
    if not isinstance(mods, list) or not mods or not all(isinstance(m, str) and m for m in mods) or len(set(mods)) != len(mods):
        raise _Bad("'modalities' must be a list of distinct names")
    dims = meta.get("dims")
    if not isinstance(dims, dict) or set(dims) != set(mods) or not all(_is_int(v) and v >= 0 for v in dims.values()):
        raise _Bad("'dims' must give a feature count for every modality")
    ranks = meta.get("ranks")
    if not isinstance(ranks, dict) or not all(isinstance(k, str) and _is_int(v) and v >= 0 for k, v in ranks.items()):
        raise _Bad("'ranks' must map node labels to counts")
    nodes = meta.get("nodes")
    if not isinstance(nodes, list) or not all(isinstance(n, str) and n in ranks for n in nodes) or len(set(nodes)) != len(nodes):
        raise _Bad("'nodes' must list distinct node labels of 'ranks'")
    return mods, sum(dims[m] for m in mods), sum(ranks[n] for n in nodes)


def _check_model_meta(meta: Mapping[str, Any]) -> tuple[list[str], int, int]:
    from .lattice import Lattice, parse_node_label

    mods, D, R = _model_dims(meta)
    if not isinstance(meta.get("params"), dict) or not all(isinstance(k, str) for k in meta["params"]):
        raise _Bad("'params' must be an object")
    fn = meta.get("feature_names")
    if not isinstance(fn, dict) or set(fn) != set(mods):
        raise _Bad("'feature_names' must list every modality's features")
    for m in mods:
        if not isinstance(fn[m], list) or len(fn[m]) != meta["dims"][m] or not all(isinstance(s, str) for s in fn[m]):
            raise _Bad(f"'feature_names' of {m!r} must be {meta['dims'][m]} names")
    nv = meta.get("noise_var")
    if not isinstance(nv, dict) or set(nv) != set(mods) or not all(_is_num(v) for v in nv.values()):
        raise _Bad("'noise_var' must give a number for every modality")
    for key, ok in (("objective", _is_num), ("n_iter", _is_int), ("n_samples", _is_int),
                    ("converged", lambda v: isinstance(v, bool)), ("total_var", lambda v: isinstance(v, dict))):
        if key not in meta or not ok(meta[key]):
            raise _Bad(f"missing or invalid {key!r}")
    pre = meta.get("preprocessing")
    if pre is not None:
        if not isinstance(pre, dict) or not set(pre) <= set(mods):
            raise _Bad("'preprocessing' must map modalities to their cleaning")
        for m, p in pre.items():
            if not isinstance(p, dict) or not isinstance(p.get("columns", []), list) \
                    or not all(isinstance(c, dict) for c in p.get("columns", [])) \
                    or not isinstance(p.get("id_column"), (str, type(None))):
                raise _Bad(f"'preprocessing' of {m!r} must hold an id column and a list of columns")
    for key in ("timings", "signal_rank", "rank_diagnostics"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise _Bad(f"{key!r} must be an object")
    try:
        lat = Lattice.from_dict(meta["lattice"])
        if list(lat.modalities) != mods:
            raise ValueError("its modalities differ from the model's")
        for label in list(meta["ranks"]) + list(meta["nodes"]):
            lat.node(parse_node_label(label))
    except _Bad:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _Bad(f"invalid lattice: {' '.join(str(exc).split())[:200]}") from None
    return mods, D, R


#: Longest optimization history a model file may hold, whatever its header says (entries).
MAX_HISTORY = 10_000_000


def _history_limit(meta: Mapping[str, Any]) -> int:
    """How many entries a saved history may have: about one per iteration or epoch the header
    records (``n_iter``, ``max_iter``, ``max_epochs``; twice that, plus one, leaves room for a
    resumed or restarted fit)."""
    params = meta.get("params") if isinstance(meta.get("params"), Mapping) else {}
    counts = [meta.get("n_iter"), params.get("max_iter"), params.get("max_epochs")]
    return min(MAX_HISTORY, 2 * max([int(c) for c in counts if _is_int(c) and c > 0] + [0]) + 2)


def _module_shapes(meta: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """{weight name: shape} of the contrastive network the header's ``module_spec`` builds; the
    network is built on torch's ``meta`` device, so a crafted spec allocates nothing."""
    from . import contrastive as C

    try:
        import torch

        spec = C.ModuleSpec.from_dict(meta["module_spec"])
        if list(spec.modalities) != list(meta["modalities"]) or dict(spec.dims) != dict(meta["dims"]):
            raise ValueError("its modalities or dims differ from the model's")
        with torch.device("meta"):
            state = C.HCLModule(spec).state_dict()
    except Exception as exc:  # noqa: BLE001
        raise _Bad(f"invalid 'module_spec': {' '.join(str(exc).split())[:200]}") from None
    return {k: tuple(t.shape) for k, t in state.items()}


def model_requirements(meta: Mapping[str, Any]) -> dict[str, tuple]:
    """{member: (shape, dtype kinds[, OPTIONAL])} a saved model's header implies (raises ValueError
    on a header that implies nothing consistent). Used as ``read_npz(..., required=model_requirements)``:
    every array a model reads has a size the header fixes or bounds, checked before it is read."""
    if meta is None:
        raise _Bad("no 'meta' header")
    mods, D, R = _check_model_meta(meta)
    M = len(mods)
    hist = _history_limit(meta)
    req: dict[str, tuple] = {"W": ((D, R), "f"), "mean": ((D,), "f"), "scale": ((D,), "f"), "counts": ((M, M), "iuf"),
                             "objective_history": ((AtMost(hist),), "fi"), "psi": ((D,), "f", OPTIONAL),
                             "val_history": ((AtMost(hist),), "fi", OPTIONAL)}
    if "module_spec" in meta:
        for k, shape in _module_shapes(meta).items():
            req["module." + k] = (shape, "fiub")
    return req


def _check_module(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    """The contrastive network's weights have the shapes its spec builds."""
    from . import contrastive as C

    try:
        spec = C.ModuleSpec.from_dict(meta["module_spec"])
        if list(spec.modalities) != list(meta["modalities"]) or dict(spec.dims) != dict(meta["dims"]):
            raise ValueError("its modalities or dims differ from the model's")
        import torch

        with torch.device("meta"):  # shapes only: nothing allocated for a crafted spec
            state = C.HCLModule(spec).state_dict()
    except Exception as exc:  # noqa: BLE001
        raise _Bad(f"invalid 'module_spec': {' '.join(str(exc).split())[:200]}") from None
    have = {k[len("module."):]: v for k, v in arrays.items() if k.startswith("module.")}
    missing = sorted(set(state) - set(have))
    extra = sorted(set(have) - set(state))
    if missing or extra:
        raise _Bad(f"network weights do not match its spec (missing {missing[:3]}, unexpected {extra[:3]})")
    for k, t in state.items():
        a = have[k]
        if tuple(a.shape) != tuple(t.shape) or a.dtype.kind not in ("f" if t.is_floating_point() else "iub"):
            raise _Bad(f"network weight {k!r} has shape {a.shape} of {a.dtype}; expected {tuple(t.shape)}")


def validate_model_arrays(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """Check a saved model's arrays against its header: ``W`` (D, R) with D the sum of ``dims``
    and R the sum of ``ranks`` over ``nodes``, ``mean``/``scale``/``psi`` (D,), ``counts`` (M, M),
    the kinds of their dtypes, the header keys ``HCL.load`` reads, and (contrastive) the network
    weights against ``module_spec``. Raises ``ValueError("<path>: not a valid model file (...)")``."""
    path = os.fspath(path)
    try:
        if not isinstance(meta, Mapping):
            raise _Bad("no 'meta' header")
        mods, D, R = _check_model_meta(meta)
        shapes = {"W": ((D, R), "f"), "mean": ((D,), "f"), "scale": ((D,), "f"),
                  "counts": ((len(mods), len(mods)), "iuf"), "objective_history": ((None,), "fi")}
        if "psi" in arrays:
            shapes["psi"] = ((D,), "f")
        if "val_history" in arrays:
            shapes["val_history"] = ((None,), "fi")
        for name, (shape, kinds) in shapes.items():
            a = arrays.get(name)
            if not isinstance(a, np.ndarray):
                raise _Bad(f"no {name!r} array")
            if a.dtype.kind not in kinds:
                raise _Bad(f"{name!r} has dtype {a.dtype}; expected kind {' or '.join(repr(k) for k in kinds)}")
            if len(shape) != a.ndim or any(e is not None and e != s for e, s in zip(shape, a.shape)):
                want = "(" + ", ".join("*" if e is None else str(e) for e in shape) + ("," if len(shape) == 1 else "") + ")"
                raise _Bad(f"{name!r} has shape {a.shape}; expected {want}")
        if "module_spec" in meta or (meta.get("params") or {}).get("estimator") == "contrastive":
            if "module_spec" not in meta:
                raise _Bad("a contrastive model without 'module_spec'")
            _check_module(meta, arrays)
    except _Bad as exc:
        raise _fail(path, "model file", str(exc)) from None


def read_model_file(path: str | os.PathLike, *, max_version: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                    max_members: int = DEFAULT_MAX_MEMBERS) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, arrays) of a model written by ``HCL.save``, every array checked against the header
    before it is read, then :func:`validate_model_arrays`. Members the model does not use are not
    read. A header ``version`` above ``max_version`` is refused first ("saved by a newer
    hcl_explore"). Raises ``ValueError("<path>: ...")``."""

    def wanted(name: str) -> bool:  # optional members HCL.load uses
        return False  # every member HCL.load uses is in model_requirements, with its size

    def required(meta: dict | None) -> dict:
        if meta is not None and max_version is not None and _is_int(meta.get("version")) and meta["version"] > max_version:
            raise ValueError(f"{path}: saved by a newer hcl_explore (format {meta['version']}).")
        return model_requirements(meta)

    path = os.fspath(path)
    z = read_npz(path, required=required, max_bytes=max_bytes, max_members=max_members, keep=wanted)
    meta = z.pop("meta")
    validate_model_arrays(meta, z, path)
    return meta, z
