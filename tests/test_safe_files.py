"""Damaged and hostile files are refused with a ValueError naming the file: .npz models and scores
(before anything large is allocated), contrastive checkpoints; exported CSVs carry no formulas; the app
pages show a run's damaged model file instead of crashing."""

import io
import json
import os
import struct
import tracemalloc
import zipfile

import numpy as np
import pandas as pd
import pytest

import hcl_explore as hx
from hcl_explore.safe_npz import read_model_file, read_npz, read_npz_header, validate_model_arrays
from workspace_helpers import write_npz_bomb


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _raw_npy(header: str, data: bytes = b"", version=(1, 0), hlen: int | None = None) -> bytes:
    h = header.encode("latin1")
    fmt = "<H" if version[0] == 1 else "<I"
    return b"\x93NUMPY" + bytes(version) + struct.pack(fmt, len(h) if hlen is None else hlen) + h + data


def _zip(path, members: dict, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return str(path)


def _refused(path, match: str = "", **kw):
    with pytest.raises(ValueError) as ei:
        read_npz(path, **kw)
    msg = str(ei.value)
    assert msg.startswith(f"{path}: not a valid "), msg
    assert match in msg, msg
    assert "\n" not in msg
    return msg


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A real linear model saved by HCL.save, and its members as np.load reads them."""
    data, _ = hx.simulate(n=300, dims=(6, 5), ranks={("a", "b"): 1, ("a",): 1, ("b",): 1}, noise=0.2, seed=3)
    model = hx.HCL(ranks={("a", "b"): 1, ("a",): 1, ("b",): 1}, random_state=0).fit(data)
    path = tmp_path_factory.mktemp("model") / "model.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    return str(path), members


def _model_members(saved, **changes):
    """The saved model's members as .npy bytes, with some replaced (None removes one)."""
    _, members = saved
    out = {}
    for k, v in {**members, **changes}.items():
        if v is not None:
            out[f"{k}.npy"] = v if isinstance(v, bytes) else _npy(v)
    return out


def _meta(saved) -> dict:
    return json.loads(str(saved[1]["meta"]))


# ---------------------------------------------------------------------------------------------
# sound files


def test_saved_model_round_trips(saved):
    path, members = saved
    z = read_npz(path)
    assert isinstance(z["meta"], dict) and z["meta"] == json.loads(str(members["meta"]))
    for k, v in members.items():
        if k != "meta":
            assert z[k].dtype == v.dtype and np.array_equal(z[k], v), k
    meta, arrays = read_model_file(path)
    assert meta["format"] == "hcl_explore.HCL"
    assert set(arrays) == set(members) - {"meta"}
    D = sum(meta["dims"].values())
    assert arrays["W"].shape == (D, 3) and arrays["psi"].shape == (D,)
    info = read_npz_header(path)
    assert info["W"].shape == (D, 3) and info["W"].dtype == np.float64


def test_contrastive_model_round_trips(tmp_path):
    data, _ = hx.simulate(n=200, dims=(5, 4), ranks={("a", "b"): 1, ("a",): 1, ("b",): 1}, noise=0.2, seed=1)
    model = hx.HCL(estimator="contrastive", ranks=1, max_epochs=2, hidden=(8,), device="cpu",
                   random_state=0).fit(data)
    path = tmp_path / "c.npz"
    model.save(path)
    meta, arrays = read_model_file(path)
    assert meta["module_spec"]["hidden"] == [8]
    state = model.module_.state_dict()
    for k, t in state.items():
        assert np.array_equal(arrays[f"module.{k}"], t.numpy())
    # a network weight of the wrong shape is refused by name
    bad = {f"{k}.npy": _npy(v) for k, v in {**{"meta": np.array(json.dumps(meta))}, **arrays}.items()}
    first = next(k for k in arrays if k.startswith("module.") and arrays[k].ndim == 2)
    bad[f"{first}.npy"] = _npy(np.zeros((arrays[first].shape[0] + 1, arrays[first].shape[1])))
    p = _zip(tmp_path / "bad.npz", bad)
    with pytest.raises(ValueError, match=r"not a valid model file.*(network weight|'module\.)"):
        read_model_file(p)


def test_scores_compressed_fortran_and_big_endian_arrays_read_back(tmp_path):
    ids = np.array(["p1", "patient_22"])
    obs = np.array([[True, False], [True, True]])
    S = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    be = np.arange(4, dtype=">i4")
    p = tmp_path / "scores.npz"
    np.savez_compressed(p, ids=ids, observed=obs, node_0=S, be=be, empty=np.zeros((0, 3)))
    z = read_npz(p, what="scores file")
    assert z["ids"].tolist() == ids.tolist() and np.array_equal(z["observed"], obs)
    assert np.array_equal(z["node_0"], S) and np.array_equal(z["be"], be) and z["empty"].shape == (0, 3)
    # required members: shape with wildcards and dtype kinds
    read_npz(p, required={"node_0": ((None, 3), "f"), "ids": ((2,), "U")})
    _refused(p, "no 'node_1' array", required={"node_1": ((None, 3), "f")})
    _refused(p, "'node_0' has shape (2, 3); expected (*, 4)", required={"node_0": ((None, 4), "f")})
    _refused(p, "'ids' has dtype <U10; expected kind 'f'", required={"ids": (None, "f")})


# ---------------------------------------------------------------------------------------------
# sizes: nothing large is allocated


def test_declared_shape_of_10_to_the_12_is_refused_without_allocating(tmp_path):
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }"
    p = _zip(tmp_path / "model.npz", {"W.npy": _raw_npy(header, b"\0" * 64)})
    tracemalloc.start()
    try:
        msg = _refused(p, "declares shape (1000000000000,)")
        with pytest.raises(ValueError, match="model.npz: not a valid"):
            read_npz_header(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20, peak
    assert "8,000,000,000,000 bytes" in msg
    # shapes whose element count overflows int64, and 2-d variants
    for shape in ("(2**62, 2**62)", "(4611686018427387904, 4611686018427387904)", "(100000, 100000, 100000)"):
        h = "{'descr': '<f8', 'fortran_order': False, 'shape': %s, }" % shape
        p = _zip(tmp_path / "m2.npz", {"W.npy": _raw_npy(h, b"\0" * 8)})
        _refused(p)


def _write_zeros(zf, name, shape):
    """Stream a member of zeros (a .npy header declaring ``shape`` of float64) into ``zf``."""
    from numpy.lib import format as F

    with zf.open(name, "w", force_zip64=True) as fp:
        F.write_array_header_1_0(fp, {"descr": "<f8", "fortran_order": False, "shape": shape})
        chunk, left = bytes(8 << 20), int(np.prod(shape)) * 8
        while left:
            k = min(left, len(chunk))
            fp.write(chunk[:k])
            left -= k


@pytest.fixture(scope="module")
def bomb(tmp_path_factory, saved):
    """A ~3 MB model file whose W member decompresses to 800 MB (a zip bomb); the rest is sound."""
    path = tmp_path_factory.mktemp("bomb") / "model.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, blob in _model_members(saved, W=None).items():
            zf.writestr(name, blob)
        _write_zeros(zf, "W.npy", (100_000_000,))
    return str(path)


def _peak(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_800mb_member_over_the_limit_is_refused_without_allocating(bomb):
    assert os.path.getsize(bomb) < 10 << 20
    assert _peak(lambda: _refused(bomb, "decompresses to 800,000,128 bytes", max_bytes=512 << 20)) < 20 << 20
    assert _peak(lambda: _refused(bomb, "the arrays total more than", max_bytes=800_000_010)) < 20 << 20

    # In a model file the header's dims decide: an 800 MB W is refused by shape before it is read.
    def load():
        with pytest.raises(ValueError, match=r"model.npz: not a valid model file \('W' has shape \(100000000,\)"):
            read_model_file(bomb)

    assert _peak(load) < 20 << 20


def test_zip_directory_sizes_must_agree_with_the_header(tmp_path, saved):
    # the directory says the member decompresses to 800 MB; its header says 3 floats
    p = tmp_path / "model.npz"
    blob = _npy(np.zeros(3))
    _zip(p, {"W.npy": blob})
    raw = bytearray(p.read_bytes())
    cd = raw.rfind(b"PK\x01\x02")
    struct.pack_into("<L", raw, cd + 24, 800_000_000)  # uncompressed size in the central directory
    p.write_bytes(bytes(raw))
    _refused(p, "decompresses to 800,000,000 bytes", max_bytes=512 << 20)
    _refused(p, "")  # within the default limit: refused because sizes disagree
    # the directory's stored size is larger than the file
    _zip(p, {"W.npy": blob})
    raw = bytearray(p.read_bytes())
    cd = raw.rfind(b"PK\x01\x02")
    struct.pack_into("<L", raw, cd + 20, 10_000_000)
    p.write_bytes(bytes(raw))
    _refused(p)
    # the header declares more (or less) data than the member holds
    for data in (b"\0" * 16, b"\0" * 32):
        h = "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }"
        p2 = _zip(tmp_path / "m3.npz", {"W.npy": _raw_npy(h, data)})
        _refused(p2, "the header declares 24 bytes of data")
    # total over the limit; too many members
    p3 = _zip(tmp_path / "m4.npz", {f"a{i}.npy": _npy(np.zeros(100)) for i in range(5)})
    _refused(p3, "total more than", max_bytes=2000)
    _refused(p3, "5 members; at most 3", max_members=3)
    assert len(read_npz(p3, max_bytes=4000)) == 5


# ---------------------------------------------------------------------------------------------
# the model's arrays against its header


@pytest.mark.parametrize("change, match", [
    ({"W": np.zeros((12, 3))}, "'W' has shape (12, 3); expected (11, 3)"),
    ({"W": np.zeros((11, 4))}, "'W' has shape (11, 4); expected (11, 3)"),
    ({"W": np.zeros((11, 3, 1))}, "'W' has shape (11, 3, 1)"),
    ({"W": np.zeros((11, 3), dtype=np.int64)}, "'W' has dtype int64; expected kind 'f'"),
    ({"W": np.zeros((11, 3), dtype=complex)}, "'W' has dtype complex128"),
    ({"W": np.full((11, 3), "x")}, "'W' has dtype <U1"),
    ({"W": None}, "no 'W' array"),
    ({"mean": np.zeros(10)}, "'mean' has shape (10,); expected (11,)"),
    ({"scale": np.zeros((11, 1))}, "'scale' has shape (11, 1)"),
    ({"counts": np.zeros((3, 3), dtype=np.int64)}, "'counts' has shape (3, 3); expected (2, 2)"),
    ({"counts": np.zeros((2, 2), dtype="U3")}, "'counts' has dtype <U3"),
    ({"psi": np.zeros(3)}, "'psi' has shape (3,); expected (11,)"),
    ({"objective_history": np.zeros((2, 2))}, "'objective_history' has shape (2, 2)"),
    ({"meta": None}, "no 'meta' header"),
    ({"meta": np.array("{not json")}, "member 'meta' is not valid JSON"),
    ({"meta": np.array("[1, 2]")}, "member 'meta' holds a JSON list"),
    ({"meta": np.array(["{}"])}, "member 'meta' must be a 0-d unicode array"),
    ({"meta": np.array(b"{}")}, "member 'meta' must be a 0-d unicode array"),
    ({"meta": np.array("{}")}, "not an hcl_explore model"),
    ({"meta": np.array("[" * 100000 + "]" * 100000)}, "member 'meta' is not valid JSON"),
])
def test_model_arrays_must_match_the_header(saved, tmp_path, change, match):
    p = _zip(tmp_path / "model.npz", _model_members(saved, **change))
    with pytest.raises(ValueError) as ei:
        read_model_file(p)
    assert str(ei.value).startswith(f"{p}: not a valid model file (")
    assert match in str(ei.value)


@pytest.mark.parametrize("edit, match", [
    (lambda m: m["dims"].update(a=7), "'feature_names' of 'a' must be 7 names"),
    (lambda m: m.pop("dims"), "'dims'"),
    (lambda m: m["dims"].update(a=-1), "'dims'"),
    (lambda m: m["dims"].update(a="6"), "'dims'"),
    (lambda m: m.update(modalities=["a", "a"]), "'modalities'"),
    (lambda m: m.update(nodes=["a+b", "nope"]), "'nodes'"),
    (lambda m: m["ranks"].update({"a+b": 1.5}), "'ranks'"),
    (lambda m: m.update(lattice={"modalities": ["a", "b"], "nodes": [["a", "zz"]]}), "invalid lattice"),
    (lambda m: m.update(lattice="full"), "invalid lattice"),
    (lambda m: m.update(params=[1]), "'params'"),
    (lambda m: m.update(n_iter="ten"), "'n_iter'"),
    (lambda m: m.update(noise_var={"a": 1.0}), "'noise_var'"),
    (lambda m: m.update(module_spec={"modalities": ["a", "b"]}), "invalid 'module_spec'"),
])
def test_inconsistent_header_is_refused(saved, tmp_path, edit, match):
    meta = _meta(saved)
    edit(meta)
    p = _zip(tmp_path / "model.npz", _model_members(saved, meta=np.array(json.dumps(meta))))
    with pytest.raises(ValueError, match=r"model\.npz: not a valid model file \(.*" + match.replace("(", r"\(")
                       .replace(")", r"\)").replace("+", r"\+")):
        read_model_file(p)


def test_a_newer_format_is_named_as_such(saved, tmp_path):
    meta = dict(_meta(saved), version=99)
    p = _zip(tmp_path / "model.npz", _model_members(saved, meta=np.array(json.dumps(meta)), W=np.zeros(2)))
    with pytest.raises(ValueError, match=r"model\.npz: saved by a newer hcl_explore \(format 99\)"):
        read_model_file(p, max_version=2)


def test_validate_model_arrays_names_the_file(saved):
    path, members = saved
    meta = _meta(saved)
    arrays = {k: v for k, v in members.items() if k != "meta"}
    validate_model_arrays(meta, arrays, path)  # the saved model is consistent
    D = sum(meta["dims"].values())
    for name, bad in [("W", np.zeros((D, 2))), ("W", np.zeros((D, 3), dtype=np.float32).astype(int)),
                      ("mean", np.zeros(D + 1)), ("counts", np.zeros((2, 3))), ("psi", np.zeros(1))]:
        with pytest.raises(ValueError, match=f"^{path}: not a valid model file .*'{name}'"):
            validate_model_arrays(meta, {**arrays, name: bad}, path)
    with pytest.raises(ValueError, match=f"^{path}: not a valid model file"):
        validate_model_arrays({**meta, "nodes": "a+b"}, arrays, path)


# ---------------------------------------------------------------------------------------------
# malformed .npy headers

_GOOD = "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }"


@pytest.mark.parametrize("blob, match", [
    (b"\x93NUMPX\x01\x00" + _raw_npy(_GOOD, b"\0" * 24)[8:], "is not a .npy array"),
    (b"PK\x03\x04 not an array at all", "is not a .npy array"),
    (_raw_npy(_GOOD, b"\0" * 24, version=(9, 9)), "unsupported .npy version"),
    (_raw_npy("[1, 2, 3]", b"\0" * 24), "malformed .npy header"),
    (_raw_npy("{'descr': '<f8', 'shape': (3,)}", b"\0" * 24), "malformed .npy header"),
    (_raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), 'x': 1}", b"\0" * 24), "malformed .npy header"),
    (_raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': [3]}", b"\0" * 24), "malformed .npy header"),
    (_raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (-3,)}", b"\0" * 24), "invalid shape"),
    (_raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2.5,)}", b"\0" * 24), "malformed .npy header"),
    (_raw_npy("{'descr': '<f8', 'fortran_order': 'yes', 'shape': (3,)}", b"\0" * 24), "malformed .npy header"),
    (_raw_npy("{'descr': '|O', 'fortran_order': False, 'shape': (3,)}", b"\0" * 24), "object arrays are not accepted"),
    (_raw_npy("{'descr': [('a', '|O')], 'fortran_order': False, 'shape': (3,)}", b"\0" * 24), "object arrays"),
    (_raw_npy("{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (3,)}", b"\0" * 24), "unsupported dtype"),
    (_raw_npy("{'descr': '<M8[s]', 'fortran_order': False, 'shape': (3,)}", b"\0" * 24), "unsupported dtype"),
    (_raw_npy("{'descr': '<U0', 'fortran_order': False, 'shape': (3,)}", b""), "zero-width dtype"),
    (_raw_npy("{'descr': 'nonsense', 'fortran_order': False, 'shape': (3,)}", b"\0" * 24), "malformed .npy header"),
    (_raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3,", b"\0" * 24), "malformed .npy header"),
    (_raw_npy("__import__('os').system('echo owned')", b"\0" * 24), "malformed .npy header"),
    (_raw_npy(_GOOD, b"", hlen=5000), "header: ended after"),
    (_raw_npy(_GOOD, b"\0" * 24, version=(2, 0), hlen=2_000_000_000), "header of 2000000000 bytes"),
    (_raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (" + "(" * 500 + ")" * 500 + ",)}", b""),
     "malformed .npy header"),
    (b"\x93NUMPY\x01", "header: ended after"),
    (b"", "header: ended after"),
])
def test_malformed_headers_are_refused(tmp_path, blob, match):
    p = _zip(tmp_path / "model.npz", {"W.npy": blob})
    _refused(p, match)
    with pytest.raises(ValueError, match="model.npz: not a valid model file"):
        read_npz_header(p)


def test_member_names_and_flags(tmp_path):
    good = _npy(np.zeros(3))
    _refused(_zip(tmp_path / "a.npz", {"W.txt": good}), "is not a NAME.npy array")
    _refused(_zip(tmp_path / "b.npz", {"dir/W.npy": good}), "is not a NAME.npy array")
    _refused(_zip(tmp_path / "c.npz", {".npy": good}), "is not a NAME.npy array")
    _refused(_zip(tmp_path / "e.npz", {}), "an empty zip archive")
    p = tmp_path / "d.npz"
    with pytest.warns(UserWarning, match="Duplicate name"):
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr("W.npy", good)
            zf.writestr("W.npy", _npy(np.ones(3)))
    _refused(p, "appears twice")
    # encrypted flag set in the central directory
    q = tmp_path / "f.npz"
    _zip(q, {"W.npy": good})
    raw = bytearray(q.read_bytes())
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 8] |= 1
    q.write_bytes(bytes(raw))
    _refused(q, "encrypted")


