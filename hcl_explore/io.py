"""Reading modality tables and outcomes from files users actually have.

One table per modality (CSV, TSV or Parquet), rows = samples, one id column, feature columns.
:func:`load_modalities` reads, validates and cleans them into a :class:`MultimodalData` whose
``report`` says what was kept, dropped, converted and imputed; :func:`load_outcomes` does the same
for outcome tables. Every problem is raised as a :class:`LoadError` naming the file and the column
or row (it is a ``ValueError``, so the CLI and the app show its message as is).

The cleaning learned on one load is recorded in ``data.report["preprocessing"]`` (plain JSON) and
can be applied to new samples with ``load_modalities(..., preprocessing=spec)`` so that they get
the same columns, the same one-hot levels and the same imputation means.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import json
import os
import re
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, Union

import numpy as np
import pandas as pd

from .data import MultimodalData

Source = Union[str, os.PathLike, pd.DataFrame]

_TEXT_EXT = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": None}
_PARQUET_EXT = {".parquet", ".pq", ".parq"}
_DELIMS = [",", "\t", ";", "|"]
_DELIM_NAME = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}
# Tokens that mean "no value" in clinical exports, on top of pandas' defaults.
_EXTRA_NA = ["?", "-", "--", ".", "missing", "Missing", "MISSING", "#DIV/0!", "#VALUE!", "#N/A!", "NR", "n.a."]
_ID_NAME = re.compile(
    r"^(id|.*[_ .\-]id|.*ID|ids?|patient|patient.?(id|no|number|key)?|subject.?(id)?|sample.?(id|name)?|"
    r"participant.?(id)?|person.?(id)?|case.?(id)?|record.?(id)?|mrn|eid|uid|uuid|barcode|hadm.?id|"
    r"encounter.?(id)?|visit.?(id)?|index|unnamed: ?0)$",
    re.IGNORECASE,
)
_NUMBER_CLEAN = re.compile(r"^\s*[<>≤≥]=?\s*")
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$")
_DATE = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}([ T]\d{1,2}:\d{2}.*)?$|^\d{1,2}/\d{1,2}/\d{2,4}( \d{1,2}:\d{2}.*)?$")


class LoadError(ValueError):
    """A problem with an input file; the message names the file and the column or row."""


# ---------------------------------------------------------------------------------------------
# reading one table
@dataclass
class TableInfo:
    """How a table was read (reported to the user)."""

    label: str  # file name or "<DataFrame 'name'>"
    format: str  # csv | tsv | text | parquet | dataframe
    encoding: str | None = None
    delimiter: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "file": self.label,
            "format": self.format,
            "encoding": self.encoding,
            "delimiter": _DELIM_NAME.get(self.delimiter, self.delimiter) if self.delimiter else None,
            "notes": list(self.notes),
        }


def _gib(b: float) -> str:
    return f"{b / 2**30:.1f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB" if b >= 2**20 else f"{b / 2**10:.0f} KiB"


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def _sniff_encoding(head: bytes) -> tuple[str, bool]:
    """(encoding, certain). Certain when a BOM says so or the head decodes as UTF-8."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig", True
    if head.startswith(codecs.BOM_UTF16_LE) or head.startswith(codecs.BOM_UTF16_BE):
        return "utf-16", True
    if len(head) >= 4 and head[1:2] == b"\x00" and head[3:4] == b"\x00" and head[0:1] != b"\x00":
        return "utf-16-le", True
    if len(head) >= 4 and head[0:1] == b"\x00" and head[2:3] == b"\x00" and head[1:2] != b"\x00":
        return "utf-16-be", True
    try:
        # A multi-byte character may be cut at the end of the head.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return "utf-8", False
    except UnicodeDecodeError:
        return _fallback_encoding(head), True


def _fallback_encoding(raw: bytes) -> str:
    """For bytes that are not valid UTF-8: UTF-8 with replacement when the bytes also hold valid
    multi-byte UTF-8 sequences (a file of mixed encodings), else Windows-1252, else Latin-1."""
    if re.search(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}", raw):
        return "utf-8/replace"
    try:
        raw.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return "latin-1"


# The delimiter is sniffed from the header and this many data rows.
_SNIFF_ROWS = 20


def _head_lines(head: bytes, at_end: bool) -> tuple[str, bool, list[str]]:
    """(encoding, certain, non-blank lines) of the first bytes of a text file. The last line is left
    out unless the head is the whole file (it may be cut)."""
    enc, certain = _sniff_encoding(head)
    text = head.decode(enc.split("/")[0], errors="replace")
    if enc == "utf-8-sig":
        text = text.lstrip("\ufeff")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if not at_end:
        lines = lines[:-1]
    return enc, certain, [ln for ln in lines if ln.strip() != ""]


def _read_head(fh) -> tuple[bytes, bool]:
    """The first bytes of a text stream, holding its header and first rows whole however wide they
    are: read (in growing chunks) until the header and ``_SNIFF_ROWS`` rows are complete, or, past
    4 MiB, the header and one row are, or the stream ends. Returns (bytes, at_end)."""
    buf = bytearray()
    chunk = 1 << 16
    while True:
        data = fh.read(chunk)
        if not data:
            return bytes(buf), True
        buf += data
        enc, _, lines = _head_lines(bytes(buf), False)
        n = len(lines)
        if n > _SNIFF_ROWS or (n >= 2 and len(buf) >= 1 << 22) or (b"\x00" in buf and not enc.startswith("utf-16")):
            return bytes(buf), False
        chunk = min(2 * chunk, 1 << 24)


# What a damaged gzip stream raises: truncated (EOFError), bad CRC, header or trailing bytes
# (gzip.BadGzipFile), corrupt deflate data (zlib.error).
_GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def _gzip_damage(path: str) -> str | None:
    """Why a gzip file is damaged (the decompressor's message), or None when it decompresses whole."""
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass
    except _GZIP_ERRORS as exc:
        return str(exc) or type(exc).__name__
    except OSError:
        return None
    return None


def _source_label(source: Any, default: str) -> str:
    """The name errors give a source: a path's file name as given, else ``default``."""
    if isinstance(source, (str, bytes, os.PathLike)):
        path = os.fsdecode(source)
        return os.path.basename(path.rstrip("/" + os.sep)) or path
    return default


def _check_unique_columns(names: Sequence[Any], lab: str) -> None:
    seen: dict[str, int] = {}
    for h in names:
        seen[str(h)] = seen.get(str(h), 0) + 1
    dups = [h for h, k in seen.items() if k > 1]
    if dups:
        raise LoadError(f"{lab}: duplicate column name(s): {dups[:5]}. Give every column its own name.")


def _split_fields(line: str, delim: str) -> list[str]:
    try:
        return next(csv.reader([line], delimiter=delim, quotechar='"'))
    except (csv.Error, StopIteration):
        return [line]


def _sniff_delimiter(lines: list[str], preferred: str | None, label: str) -> tuple[str, bool]:
    """Pick the delimiter that splits the header and the first rows into the same number (> 1) of
    fields. Returns (delimiter, trailing_extra) where trailing_extra means every data row carries
    one extra empty field (a trailing delimiter the header lacks)."""
    header, rows = lines[0], lines[1:21]
    best: tuple[str, bool] | None = None
    mismatch: list[str] = []
    order = ([preferred] if preferred else []) + [d for d in _DELIMS if d != preferred]
    for d in order:
        nh = len(_split_fields(header, d))
        counts = [len(_split_fields(r, d)) for r in rows]
        if nh <= 1 and not any(c > 1 for c in counts):
            continue
        if not counts:
            if nh > 1:
                return d, False
            continue
        if all(c == nh for c in counts) and nh > 1:
            return d, False
        if nh > 1 and all(c == nh + 1 for c in counts):
            if all(_split_fields(r, d)[-1].strip() == "" for r in rows):
                best = best or (d, True)
                continue
            raise LoadError(
                f"{label}: the data rows have one more field than the header line ({nh} names, {nh + 1} "
                f"{_DELIM_NAME[d]}-separated values); a column name is missing."
            )
        if nh > 1 and sum(c == nh for c in counts) >= 0.5 * len(counts):
            best = best or (d, False)  # a few ragged rows: let the parser name them
            continue
        if nh <= 1 and counts and all(c == counts[0] for c in counts) and counts[0] > 1:
            mismatch.append(d)
    if best:
        return best
    if mismatch:
        hd = [d for d in _DELIMS if len(_split_fields(header, d)) > 1]
        raise LoadError(
            f"{label}: mismatched delimiter: the rows are separated by {_DELIM_NAME[mismatch[0]]}s but the "
            f"header line {'by ' + _DELIM_NAME[hd[0]] + 's' if hd else 'has a single field'}. "
            "Save the file with one delimiter throughout."
        )
    raise LoadError(
        f"{label}: found only one column (tried comma, tab, semicolon and pipe as delimiters). A modality "
        "table needs an id column and at least one feature column."
    )


def _read_parquet(path: str, label: str, info: TableInfo, memory_limit: int) -> pd.DataFrame:
    import pyarrow as pa

    # Opened as a local file: a name like 's3:x.parquet' or 'file:x.parquet' is not a URI.
    try:
        fh = pa.OSFile(path, "rb")
    except OSError as exc:
        raise LoadError(f"{label}: cannot be read ({exc}).") from None
    with fh:
        return _read_parquet_file(fh, label, info, memory_limit)


def _read_parquet_file(fh: Any, label: str, info: TableInfo, memory_limit: int) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(fh)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise LoadError(f"{label}: not a readable Parquet file ({exc}).") from None
    size = sum(pf.metadata.row_group(g).total_byte_size for g in range(pf.num_row_groups))
    if 2 * size > memory_limit:
        raise LoadError(
            f"{label}: the table needs about {_gib(2 * size)} in memory and only "
            f"{_gib(memory_limit)} is available. Fit it streamed with hcl_explore.ParquetSource "
            "(HCL.fit reads it in row groups) or load a subset of columns."
        )
    try:
        table = pf.read()
    except Exception as exc:
        raise LoadError(f"{label}: could not read the Parquet data ({exc}).") from None
    # Struct columns become one column per field ("a.b"); lists and maps cannot be features.
    while any(pa.types.is_struct(f.type) for f in table.schema):
        table = table.flatten()
    _check_unique_columns(table.schema.names, label)
    keep = []
    for f in table.schema:
        if pa.types.is_list(f.type) or pa.types.is_large_list(f.type) or pa.types.is_map(f.type) or \
                pa.types.is_fixed_size_list(f.type) or pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type):
            info.notes.append(f"column {f.name!r} dropped: nested or binary Parquet type ({f.type})")
        else:
            keep.append(f.name)
    if len(keep) < table.num_columns:
        table = table.select(keep)
    try:
        return table.to_pandas()
    except Exception as exc:
        raise LoadError(f"{label}: could not convert the Parquet data ({exc}).") from None


def read_table(source: Source, label: str | None = None, *, memory_limit: int | None = None) -> tuple[pd.DataFrame, TableInfo]:
    """Read one table (CSV, TSV, delimited text or Parquet; format from the extension, then from the
    content; ``.gz`` text is decompressed) into a DataFrame of raw columns, without interpreting them.

    ``source`` is a path (``str``, ``bytes`` or path-like; a local file, never a URL) or a DataFrame.
    Raises :class:`LoadError` naming the file (as given) for unreadable, binary, empty, damaged
    (a truncated or corrupt ``.gz``) or malformed files, for duplicate column names and for files
    too large for the available memory (``memory_limit`` in bytes overrides the check).
    """
    if isinstance(source, pd.DataFrame):
        lab = label or "<DataFrame>"
        if source.shape[0] == 0:
            raise LoadError(f"{lab}: the table has no rows.")
        df = source.copy()
        if not isinstance(df.index, pd.RangeIndex):
            # An index holding ids (e.g. after set_index) becomes a column the id search can find.
            df = df.reset_index(allow_duplicates=True)
        df.columns = [str(c) for c in df.columns]
        # Files with a repeated column name are refused (see the header check below); so are frames.
        _check_unique_columns(df.columns, lab)
        return df, TableInfo(lab, "dataframe")
    if not isinstance(source, (str, bytes, os.PathLike)):
        raise LoadError(f"{label or source!r}: expected a file path or a pandas DataFrame, got {type(source).__name__}.")
    path = os.fsdecode(source)
    lab = _source_label(path, path) if label is None else label
    if not os.path.exists(path):
        raise LoadError(f"{lab}: file not found ({path}).")
    if os.path.isdir(path):
        raise LoadError(f"{lab}: is a folder, not a file.")
    # pandas reads a relative name like 'file:x.csv' or 'http:x.csv' as a URL; an absolute path never is.
    local = os.path.abspath(path)
    limit = _available_memory() if memory_limit is None else int(memory_limit)
    size = os.path.getsize(path)
    if size == 0:
        raise LoadError(f"{lab}: the file is empty.")
    try:
        with open(path, "rb") as fh:
            start = fh.read(1 << 16)
    except OSError as exc:
        raise LoadError(f"{lab}: cannot be read ({exc.strerror}).") from None
    name = path.lower()
    compression = None
    if name.endswith(".gz"):
        name = name[:-3]
    ext = os.path.splitext(name)[1]
    info = TableInfo(lab, "csv")

    if start.startswith(b"PAR1"):
        info.format = "parquet"
        if ext not in _PARQUET_EXT:
            info.notes.append(f"read as Parquet from its content (extension {ext or 'none'})")
        return _read_parquet(path, lab, info, limit), info
    if ext in _PARQUET_EXT:
        raise LoadError(f"{lab}: has a Parquet extension but is not a Parquet file (no PAR1 magic bytes).")
    if start.startswith(b"PK\x03\x04"):
        raise LoadError(f"{lab}: is a ZIP archive (an Excel workbook?). Save each table as CSV, TSV or Parquet.")
    if start.startswith(b"\x1f\x8b"):
        compression = "gzip"
        size *= 5  # a rough decompressed size for the memory check
    elif b"\x00" in start and not _sniff_encoding(start)[0].startswith("utf-16"):
        raise LoadError(f"{lab}: looks like a binary file, not a CSV/TSV/Parquet table.")
    # CSV text of floats takes about as many bytes as float64 values; pandas and our copy double it.
    if 2 * size > limit:
        raise LoadError(
            f"{lab}: {_gib(size)} of text needs about {_gib(2 * size)} in memory and only "
            f"{_gib(limit)} is available. Convert it to Parquet and fit it streamed with "
            "hcl_explore.ParquetSource, or split the file."
        )
    # The header and the first rows, whole however wide (the delimiter and the column names come from them).
    try:
        with (gzip.open(path, "rb") if compression else open(path, "rb")) as fh:
            head, at_end = _read_head(fh)
    except _GZIP_ERRORS as exc:
        raise LoadError(f"{lab}: a damaged gzip file ({exc or type(exc).__name__}).") from None
    except OSError as exc:
        raise LoadError(f"{lab}: cannot be read ({exc.strerror or exc}).") from None
    enc, certain, lines = _head_lines(head, at_end)
    if b"\x00" in head and not enc.startswith("utf-16"):
        raise LoadError(f"{lab}: looks like a binary file, not a CSV/TSV/Parquet table.")
    if not lines:
        raise LoadError(f"{lab}: the file holds no text (only blank lines).")
    if len(lines) < 2:
        raise LoadError(f"{lab}: has a header line but no data rows.")
    preferred = _TEXT_EXT.get(ext)
    delim, trailing = _sniff_delimiter(lines, preferred, lab)
    if preferred and delim != preferred:
        info.notes.append(f"delimiter is {_DELIM_NAME[delim]}, not the {_DELIM_NAME[preferred]} its extension suggests")
    info.format = "tsv" if delim == "\t" else "csv" if delim == "," else "text"
    info.delimiter = delim
    header = _split_fields(lines[0], delim)
    seen: dict[str, int] = {}
    for h in header:
        h = h.strip()
        if h:
            seen[h] = seen.get(h, 0) + 1
    dups = [h for h, k in seen.items() if k > 1]
    if dups:
        raise LoadError(f"{lab}: duplicate column name(s) in the header: {dups[:5]}.")

    def _read(encoding: str, errors: str = "strict") -> pd.DataFrame:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            # Mixed types across the parser's chunks end up as text columns, which the cleaning parses.
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            return pd.read_csv(
                local, sep=delim, encoding=encoding, encoding_errors=errors, compression=compression,
                index_col=False if trailing else None, na_values=_EXTRA_NA, skip_blank_lines=True,
            )

    try:
        try:
            df = _read(enc.split("/")[0], "replace" if enc.endswith("/replace") else "strict")
        except UnicodeDecodeError:
            if certain:
                raise
            with open(path, "rb") as fh:
                raw = fh.read() if compression is None else gzip.decompress(fh.read())
            enc = _fallback_encoding(raw)
            df = _read(enc.split("/")[0], "replace" if enc.endswith("/replace") else "strict")
    except (*_GZIP_ERRORS, pd.errors.ParserError, pd.errors.ParserWarning, UnicodeDecodeError) as exc:
        # Damage past the sniffed head may first show as text the parser or decoder cannot read.
        why = _gzip_damage(path) if compression == "gzip" else None
        if why is not None or isinstance(exc, _GZIP_ERRORS):
            raise LoadError(f"{lab}: a damaged gzip file ({why or exc or type(exc).__name__}).") from None
        raise _parse_error(exc, lab, delim, enc) from None
    except pd.errors.EmptyDataError:
        raise LoadError(f"{lab}: the file holds no table.") from None
    except MemoryError:
        raise LoadError(f"{lab}: ran out of memory while reading; convert it to Parquet and use hcl_explore.ParquetSource.") from None
    except OSError as exc:
        raise LoadError(f"{lab}: cannot be read ({exc}).") from None
    info.encoding = enc.split("/")[0].replace("utf-8-sig", "utf-8 (with BOM)")
    if enc.endswith("/replace"):
        info.notes.append("the file mixes text encodings: read as UTF-8, undecodable bytes replaced")
    elif enc in ("cp1252", "latin-1"):
        info.notes.append(f"not valid UTF-8: read as {enc}")
    if not isinstance(df.index, pd.RangeIndex):
        raise LoadError(
            f"{lab}: the data rows have one more field than the header line; a column name is missing or "
            "every row has an extra value."
        )
    df.columns = [str(c).strip().lstrip("\ufeff") for c in df.columns]
    if df.shape[0] == 0:
        raise LoadError(f"{lab}: has a header line but no data rows.")
    return df, info