# ---------------------------------------------------------------------------------------------
# damaged files: empty, missing, not a zip, truncated, bit-flipped


def test_empty_missing_folder_and_not_a_zip(tmp_path):
    e = tmp_path / "empty.npz"
    e.write_bytes(b"")
    _refused(e, "empty file")
    _refused(tmp_path / "gone.npz", "no such file")
    _refused(tmp_path, "a folder")
    t = tmp_path / "text.npz"
    t.write_text("W,mean\n1,2\n" * 100)
    _refused(t, "not a zip archive")
    n = tmp_path / "raw.npz"
    n.write_bytes(_npy(np.zeros(30)))  # a .npy, not an .npz
    _refused(n, "not a zip archive")
    with pytest.raises(ValueError, match="gone.npz: not a valid model file"):
        read_model_file(tmp_path / "gone.npz")


def test_every_truncation_is_refused(saved, tmp_path):
    path, _ = saved
    raw = open(path, "rb").read()
    p = tmp_path / "model.npz"
    for n in list(range(0, len(raw), 7)) + [len(raw) - 1]:
        p.write_bytes(raw[:n])
        _refused(p)
        with pytest.raises(ValueError, match="model.npz: not a valid model file"):
            read_model_file(p)


def test_bit_flips_are_refused_or_harmless(saved, tmp_path):
    """A flipped bit anywhere gives a ValueError naming the file, or (in a zip field nothing reads,
    such as a timestamp) the very same arrays; never another exception or different data."""
    path, members = saved
    raw = open(path, "rb").read()
    p = tmp_path / "model.npz"
    refused = tried = 0
    for i in range(0, len(raw), 3):
        tried += 1
        for bit in (i % 8,):
            b = bytearray(raw)
            b[i] ^= 1 << bit
            p.write_bytes(bytes(b))
            try:
                z = read_npz(p)
            except ValueError as exc:
                assert str(exc).startswith(f"{p}: not a valid model file ("), exc
                refused += 1
                continue
            assert set(z) == set(members)
            assert z["meta"] == json.loads(str(members["meta"]))
            for k, v in members.items():
                if k != "meta":
                    assert z[k].dtype == v.dtype and np.array_equal(z[k], v, equal_nan=True), (i, k)
    assert refused > 0.8 * tried  # nearly every flip is caught (the data are covered by the CRC)