def _parse_error(exc: Exception, lab: str, delim: str, enc: str) -> LoadError:
    """The LoadError for what pandas could not parse or decode in an intact file."""
    if isinstance(exc, pd.errors.ParserWarning):
        return LoadError(f"{lab}: rows have more fields than the header ({exc}).")
    if isinstance(exc, UnicodeDecodeError):
        return LoadError(f"{lab}: text encoding could not be decoded as {enc} ({exc.reason} at byte {exc.start}).")
    msg = str(exc)
    m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", msg)
    if m:
        return LoadError(
            f"{lab}: line {m.group(2)} has {m.group(3)} fields but the header has {m.group(1)} "
            f"(delimiter {_DELIM_NAME[delim]}). Check for an unquoted delimiter inside a value."
        )
    return LoadError(f"{lab}: could not parse the file ({msg.strip()}).")


# ---------------------------------------------------------------------------------------------
# ids
def _id_keys(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(match keys, display ids) for an id column. Integers and their string forms ('7', '007',
    7.0) get the same key so that files storing ids differently still match."""
    if pd.api.types.is_bool_dtype(col):
        raise LoadError("boolean values cannot be sample ids")
    if pd.api.types.is_integer_dtype(col):
        s = col.astype("Int64").astype(str).astype(object)
        s = s.where(col.notna(), None)
        return s.to_numpy(dtype=object), s.to_numpy(dtype=object)
    if pd.api.types.is_float_dtype(col):
        v = col.to_numpy(dtype=np.float64)
        ok = np.isfinite(v)
        if np.any(ok & (v != np.round(v))):
            raise LoadError("ids are non-integer numbers")
        out = np.array([str(int(x)) if f else None for x, f in zip(v, ok)], dtype=object)
        return out, out
    # Vectorized string handling: ids can be millions of rows.
    t = col.astype("string").str.strip()
    t = t.mask(t == "")
    disp = t.astype(object).where(t.notna(), None).to_numpy(dtype=object)
    digits = t.str.fullmatch(r"\d+").fillna(False).to_numpy(dtype=bool)
    key = disp.copy()
    # '007' and 7 are the same sample; keep the file's spelling for display.
    if digits.any():
        key[digits] = t[digits].str.lstrip("0").replace("", "0").astype(object).to_numpy()
    return key, disp


def _table_ids(df: pd.DataFrame, col: str, lab: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_id_keys` of a table's id column, its errors naming the file and the column."""
    try:
        return _id_keys(df[col])
    except LoadError as exc:
        raise LoadError(f"{lab}: id column {col!r}: {exc}.") from None


def _looks_like_id(df: pd.DataFrame, c: str) -> bool:
    s = df[c]
    if s.isna().any() or pd.api.types.is_bool_dtype(s):
        return False
    if pd.api.types.is_float_dtype(s):
        v = s.to_numpy()
        if np.any(v != np.round(v)):
            return False
    return bool(s.is_unique)


def detect_id_column(frames: Mapping[str, pd.DataFrame]) -> dict[str, str]:
    """Per table: the id column. A name like ``id``/``patient_id``/``sample``/``subject`` whose
    values are unique; a name shared by all tables wins; else a unique first column of strings or
    integers. Raises :class:`LoadError` naming the table when none is found."""
    cands: dict[str, list[str]] = {}
    for lab, df in frames.items():
        cands[lab] = [c for c in df.columns if _ID_NAME.match(c) and _looks_like_id(df, c)]
    common = set.intersection(*(set(v) for v in cands.values())) if cands else set()
    out: dict[str, str] = {}
    for lab, df in frames.items():
        shared = [c for c in cands[lab] if c in common]
        if shared:
            out[lab] = shared[0]
        elif cands[lab]:
            out[lab] = cands[lab][0]
        else:
            first = df.columns[0]
            s = df[first]
            if (pd.api.types.is_string_dtype(s) or pd.api.types.is_object_dtype(s) or pd.api.types.is_integer_dtype(s)) \
                    and _looks_like_id(df, first):
                out[lab] = first
            else:
                # A column named like an id that is not unique: take it, so that the duplicate or
                # blank ids get their own error naming the rows.
                named = [c for c in df.columns if _ID_NAME.match(c)]
                if named:
                    out[lab] = named[0]
                    continue
                raise LoadError(
                    f"{lab}: no id column found (looked for a unique column named like 'id', 'patient_id', "
                    f"'sample', 'subject'). Name it with id_column=...; columns: {list(df.columns)[:10]}."
                )
    return out


# ---------------------------------------------------------------------------------------------
# columns
def _clean_numeric_strings(s: pd.Series, decimal_comma: bool = False) -> tuple[pd.Series, list[str]]:
    """Parse a text column as numbers: thousands separators, '<0.5'-style bounds, decimal commas.

    '1,234' is ambiguous: it is read as a decimal comma when the column holds unambiguous decimal
    commas ('0,5', '12,34') and no unambiguous thousands ('1,234.5', '1,234,567'), or when
    ``decimal_comma`` (a semicolon-delimited file) says so; otherwise as a thousands separator.
    Returns the parsed float column (NaN where unparsable) and notes on conversions done."""
    t = s.astype(object).where(s.notna(), None)
    t = pd.Series([None if x is None else str(x).strip() for x in t], index=s.index, dtype=object)
    notes: list[str] = []
    nonnull = t.notna()
    bound = t.str.match(_NUMBER_CLEAN, na=False)
    if bound.any():
        t = t.where(~bound, t.str.replace(_NUMBER_CLEAN, "", regex=True))
        notes.append(f"{int(bound.sum())} values like '<0.5' taken at their bound")
    has_comma = t.str.contains(",", regex=False, na=False)
    if has_comma.any():
        thou = t.str.match(_THOUSANDS, na=False)
        dec = t.str.match(_DECIMAL_COMMA, na=False)
        sure_thou = thou & (t.str.contains(".", regex=False, na=False) | (t.str.count(",") > 1))
        sure_dec = dec & ~thou
        if not sure_thou.any() and (sure_dec.any() or decimal_comma):
            t = t.where(~dec, t.str.replace(",", ".", regex=False))
            notes.append(f"decimal commas read in {int(dec.sum())} values")
        elif thou.any():
            t = t.where(~thou, t.str.replace(",", "", regex=False))
            notes.append(f"thousands separators removed in {int(thou.sum())} values")
    num = pd.to_numeric(t, errors="coerce")
    return num.astype(np.float64), notes


def _row_ref(idx: int) -> str:
    return f"row {idx + 1}"


@dataclass
class _Prepared:
    keys: np.ndarray  # (n_rows,) object
    display: np.ndarray  # (n_rows,) object
    X: np.ndarray  # (n_rows, d) float64, NaN = missing cell
    names: list[str]
    spec: list[dict]
    report: dict
    present: np.ndarray | None = None  # (n_rows,) rows that have the modality


def _prepare_table(
    df: pd.DataFrame,
    id_col: str,
    lab: str,
    *,
    max_categories: int,
    spec: list[dict] | None,
    decimal_comma: bool = False,
    owned: bool = False,
) -> _Prepared:
    """Turn a raw table into (ids, numeric matrix with NaN cells, feature names) and say what was
    done to each column. With ``spec`` the columns are rebuilt as recorded instead of learned."""
    report: dict[str, Any] = {"dropped": [], "one_hot": [], "converted": []}
    keys, display = _table_ids(df, id_col, lab)
    miss = np.flatnonzero(pd.isna(keys))
    if miss.size:
        # Rows with no id and no values (blank lines of commas) are skipped; an id-less row with
        # values cannot be matched to a sample.
        blank = df.iloc[miss].isna().all(axis=1).to_numpy()
        if not blank.all():
            bad = miss[~blank]
            raise LoadError(
                f"{lab}: id column {id_col!r} is blank in {bad.size} row(s) ({', '.join(_row_ref(int(i)) for i in bad[:5])}); "
                "every row needs a sample id."
            )
        keep_rows = np.ones(len(df), dtype=bool)
        keep_rows[miss] = False
        df = df.iloc[keep_rows]
        keys, display = keys[keep_rows], display[keep_rows]
        report["blank_rows"] = int(miss.size)
    ks = pd.Series(keys)
    dup = ks.duplicated(keep=False).to_numpy()
    if dup.any():
        groups: dict[str, list[int]] = {}
        rows = np.asarray(df.index)
        for i in np.flatnonzero(dup):
            groups.setdefault(str(display[i]), []).append(int(rows[i]) + 1)
            if len(groups) > 5:
                break
        ex = "; ".join(f"{k!r} (rows {', '.join(map(str, v[:3]))})" for k, v in list(groups.items())[:5])
        raise LoadError(f"{lab}: {int(ks[dup].nunique())} duplicate id(s) in column {id_col!r}, e.g. {ex}.")
    n = len(df)
    rows = np.asarray(df.index)  # file row positions, for messages
    feats = [c for c in df.columns if c != id_col]
    # Each kept feature: (name, spec entry, column of the numeric block or its own array).
    plan: list[tuple[str, dict, int | np.ndarray]] = []

    def text_values(s: pd.Series) -> pd.Series:
        t = s.astype("string").str.strip()
        return t.mask(t == "")

    def one_hot(t: pd.Series, level: str) -> np.ndarray:
        v = (t == level).astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
        return v

    if spec is not None:
        present = set(feats)
        for e in spec:
            if e["source"] not in present:
                raise LoadError(f"{lab}: column {e['source']!r} used by the fitted preprocessing is missing.")
        for e in spec:
            s = df[e["source"]]
            if e["kind"] == "numeric":
                v = s.to_numpy(dtype=np.float64, na_value=np.nan) if (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)) \
                    else _clean_numeric_strings(s, decimal_comma)[0].to_numpy()
                v = np.where(np.isinf(v), np.nan, v)
            else:
                v = one_hot(text_values(s), e["level"])
            plan.append((e["name"], dict(e), v))
        B = np.empty((n, 0))
    else:
        # Numeric columns are checked together on one float block: files can have 10^5 rows x 10^3 columns.
        num_cols = [c for c in feats if pd.api.types.is_bool_dtype(df[c]) or pd.api.types.is_numeric_dtype(df[c])]
        col_of = {c: j for j, c in enumerate(num_cols)}
        B = df[num_cols].to_numpy(dtype=np.float64, na_value=np.nan, copy=False) if num_cols else np.empty((n, 0))
        if not B.flags.writeable:
            # A view of the parser's float block (no 10^8-cell copy). Frames read from files are
            # ours to modify; a caller's DataFrame is copied instead.
            if owned:
                B.flags.writeable = True
            else:
                B = B.copy()
        with np.errstate(invalid="ignore"):
            mn = np.fmin.reduce(B, axis=0) if n else np.full(B.shape[1], np.nan)
            mx = np.fmax.reduce(B, axis=0) if n else np.full(B.shape[1], np.nan)
        for j in np.flatnonzero(np.isinf(mn) | np.isinf(mx)):
            col = B[:, j]
            k = int(np.isinf(col).sum())
            col[np.isinf(col)] = np.nan
            report["converted"].append({"column": num_cols[j], "notes": [f"{k} infinite value(s) set missing"]})
            mn[j], mx[j] = np.fmin.reduce(col), np.fmax.reduce(col)
        for c in feats:
            if c in col_of:
                j = col_of[c]
                if np.isnan(mn[j]):
                    why = "empty (a trailing delimiter?)" if c.startswith("Unnamed") else "empty (no values)"
                    report["dropped"].append({"column": c, "reason": why})
                elif mn[j] == mx[j]:
                    report["dropped"].append({"column": c, "reason": f"constant ({mn[j]:g})"})
                elif _ID_NAME.match(c) and not np.isnan(B[:, j]).any() and np.all(B[:, j] == np.round(B[:, j])) \
                        and len(np.unique(B[:, j])) == n:
                    report["dropped"].append({"column": c, "reason": "id-like (a unique integer per row)"})
                else:
                    plan.append((c, {"source": c, "kind": "numeric", "name": c}, j))
                continue
            s = df[c]
            nn = int(s.notna().sum())
            if nn == 0:
                why = "empty (a trailing delimiter?)" if c.startswith("Unnamed") else "empty (no values)"
                report["dropped"].append({"column": c, "reason": why})
                continue
            if pd.api.types.is_datetime64_any_dtype(s) or isinstance(s.dtype, pd.PeriodDtype) or pd.api.types.is_timedelta64_dtype(s):
                report["dropped"].append({"column": c, "reason": "date/time"})
                continue
            parsed, notes = _clean_numeric_strings(s, decimal_comma)
            ok = int(parsed.notna().sum())
            pv = parsed.to_numpy()
            bad = np.flatnonzero(s.notna().to_numpy() & np.isnan(pv))
            if ok >= max(1, 0.9 * nn):
                if bad.size:
                    notes.append(
                        f"{bad.size} non-numeric value(s) set missing (first: {_row_ref(int(rows[bad[0]]))}, "
                        f"{str(s.iloc[bad[0]])[:30]!r})"
                    )
                if notes:
                    report["converted"].append({"column": c, "notes": notes})
                pv = np.where(np.isinf(pv), np.nan, pv)
                fin = pv[~np.isnan(pv)]
                if fin.size == 0 or fin.min() == fin.max():
                    report["dropped"].append({"column": c, "reason": "constant" if fin.size else "empty (no values)"})
                else:
                    plan.append((c, {"source": c, "kind": "numeric", "name": c}, pv))
                continue
            t = text_values(s)
            vals = t.dropna()
            levels = vals.value_counts()
            sample = vals.iloc[: min(20, len(vals))]
            if len(sample) and float(sample.str.match(_DATE).mean()) > 0.8:
                report["dropped"].append({"column": c, "reason": "date/time"})
                continue
            if len(levels) <= 1:
                report["dropped"].append({"column": c, "reason": "constant"})
                continue
            if len(levels) <= max_categories and len(levels) <= max(2, 0.5 * nn):
                ref = str(levels.index[0])  # most frequent level is the reference
                lv = [str(x) for x in sorted(levels.index[1:], key=str)]
                for level in lv:
                    plan.append((f"{c}={level}", {"source": c, "kind": "onehot", "level": level, "name": f"{c}={level}"},
                                 one_hot(t, level)))
                report["one_hot"].append({"column": c, "levels": lv, "reference": ref})
                continue
            uniq = len(levels) == nn
            ex = f"; first non-numeric value at {_row_ref(int(rows[bad[0]]))}: {str(s.iloc[bad[0]])[:30]!r}" if bad.size else ""
            spaced = float(sample.str.contains(r"\s", regex=True).mean()) > 0.5
            reason = ("id-like text (every value distinct)" if uniq and ok == 0 and not spaced else
                      f"free text ({len(levels)} distinct values, {nn - ok} not numbers{ex})")
            report["dropped"].append({"column": c, "reason": reason})
    names = [p[0] for p in plan]
    out_spec = [p[1] for p in plan]
    refs = [p[2] for p in plan]
    if refs and all(isinstance(r, int) for r in refs):
        idx = np.asarray(refs)
        X = B if np.array_equal(idx, np.arange(B.shape[1])) else B[:, idx]
    else:
        X = np.empty((n, len(plan)))
        for k, r in enumerate(refs):
            X[:, k] = B[:, r] if isinstance(r, int) else r
    return _Prepared(keys, display, X, names, out_spec, report)


# ---------------------------------------------------------------------------------------------
# public loaders
def load_modalities(
    sources: Mapping[str, Source],
    id_column: str | Mapping[str, str] | None = None,
    *,
    max_categories: int = 10,
    max_missing_column: float = 0.5,
    max_missing_row: float = 0.5,
    min_samples: int = 10,
    preprocessing: Mapping[str, Any] | None = None,
    memory_limit: int | None = None,
) -> MultimodalData:
    """Load one table per modality, aligned on sample ids.

    Parameters
    ----------
    sources : mapping modality name -> path (CSV/TSV/Parquet) or DataFrame
    id_column : str, or mapping modality -> str, optional
        Detected when omitted (a unique column named like ``id``, ``patient_id``, ``sample``...).
    max_categories : int
        Text columns with at most this many distinct values are one-hot encoded (the most frequent
        level is the reference); other text columns are dropped as free text.
    max_missing_column : float
        Columns missing in more than this share of a modality's rows are dropped; the remaining
        missing cells are imputed with the column mean (reported per column).
    max_missing_row : float
        A row missing more than this share of its features counts as the modality being missing
        for that sample (an entirely empty row always does).
    min_samples : int
        Fewer samples in all, or observing a modality, is an error.
    preprocessing : dict, optional
        ``data.report["preprocessing"]`` of an earlier load: reuse its columns, levels and means
        (for new samples that must be treated like the training ones).
    memory_limit : int, optional
        Bytes available for loading (default: what the machine has free).

    Returns
    -------
    MultimodalData
        ``ids`` are the first file's spelling of each id, in order of first appearance;
        ``report`` holds per-modality dicts (``report["modalities"]``), ``report["overlap"]``,
        ``report["warnings"]`` and ``report["preprocessing"]``; see :func:`report_frame`.
    """
    if not isinstance(sources, Mapping) or len(sources) == 0:
        raise LoadError("load_modalities needs a mapping {modality name: file path or DataFrame} with at least one entry.")
    names = [str(m) for m in sources]
    for m in names:
        if "+" in m or m.strip() == "":
            raise LoadError(f"Modality name {m!r} is not allowed (it must be non-empty and contain no '+').")
    raw: dict[str, pd.DataFrame] = {}
    infos: dict[str, TableInfo] = {}
    for m, src in sources.items():
        lab = _source_label(src, f"<DataFrame {m!r}>")
        df, info = read_table(src, lab, memory_limit=memory_limit)
        raw[str(m)], infos[str(m)] = df, info
    pre = dict(preprocessing or {})
    if isinstance(id_column, Mapping):
        idc = {str(m): str(id_column[m]) for m in id_column}
    elif id_column is not None:
        idc = {m: str(id_column) for m in names}
    elif pre:
        idc = {m: pre[m]["id_column"] for m in names if m in pre}
    else:
        idc = {}
    need = [m for m in names if m not in idc]
    if need:
        found = detect_id_column({infos[m].label: raw[m] for m in need})
        idc.update({m: found[infos[m].label] for m in need})
    for m in names:
        if idc[m] not in raw[m].columns:
            raise LoadError(f"{infos[m].label}: no id column {idc[m]!r}; columns are {list(raw[m].columns)[:10]}.")

    prepared: dict[str, _Prepared] = {}
    mod_reports: dict[str, dict] = {}
    warn: list[str] = []
    for m in names:
        lab = infos[m].label
        spec_m = pre.get(m) if pre else None
        if pre and spec_m is None:
            raise LoadError(f"Modality {m!r} is not in the given preprocessing (it has {list(pre)}).")
        p = _prepare_table(raw[m], idc[m], lab, max_categories=max_categories,
                           spec=None if spec_m is None else spec_m["columns"],
                           decimal_comma=infos[m].delimiter == ";", owned=infos[m].format in ("csv", "tsv", "text"))
        rep = p.report
        X = p.X
        nrow = X.shape[0]
        nan = np.isnan(X)
        # Columns missing too often are not worth imputing.
        if spec_m is None and X.shape[1]:
            # Judge columns on the rows that hold any value (an empty row = modality missing).
            row_nan = np.count_nonzero(nan, axis=1)
            with_data = row_nan < X.shape[1]
            n_data = int(with_data.sum())
            col_nan = np.count_nonzero(nan[with_data], axis=0) if n_data < nrow else np.count_nonzero(nan, axis=0)
            share = col_nan / n_data if n_data else np.ones(X.shape[1])
            drop = share > max_missing_column
            if drop.any():
                for j in np.flatnonzero(drop):
                    rep["dropped"].append({"column": p.names[j], "reason": f"mostly missing ({share[j]:.0%} of rows)"})
                keepj = ~drop
                X, nan = X[:, keepj], nan[:, keepj]
                p.names = [nm for nm, k in zip(p.names, keepj) if k]
                p.spec = [e for e, k in zip(p.spec, keepj) if k]
        if X.shape[1] == 0:
            why = "; ".join(f"{d['column']!r}: {d['reason']}" for d in rep["dropped"][:8]) or "the table has only the id column"
            raise LoadError(f"{lab}: modality {m!r} has no usable feature column ({why}).")
        row_missing = np.count_nonzero(nan, axis=1) / X.shape[1]
        absent = row_missing > max_missing_row
        if np.any(absent & (row_missing < 1)):
            rep["rows_treated_missing"] = int(np.sum(absent & (row_missing < 1)))
        empty_rows = int(np.sum(row_missing == 1))
        present = ~absent
        # Imputation means come from the rows that have the modality; with a given spec, from it.
        has_nan = bool(nan.any())
        if has_nan:
            X = X if X.flags.writeable else X.copy()
            X[nan] = 0.0  # every missing cell is overwritten below: the mean, or NaN for absent rows
        if spec_m is None:
            # Means over the present rows without copying X: a matrix-vector product.
            cnt = int(present.sum()) - (np.count_nonzero(nan[present], axis=0) if has_nan else 0)
            sums = present.astype(np.float64) @ X
            with np.errstate(invalid="ignore", divide="ignore"):
                mu = np.where(cnt > 0, sums / np.maximum(cnt, 1), 0.0)
            for e, v in zip(p.spec, mu):
                e["mean"] = float(v)
        else:
            mu = np.array([e.get("mean", 0.0) for e in p.spec])
        fill = nan & present[:, None] if has_nan else None
        imputed = {p.names[j]: int(k) for j, k in enumerate(np.count_nonzero(fill, axis=0)) if k} if has_nan else {}
        if has_nan:
            np.copyto(X, np.broadcast_to(mu, X.shape), where=fill)
        if absent.any():
            X[absent] = np.nan
        for name, k in imputed.items():
            share = k / max(int(present.sum()), 1)
            if share > 0.1:
                warn.append(f"{lab}: column {name!r} has {share:.0%} of its values imputed with the mean.")
        n_obs = int(present.sum())
        if n_obs < min_samples:
            raise LoadError(f"{lab}: modality {m!r} has {n_obs} sample(s) with data; at least {min_samples} are needed.")
        rep.update({
            **infos[m].as_dict(),
            "id_column": idc[m],
            "rows": int(nrow),
            "samples": n_obs,
            "features_in": int(raw[m].shape[1] - 1),
            "features_kept": int(X.shape[1]),
            "cells_imputed": int(sum(imputed.values())),
            "imputed": imputed,
            "empty_rows": empty_rows,
        })
        p.X = X
        p.present = present
        prepared[m] = p
        mod_reports[m] = rep

    # Align on ids: a sample absent from a file lacks that modality.
    all_keys = pd.Index(pd.unique(np.concatenate([p.keys for p in prepared.values()])))
    display = np.empty(len(all_keys), dtype=object)
    filled = np.zeros(len(all_keys), dtype=bool)
    arrays: dict[str, np.ndarray] = {}
    for m in names:
        p = prepared[m]
        pos = all_keys.get_indexer(p.keys)
        new = ~filled[pos]
        display[pos[new]] = p.display[new]
        filled[pos] = True
        if len(pos) == len(all_keys) and np.array_equal(pos, np.arange(len(pos))):
            arrays[m] = p.X  # same samples in the same order: no copy
        else:
            A = np.empty((len(all_keys), p.X.shape[1]))
            A[pos] = p.X
            absent_rows = np.ones(len(all_keys), dtype=bool)
            absent_rows[pos] = False
            A[absent_rows] = np.nan
            arrays[m] = A
    observed = np.zeros((len(all_keys), len(names)), dtype=bool)
    for j, m in enumerate(names):
        observed[all_keys.get_indexer(prepared[m].keys), j] = prepared[m].present
    nothing = ~observed.any(axis=1)
    if nothing.any():
        # Ids whose rows are empty in every file carry no data: report them rather than keep them.
        for m in names:
            arrays[m] = arrays[m][~nothing]
        warn.append(f"{int(nothing.sum())} id(s) have no data in any file (e.g. {display[nothing][0]!r}); left out.")
        display = display[~nothing]
        observed = observed[~nothing]
    n = len(display)
    if n < min_samples:
        raise LoadError(f"Only {n} sample(s) have data; at least {min_samples} are needed.")
    # Modalities must be linked through shared samples, or nothing relates them.
    o = observed.astype(np.int64)
    overlap = o.T @ o
    comp = _components(overlap > 0)
    if len(comp) > 1:
        desc = " / ".join("{" + ", ".join(names[i] for i in c) + "}" for c in comp)
        raise LoadError(
            f"The modalities fall into groups with no sample in common: {desc}. Check that the files use "
            "the same sample ids (and the same id column)."
        )
    for i, m in enumerate(names):
        mod_reports[m]["shared"] = {names[j]: int(overlap[i, j]) for j in range(len(names)) if j != i}
        for j in range(i + 1, len(names)):
            if 0 < overlap[i, j] < min_samples:
                warn.append(f"Modalities {m!r} and {names[j]!r} share only {int(overlap[i, j])} sample(s).")
    report = {
        "n_samples": int(n),
        "modalities": mod_reports,
        "overlap": {m: {names[j]: int(overlap[i, j]) for j in range(len(names))} for i, m in enumerate(names)},
        "warnings": sorted(set(warn), key=warn.index),
        "preprocessing": {m: {"id_column": idc[m], "columns": prepared[m].spec} for m in names},
    }
    return MultimodalData(arrays, ids=display, feature_names={m: prepared[m].names for m in names}, report=report,
                          _observed=observed)