# ---------------------------------------------------------------------------------------------
# contrastive checkpoints (checkpoint.pt, read with torch.load(weights_only=True))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    data, _ = hx.simulate(n=200, dims=(5, 4), ranks={("a", "b"): 1, ("a",): 1, ("b",): 1}, noise=0.2, seed=1)
    d = tmp_path_factory.mktemp("ck")
    kw = dict(estimator="contrastive", ranks=1, max_epochs=2, hidden=(8,), device="cpu", random_state=0,
              checkpoint_dir=str(d))
    model = hx.HCL(**kw).fit(data)
    path = d / "checkpoint.pt"
    return {"data": data, "kw": kw, "model": model, "raw": path.read_bytes(),
            "ref": torch.load(path, map_location="cpu", weights_only=True)}


def _load_ck(path, ck):
    import copy

    import torch

    from hcl_explore import contrastive as C

    module = copy.deepcopy(ck["model"].module_)
    opt = torch.optim.Adam(module.parameters())
    res = C.TrainResult()
    out = C.load_checkpoint(str(path), ck["ref"]["signature"], module, opt, res)
    return out, module, res


def _ck_refused(path, ck, match=""):
    with pytest.raises(ValueError) as ei:
        _load_ck(path, ck)
    msg = str(ei.value)
    assert msg.startswith(f"{path}: not a valid checkpoint ("), msg
    assert match in msg and "\n" not in msg, msg


def _tensor_offset(raw: bytes) -> int:
    """Offset of the middle of the largest member's data in a torch zip (a weight tensor)."""
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        info = max(zf.infolist(), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len + info.file_size // 2


def test_sound_checkpoint_restores_the_state(checkpoint, tmp_path):
    import torch

    p = tmp_path / "checkpoint.pt"
    p.write_bytes(checkpoint["raw"])
    (best_state, best, bad, start), module, res = _load_ck(p, checkpoint)
    ref = checkpoint["ref"]
    assert start == ref["epoch"] == 2 and res.resumed_from == 2 and len(res.history) == 2
    assert all(torch.equal(v, ref["module"][k]) for k, v in module.state_dict().items())


def test_truncated_empty_or_damaged_checkpoint_resume_is_a_value_error(checkpoint, tmp_path):
    """End to end: HCL.fit(resume=True) on a damaged checkpoint.pt raises a ValueError naming the
    file (was a RuntimeError/EOFError/UnpicklingError from inside torch, or a silent load)."""
    raw = checkpoint["raw"]
    ck_dir = tmp_path / "ck"
    ck_dir.mkdir()
    path = ck_dir / "checkpoint.pt"
    flipped = bytearray(raw)
    flipped[_tensor_offset(raw)] ^= 0x40
    for blob in (raw[: len(raw) // 2], b"", bytes(flipped)):
        path.write_bytes(blob)
        kw = dict(checkpoint["kw"], checkpoint_dir=str(ck_dir), resume=True, max_epochs=3)
        with pytest.raises(ValueError, match=f"^{path}: not a valid checkpoint"):
            hx.HCL(**kw).fit(checkpoint["data"])


def test_damaged_checkpoints_are_refused(checkpoint, tmp_path):
    import datetime

    import torch

    raw, ref = checkpoint["raw"], checkpoint["ref"]
    p = tmp_path / "checkpoint.pt"
    for n in (0, 1, 100, len(raw) // 3, len(raw) - 30, len(raw) - 1):
        p.write_bytes(raw[:n])
        _ck_refused(p, checkpoint)
    p.write_text("not a checkpoint\n" * 10)
    _ck_refused(p, checkpoint)
    flipped = bytearray(raw)
    flipped[_tensor_offset(raw)] ^= 0x01
    p.write_bytes(bytes(flipped))
    _ck_refused(p, checkpoint, "fails its CRC check")

    def refused_payload(payload, match):
        torch.save(payload, p)
        _ck_refused(p, checkpoint, match)

    refused_payload([1, 2, 3], "holds a list")
    refused_payload({k: v for k, v in ref.items() if k != "optimizer"}, "no optimizer")
    refused_payload({"x": datetime.date(2020, 1, 1)}, "UnpicklingError")  # a global weights_only refuses
    first = next(iter(ref["module"]))
    bad_mod = dict(ref["module"], **{first: torch.zeros(ref["module"][first].shape[0] + 1)})
    refused_payload(dict(ref, module=bad_mod), f"module weight {first!r} has the wrong shape")
    nan_mod = dict(ref["module"], **{first: torch.full_like(ref["module"][first], float("nan"))})
    refused_payload(dict(ref, best_state=nan_mod), f"best_state weight {first!r} is not finite")
    refused_payload(dict(ref, best_state={}), "'best_state' weights are not this network's")
    opt = {"state": {0: {"step": torch.tensor(2.0), "exp_avg": torch.zeros(3, 3, 3),
                         "exp_avg_sq": torch.zeros(3, 3, 3)}}, "param_groups": ref["optimizer"]["param_groups"]}
    refused_payload(dict(ref, optimizer=opt), "optimizer 'exp_avg' of parameter 0 has the wrong shape")
    refused_payload(dict(ref, history=[1.0]), "inconsistent counters")
    refused_payload(dict(ref, epoch="two"), "invalid counters")
    # another run's checkpoint keeps its own message
    torch.save(dict(ref, signature="other"), p)
    with pytest.raises(ValueError, match="was written for another data set"):
        _load_ck(p, checkpoint)


def test_checkpoint_bit_flips_are_refused_or_harmless(checkpoint, tmp_path):
    import torch

    raw, ref = checkpoint["raw"], checkpoint["ref"]
    p = tmp_path / "checkpoint.pt"
    step = max(1, len(raw) // 300)
    refused = tried = 0
    for i in range(0, len(raw), step):
        tried += 1
        b = bytearray(raw)
        b[i] ^= 1 << (i % 8)
        p.write_bytes(bytes(b))
        try:
            _, module, _ = _load_ck(p, checkpoint)
        except ValueError as exc:
            assert str(exc).startswith(f"{p}: not a valid checkpoint ("), exc
            refused += 1
            continue
        assert all(torch.equal(v, ref["module"][k]) for k, v in module.state_dict().items()), i
    assert refused > 0.5 * tried


# ---------------------------------------------------------------------------------------------
# exports: no CSV cell a spreadsheet would run as a formula

_FORMULAS = ['=HYPERLINK("http://evil.example","click")', "+1+1", "-2+3", "@SUM(A1:A9)", "\tTAB", "\rCR",
             "=cmd|' /C calc'!A0"]


def _formula_run(tmp_path):
    from hcl_explore.lattice import node_label

    sim, _ = hx.simulate(n=300, dims={"@lab": 8, "-vit": 4}, ranks={("@lab", "-vit"): 1, ("@lab",): 1}, noise=0.3, seed=0)
    names = {"@lab": _FORMULAS + ["plain"], "-vit": ["=1", "v2", "-12", "+v4"]}
    ids = ["=1+2", "-12", "@x"] + [f"p{i}" for i in range(297)]
    data = hx.MultimodalData({m: sim.X[m] for m in sim.modalities}, ids=ids, feature_names=names)
    model = hx.HCL(random_state=0).fit(data)
    d = tmp_path / "run"
    d.mkdir()
    model.save(d / "model.npz")
    Z = model.transform(data)
    np.savez(d / "scores.npz", ids=np.asarray(ids).astype(str), observed=data.observed,
             **{f"node_{i}": Z[n] for i, n in enumerate(model.nodes_)})
    (d / "scores_nodes.json").write_text(json.dumps([node_label(n) for n in model.nodes_]))
    (d / "config.json").write_text(json.dumps({"kind": "fit", "dataset": {"name": "=evil"}}))
    return str(d), model


def test_exported_csvs_neutralize_formula_text(tmp_path):
    import csv

    from hcl_explore import report

    run_dir, model = _formula_run(tmp_path)
    with zipfile.ZipFile(io.BytesIO(report.run_zip(run_dir))) as zf:
        tables = {n: list(csv.reader(io.StringIO(zf.read(n).decode("utf-8"), newline="")))
                  for n in zf.namelist() if n.endswith(".csv")}
    assert set(tables) == {"summary.csv", "loadings.csv", "scores.csv"}
    for name, rows in tables.items():
        for row in rows:
            for cell in row:
                if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
                    float(cell)  # only a plain number (a negative loading, the id -12) may start so
    flat = {name: [c for row in rows for c in row] for name, rows in tables.items()}
    for f in _FORMULAS:
        assert "'" + f in flat["loadings.csv"]
    assert "'@lab" in flat["loadings.csv"] and "'-vit" in flat["loadings.csv"] and "'=1" in flat["loadings.csv"]
    assert "-12" in flat["loadings.csv"] and "plain" in flat["loadings.csv"]  # a number and plain text unchanged
    assert "'@lab+-vit" in flat["summary.csv"] and "'-vit" in flat["summary.csv"]
    assert "'=1+2" in flat["scores.csv"] and "'@x" in flat["scores.csv"] and "-12" in flat["scores.csv"]
    assert "'@lab+-vit:1" in tables["scores.csv"][0]  # column names are text cells too
    # numeric columns are untouched: the loadings read back as numbers equal to the model's
    lo = tables["loadings.csv"]
    col = lo[0].index("loading")
    got = np.array([float(r[col]) for r in lo[1:]])
    assert np.allclose(got, report.loadings_table(model)["loading"].to_numpy())
    assert (got < 0).any()


# ---------------------------------------------------------------------------------------------
# app pages: a run whose model.npz is truncated, empty, flipped or deleted shows an error


@pytest.fixture(scope="module")
def app_ws(tmp_path_factory):
    from hcl_explore import runs

    ws = runs.workspace_dir(str(tmp_path_factory.mktemp("ws")))
    data, _ = hx.simulate(n=300, dims=(6, 5), ranks={("a", "b"): 1, ("a",): 1, ("b",): 1}, noise=0.3, seed=4)
    files = {}
    for m in data.modalities:
        df = pd.DataFrame(data.X[m], columns=data.feature_names[m])
        df.insert(0, "pid", [f"P{i}" for i in range(300)])
        files[m] = os.path.join(ws, f"{m}.csv")
        df.to_csv(files[m], index=False)
    rid = runs.create_run(ws, {"kind": "fit", "dataset": {"modalities": files, "id_column": "pid", "name": "t"},
                               "lattice": "full"}, run_id="base")
    assert runs.run_worker(runs.run_path(ws, rid)) == 0
    return ws


def _damaged_run(ws, damage: str, target: str = "model.npz", tag: str = "") -> str:
    import shutil

    from hcl_explore import runs

    rid = f"{damage}-{target.split('.')[0]}{tag}"
    d = runs.run_path(ws, rid)
    shutil.copytree(runs.run_path(ws, "base"), d)
    p = os.path.join(d, target)
    raw = open(p, "rb").read()
    if damage == "deleted":
        os.remove(p)
    elif damage == "empty":
        open(p, "wb").close()
    elif damage == "truncated":
        open(p, "wb").write(raw[: len(raw) // 2])
    elif damage == "flipped":
        with zipfile.ZipFile(p) as zf:
            info = max(zf.infolist(), key=lambda i: i.file_size)
        b = bytearray(raw)
        b[info.header_offset + 30 + len(info.filename) + len(info.extra) + info.file_size - 3] ^= 0x10
        open(p, "wb").write(bytes(b))
    return rid


def _page(ws, monkeypatch, page, rid):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("HCL_EXPLORE_WORKSPACE", ws)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    at = AppTest.from_file(os.path.join(root, "app.py"), default_timeout=60)
    at.query_params["run"] = rid
    at.run()
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("page", ["structure", "export"])
@pytest.mark.parametrize("damage", ["truncated", "empty", "flipped", "deleted"])
def test_pages_show_a_damaged_model_file(app_ws, monkeypatch, page, damage):
    rid = _damaged_run(app_ws, damage, tag=page)
    at = _page(app_ws, monkeypatch, page, rid)
    errors = " ".join(str(e.value) for e in at.error)
    want = "This run's model file is missing" if damage == "deleted" else "This run's model file is damaged"
    assert want in errors, errors
    assert not at.get("download_button") and not at.get("plotly_chart")


def test_export_page_shows_a_damaged_scores_file(app_ws, monkeypatch):
    rid = _damaged_run(app_ws, "truncated", "scores.npz")
    at = _page(app_ws, monkeypatch, "export", rid)
    errors = " ".join(str(e.value) for e in at.error)
    assert "This run's scores file is damaged" in errors and "not a valid scores file" in errors, errors
    at = _page(app_ws, monkeypatch, "export", "base")  # the sound run beside it still exports
    assert len(at.get("download_button")) == 2 and not at.error


def _fitted_members(tmp_path):
    data, _ = hx.simulate(n=150, dims=(4, 3), ranks={("a", "b"): 1, ("a",): 1, ("b",): 1}, noise=0.3, seed=0)
    model = hx.HCL(ranks="auto", random_state=0).fit(data)
    path = tmp_path / "m.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_sizes_are_limited_by_the_header_before_anything_is_read(tmp_path):
    """An optional or open-length member (psi, the histories) is bounded by the model's own header:
    a zip bomb that inflates to 800 MB, or a psi of the wrong length, is refused before it is read."""
    members = _fitted_members(tmp_path)
    n_iter = json.loads(str(members["meta"][()]))["n_iter"]
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, v in members.items():
            if k != "objective_history":
                zf.writestr(f"{k}.npy", _npy(v))
        n = 100_000_000  # 800 MB of float64 zeros, a few hundred KB compressed
        with zf.open("objective_history.npy", "w", force_zip64=True) as fh:
            hdr = io.BytesIO()
            np.lib.format.write_array_header_1_0(hdr, {"descr": "<f8", "fortran_order": False, "shape": (n,)})
            fh.write(hdr.getvalue())
            chunk = bytes(8 << 20)
            for _ in range(n * 8 // len(chunk)):
                fh.write(chunk)
            fh.write(bytes(n * 8 % len(chunk)))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=rf"bomb\.npz: not a valid model file \('objective_history' has shape \({n},\); expected \(<=\d+,\)"):
            hx.HCL.load(bomb)
        assert tracemalloc.get_traced_memory()[1] < 20 << 20
    finally:
        tracemalloc.stop()
    for name, arr in [("psi", np.zeros(5_000_000)), ("val_history", np.zeros(max(10 * (n_iter + 2), 100_000)))]:
        p = _zip(tmp_path / f"{name}.npz", {**{f"{k}.npy": _npy(v) for k, v in members.items()}, f"{name}.npy": _npy(arr)})
        tracemalloc.start()
        try:
            with pytest.raises(ValueError, match=rf"{name}\.npz: not a valid model file \('{name}' has shape"):
                hx.HCL.load(p)
            assert tracemalloc.get_traced_memory()[1] < 20 << 20
        finally:
            tracemalloc.stop()


def test_a_header_of_the_wrong_shape_is_refused_by_name(tmp_path):
    members = _fitted_members(tmp_path)
    meta = json.loads(str(members["meta"][()]))
    for key, value in [("preprocessing", [["x"]]), ("preprocessing", {"zz": {}}), ("timings", [1]),
                       ("preprocessing", {"a": {"columns": "x", "id_column": None}})]:
        p = _zip(tmp_path / "h.npz", {**{f"{k}.npy": _npy(v) for k, v in members.items()},
                                      "meta.npy": _npy(np.array(json.dumps({**meta, key: value})))})
        with pytest.raises(ValueError, match=rf"h\.npz: not a valid model file \(.*{key}"):
            hx.HCL.load(p)


def test_a_crafted_network_spec_allocates_nothing(tmp_path):
    data, _ = hx.simulate(n=150, dims=(4, 3), ranks={("a", "b"): 1, ("a",): 1, ("b",): 1}, noise=0.3, seed=0)
    model = hx.HCL(estimator="contrastive", ranks=1, max_epochs=1, hidden=(8,), device="cpu", random_state=0).fit(data)
    path = tmp_path / "c.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    meta = json.loads(str(members["meta"][()]))
    meta["module_spec"]["hidden"] = [10**6, 10**6]  # 10^12 weights if it were built for real
    p = _zip(tmp_path / "spec.npz", {**{f"{k}.npy": _npy(v) for k, v in members.items()},
                                     "meta.npy": _npy(np.array(json.dumps(meta)))})
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"spec\.npz: not a valid model file"):
            hx.HCL.load(p)
        assert tracemalloc.get_traced_memory()[1] < 50 << 20
    finally:
        tracemalloc.stop()


def test_a_scores_file_larger_than_its_model_allows_is_refused_before_it_is_read(app_ws, tmp_path):
    import shutil

    from hcl_explore import report, runs

    d = runs.run_path(app_ws, "bomb-scores")
    shutil.copytree(runs.run_path(app_ws, "base"), d)
    assert report.scores_table(d).shape[0] == 300  # the model's header allows what the run wrote
    with np.load(os.path.join(d, "scores.npz"), allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    write_npz_bomb(os.path.join(d, "scores.npz"), members, "node_0", 50_000_000)  # 400 MB of zeros in node_0
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"scores\.npz: not a valid scores file \('node_0' has shape"):
            report.scores_table(d)
        assert tracemalloc.get_traced_memory()[1] < 20 << 20
    finally:
        tracemalloc.stop()