def _components(adj: np.ndarray) -> list[list[int]]:
    n = adj.shape[0]
    seen = [False] * n
    out = []
    for s in range(n):
        if seen[s]:
            continue
        stack, comp = [s], []
        seen[s] = True
        while stack:
            i = stack.pop()
            comp.append(i)
            for j in np.flatnonzero(adj[i]):
                if not seen[j]:
                    seen[j] = True
                    stack.append(int(j))
        out.append(sorted(comp))
    return out


def report_frame(report: Mapping[str, Any]) -> pd.DataFrame:
    """The load report as a table: one row per modality (file, samples, features kept/dropped,
    why dropped, one-hot columns, cells imputed, samples shared with each other modality)."""
    rows = []
    mods = list(report.get("modalities", {}))
    for m, r in report.get("modalities", {}).items():
        reasons: dict[str, int] = {}
        for d in r.get("dropped", []):
            key = re.sub(r" \(.*", "", d["reason"])
            reasons[key] = reasons.get(key, 0) + 1
        row = {
            "modality": m,
            "file": r.get("file"),
            "samples": r.get("samples"),
            "features_kept": r.get("features_kept"),
            "features_dropped": len(r.get("dropped", [])),
            "dropped_why": ", ".join(f"{k} {v}" for k, v in reasons.items()),
            "one_hot": ", ".join(d["column"] for d in r.get("one_hot", [])),
            "cells_imputed": r.get("cells_imputed", 0),
        }
        for m2 in mods:
            row[f"shared_{m2}"] = r.get("samples") if m2 == m else r.get("shared", {}).get(m2, 0)
        rows.append(row)
    return pd.DataFrame(rows)


def format_report(report: Mapping[str, Any]) -> str:
    """The load report as readable text (what ``python -m hcl_explore inspect`` prints)."""
    out = [f"{report.get('n_samples', 0)} samples"]
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.max_colwidth", 60):
        out.append(report_frame(report).to_string(index=False))
    for m, r in report.get("modalities", {}).items():
        lines = []
        if r.get("notes"):
            lines += [f"  note: {x}" for x in r["notes"]]
        lines += [f"  dropped {d['column']!r}: {d['reason']}" for d in r.get("dropped", [])]
        lines += [f"  one-hot {d['column']!r}: levels {d['levels']} (reference {d['reference']!r})" for d in r.get("one_hot", [])]
        lines += [f"  converted {d['column']!r}: {'; '.join(d['notes'])}" for d in r.get("converted", [])]
        if r.get("imputed"):
            items = sorted(r["imputed"].items(), key=lambda kv: -kv[1])
            lines.append("  imputed (mean): " + ", ".join(f"{k} {v}" for k, v in items[:8]) + (" ..." if len(items) > 8 else ""))
        if r.get("rows_treated_missing"):
            lines.append(f"  {r['rows_treated_missing']} mostly empty row(s) counted as missing this modality")
        if lines:
            out.append(f"\n{m} ({r.get('file')}, {r.get('format')}, encoding {r.get('encoding')}, id column {r.get('id_column')!r}):")
            out += lines
    if report.get("warnings"):
        out.append("\nwarnings:")
        out += [f"  {w}" for w in report["warnings"]]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# outcomes


@dataclass
class Outcomes:
    """Outcome columns indexed by sample id.

    Attributes
    ----------
    frame : DataFrame (n_ids, k)
        Codes as floats (NaN = missing): binary 0/1 (1 = the positive level), multiclass the
        original numbers, or the text levels as strings, continuous the values.
    kinds : dict column -> "binary" | "multiclass" | "continuous"
        Decided by the one outcome rule of :mod:`hcl_explore.outcomes` (a few whole numbers, e.g.
        digits 0-9, are multiclass).
    positive : dict column -> the original label coded as 1 (binary columns), as shown
        (``"yes"``, ``"readmitted"``, ``"1"``)
    report : dict
        File info, the id column, dropped columns, per-column counts; after :meth:`align`, matching counts.
    codings : dict column -> :class:`~hcl_explore.outcomes.OutcomeCoding` (kind and labels in code order)
    """

    frame: pd.DataFrame
    kinds: dict[str, str]
    positive: dict[str, str]
    report: dict
    _keys: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    codings: dict = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return list(self.frame.columns)

    @property
    def labels(self) -> dict[str, list[str]]:
        """{column: original labels in code order} for binary (negative, positive) and multiclass columns."""
        return {c: cd.classes for c, cd in self.codings.items() if cd.kind != "continuous"}

    def _coded(self, data: MultimodalData) -> pd.DataFrame:
        dkeys, _ = _id_keys(pd.Series(np.asarray(data.ids)))
        idx = pd.Index(self._keys)
        pos = idx.get_indexer(dkeys)
        found = pos >= 0
        out = self.frame.iloc[np.where(found, pos, 0)].copy()
        out.index = pd.Index(np.asarray(data.ids), name="id")
        out.loc[~found, :] = np.nan
        unmatched = np.setdiff1d(np.arange(len(idx)), pos[found])
        self.report["matching"] = {
            "matched": int(found.sum()),
            "samples_without_outcome_row": int((~found).sum()),
            "outcome_ids_not_in_data": int(unmatched.size),
            "examples_not_in_data": [str(self.frame.index[i]) for i in unmatched[:5]],
            "labelled": {c: int(out[c].notna().sum()) for c in out.columns},
        }
        return out

    def align(self, data: MultimodalData, labels: bool = True) -> pd.DataFrame:
        """Outcomes in the order of ``data.ids`` (NaN where a sample has none); records matched and
        unmatched counts in ``report["matching"]``.

        ``labels=True`` (default): binary columns hold their original labels (``"wt"``/``"ppar"``,
        not 0/1), so tables and legends made from it name the levels as the file does;
        ``labels=False``: the codes of :attr:`frame`."""
        out = self._coded(data)
        if labels:
            for c in out.columns:
                cd = self.codings.get(c)
                if cd is not None and cd.kind == "binary":
                    out[c] = pd.Series(cd.decode(out[c].to_numpy(dtype=np.float64)), index=out.index, dtype=object)
        return out

    def y(self, column: str, data: MultimodalData):
        """One outcome aligned to ``data`` (NaN / missing where a sample has none).

        Continuous: a float array (n_samples,). Binary and multiclass: a pandas ``Categorical`` of
        the original labels whose categories are in code order (binary: negative, positive), so the
        loader's decision goes with it into :func:`~hcl_explore.predict.evaluate_prediction` (and
        through ``pd.Series(..., name=...)``). :meth:`codes` gives the codes as floats."""
        cd = self._coding(column)
        v = self._coded(data)[column]
        if cd.kind == "continuous":
            return v.to_numpy(dtype=np.float64)
        if cd.kind == "binary":
            return pd.Categorical.from_codes(np.where(v.isna(), -1, v.fillna(-1)).astype(int),
                                             categories=pd.Index(list(cd.labels), dtype=object))
        return cd.categorical(v.to_numpy(dtype=object))

    def codes(self, column: str, data: MultimodalData) -> np.ndarray:
        """One outcome aligned to ``data`` as float codes (n_samples,): 0/1 (binary), 0..K-1
        (multiclass, in the order of ``labels[column]``), the values (continuous); NaN where missing."""
        cd = self._coding(column)
        v = self._coded(data)[column]
        if cd.kind == "multiclass":
            return cd.encode(v.to_numpy(dtype=object))
        return v.to_numpy(dtype=np.float64)

    def _coding(self, column: str):
        if column not in self.frame.columns:
            raise LoadError(f"No outcome column {column!r}; have {self.columns}.")
        if column not in self.codings:  # an Outcomes built by hand: decide by the rule now
            from .outcomes import outcome_kind

            self.codings[column] = outcome_kind(self.frame[column], self.kinds.get(column, "auto"), name=column)
        return self.codings[column]


def load_outcomes(
    source: Source,
    id_column: str | None = None,
    *,
    columns: Sequence[str] | None = None,
    max_categories: int = 20,
    kinds: Mapping[str, str] | None = None,
    memory_limit: int | None = None,
) -> Outcomes:
    """Load an outcomes table: an id column and one or more outcome columns.

    Each column's kind and, for two-level columns, the positive level are decided by the one
    outcome rule of :mod:`hcl_explore.outcomes` (the same rule prediction and the app use): two
    distinct values -> ``binary`` (coded 0/1; 1 = the larger number, else a known event word such
    as 'yes', 'readmitted', 'case', else the level opposite a reference word or negation such as
    'no', 'control', 'wt', 'not readmitted', else the rarer level); text or a few whole numbers
    (at most ``max_categories`` levels, e.g. digits 0-9) -> ``multiclass``; other numbers ->
    ``continuous``; other columns (free text) are dropped and reported. ``kinds`` forces a
    column's kind (``{"visits": "continuous"}``); a kind its values cannot have is a
    :class:`LoadError` naming the file and column. Duplicate ids are an error.

    Missing values (blank, NA tokens) mean "no label". So do ``inf``/``-inf`` in a numeric column:
    they are set missing with a ``UserWarning`` and listed in ``report["converted"]`` and
    ``report["warnings"]`` (a column of nothing but infinities is dropped as empty).
    """
    from .outcomes import canonical_kind, outcome_kind

    lab = _source_label(source, "<outcomes DataFrame>")
    df, info = read_table(source, lab, memory_limit=memory_limit)
    idc = id_column or detect_id_column({lab: df})[lab]
    if idc not in df.columns:
        raise LoadError(f"{lab}: no id column {idc!r}; columns are {list(df.columns)[:10]}.")
    blank = df.isna().all(axis=1).to_numpy()
    df = df.loc[~blank].reset_index(drop=True)
    keys, display = _table_ids(df, idc, lab)
    miss = np.flatnonzero(pd.isna(keys))
    if miss.size:
        raise LoadError(f"{lab}: id column {idc!r} is blank in {miss.size} row(s) (first: {_row_ref(int(miss[0]))}).")
    ks = pd.Series(keys)
    if ks.duplicated().any():
        d = display[ks.duplicated(keep=False).to_numpy()]
        raise LoadError(f"{lab}: duplicate ids in column {idc!r}, e.g. {list(pd.unique(d))[:5]}.")
    cand = [c for c in df.columns if c != idc] if columns is None else list(columns)
    for c in cand:
        if c not in df.columns:
            raise LoadError(f"{lab}: no outcome column {c!r}; columns are {list(df.columns)[:10]}.")
    forced: dict[str, str] = {}
    for c, k in (kinds or {}).items():
        if c not in cand:
            raise LoadError(f"{lab}: kinds names column {c!r}, which is not an outcome column ({cand[:10]}).")
        try:
            forced[c] = canonical_kind(k)
        except ValueError as exc:
            raise LoadError(f"{lab}: column {c!r}: {exc}") from None
    out: dict[str, pd.Series] = {}
    kinds_out: dict[str, str] = {}
    positive: dict[str, str] = {}
    codings: dict = {}
    dropped: list[dict] = []
    converted: list[dict] = []
    warn: list[str] = []
    counts: dict[str, dict] = {}
    for c in cand:
        s = df[c]
        nn = int(s.notna().sum())
        if nn == 0:
            dropped.append({"column": c, "reason": "empty"})
            continue
        if pd.api.types.is_bool_dtype(s):
            v = pd.Series(s.to_numpy(dtype=object)).where(s.notna().to_numpy(), None)
            v = pd.Series([None if x is None else bool(x) for x in v], dtype=object)
        elif pd.api.types.is_numeric_dtype(s):
            v = pd.Series(s.to_numpy(dtype=np.float64, na_value=np.nan))
        else:
            parsed, _ = _clean_numeric_strings(s)
            v = parsed if parsed.notna().sum() >= 0.9 * nn else None
        if v is not None and v.dtype != object:
            # An infinite outcome is no label (it would make every mean, R^2 and MSE inf or NaN).
            inf = np.isinf(v.to_numpy())
            if inf.any():
                note = f"{int(inf.sum())} infinite value(s) set missing"
                v = v.mask(inf)
                if not v.notna().any():
                    dropped.append({"column": c, "reason": f"empty ({note})"})
                    continue
                converted.append({"column": c, "notes": [note]})
                warn.append(f"{lab}: column {c!r}: {note}.")
                warnings.warn(warn[-1], UserWarning, stacklevel=2)
        text = s.astype(object).where(s.notna(), None)
        text = pd.Series([None if x is None else str(x).strip() for x in text], dtype=object)
        values = v if v is not None else text
        nlev = len(values.dropna().unique())
        if nlev == 1:
            dropped.append({"column": c, "reason": f"constant ({values.dropna().iloc[0]})"})
            continue
        try:
            cd = outcome_kind(values, forced.get(c, "auto"), max_classes=max_categories, name=c)
        except ValueError as exc:
            if c in forced:
                raise LoadError(f"{lab}: column {c!r}: {exc}") from None
            dropped.append({"column": c, "reason": f"free text ({nlev} distinct values)"})
            continue
        codings[c] = cd
        kinds_out[c] = cd.kind
        if cd.kind == "binary":
            y = pd.Series(cd.encode(values))
            positive[c] = cd.positive_label
            out[c] = y
            counts[c] = {"labelled": int(y.notna().sum()), "positives": int(np.nansum(y)), "levels": sorted(cd.classes),
                         "positive": cd.positive_label}
        elif cd.kind == "continuous":
            out[c] = values.astype(np.float64)
            counts[c] = {"labelled": int(values.notna().sum()), "mean": float(values.mean()), "sd": float(values.std())}
        else:
            out[c] = values if v is None else v.astype(np.float64)
            codes = cd.encode(values)
            counts[c] = {"labelled": int(values.notna().sum()), "levels": cd.classes,
                         "counts": {lv: int(np.sum(codes == k)) for k, lv in enumerate(cd.classes)}}
    if not out:
        why = "; ".join(f"{d['column']!r}: {d['reason']}" for d in dropped) or "it has only the id column"
        raise LoadError(f"{lab}: no usable outcome column ({why}).")
    frame = pd.DataFrame(out)
    frame.index = pd.Index(display, name=idc)
    report = {**info.as_dict(), "id_column": idc, "rows": int(len(df)), "outcomes": counts, "dropped": dropped,
              "converted": converted, "warnings": warn}
    return Outcomes(frame, kinds_out, positive, report, _keys=keys, codings=codings)


# ---------------------------------------------------------------------------------------------
# bundled / manifest datasets
@dataclass
class Dataset:
    """A folder with a ``dataset.json`` manifest: modality files, an outcomes file, a truth file."""

    name: str
    description: str
    path: str
    data: MultimodalData
    outcomes: Outcomes | None
    truth: dict | None


def sample_data_dir() -> str:
    """The repository's ``sample_data/`` folder (present in a source checkout)."""
    return os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir, "sample_data"))


def list_datasets(root: str | None = None) -> dict[str, str]:
    """Bundled datasets: {folder name: path} of the folders under ``root`` holding a dataset.json."""
    root = root or sample_data_dir()
    if not os.path.isdir(root):
        return {}
    return {d: os.path.join(root, d) for d in sorted(os.listdir(root)) if os.path.isfile(os.path.join(root, d, "dataset.json"))}


def load_dataset(path: str, **kwargs: Any) -> Dataset:
    """Load a dataset folder (or the name of a bundled one, e.g. ``"clinical"``) described by its
    ``dataset.json``: ``{"name", "description", "id_column", "modalities": {name: file},
    "outcomes": file, "truth": file}``. Extra keyword arguments go to :func:`load_modalities`."""
    if not os.path.isdir(path):
        bundled = list_datasets()
        if path in bundled:
            path = bundled[path]
        else:
            raise LoadError(f"{path}: not a dataset folder (bundled datasets: {sorted(bundled)}).")
    man_path = os.path.join(path, "dataset.json")
    try:
        with open(man_path, encoding="utf-8") as fh:
            man = json.load(fh)
    except FileNotFoundError:
        raise LoadError(f"{path}: no dataset.json manifest in the folder.") from None
    except json.JSONDecodeError as exc:
        raise LoadError(f"{man_path}: not valid JSON ({exc}).") from None
    mods = man.get("modalities")
    if not isinstance(mods, dict) or not mods:
        raise LoadError(f"{man_path}: 'modalities' must map modality names to file names.")
    data = load_modalities({m: os.path.join(path, f) for m, f in mods.items()}, id_column=man.get("id_column"), **kwargs)
    outcomes = None
    if man.get("outcomes"):
        outcomes = load_outcomes(os.path.join(path, man["outcomes"]), id_column=man.get("id_column"))
        outcomes.align(data)
    truth = None
    if man.get("truth"):
        with open(os.path.join(path, man["truth"]), encoding="utf-8") as fh:
            truth = json.load(fh)
    return Dataset(man.get("name", os.path.basename(path)), man.get("description", ""), path, data, outcomes, truth)


def truth_ranks(truth: Mapping[str, Any]) -> dict[tuple[str, ...], int]:
    """The true ranks of a dataset's truth file as ``{node tuple: rank}`` (present nodes only)."""
    from .lattice import parse_node_label

    return {parse_node_label(k): int(v) for k, v in truth["ranks"].items() if int(v) > 0}
