"""NRRD (``.nrrd`` attached, ``.nhdr`` detached header) with raw, gzip and text encodings.

Data are stored fastest axis first (Fortran order). ``space directions`` give the world
step of each axis (``none`` for a non-spatial axis such as vector components, which becomes
the channel axis); the world frame comes from ``space``.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np

from ..geometry import CaseError, Geometry, affine_from_axes, make_geometry
from ..limits import check_claimed_size, check_memory
from ..paths import confined

_TYPES = {
    np.dtype(np.int8): ("signed char", "int8", "int8_t"),
    np.dtype(np.uint8): ("uchar", "unsigned char", "uint8", "uint8_t"),
    np.dtype(np.int16): ("short", "short int", "signed short", "signed short int", "int16", "int16_t"),
    np.dtype(np.uint16): ("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"),
    np.dtype(np.int32): ("int", "signed int", "int32", "int32_t"),
    np.dtype(np.uint32): ("uint", "unsigned int", "uint32", "uint32_t"),
    np.dtype(np.int64): ("longlong", "long long", "long long int", "signed long long", "int64", "int64_t"),
    np.dtype(np.uint64): ("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"),
    np.dtype(np.float32): ("float",),
    np.dtype(np.float64): ("double",),
}
_TYPE_BY_NAME = {name: dtype for dtype, names in _TYPES.items() for name in names}
# Sign of each world axis in RAS+ for the anatomical NRRD spaces.
_SPACE_SIGNS = {
    "right-anterior-superior": (1.0, 1.0, 1.0),
    "ras": (1.0, 1.0, 1.0),
    "left-anterior-superior": (-1.0, 1.0, 1.0),
    "las": (-1.0, 1.0, 1.0),
    "left-posterior-superior": (-1.0, -1.0, 1.0),
    "lps": (-1.0, -1.0, 1.0),
}
# Kinds that mark an axis as not spatial when there are no space directions.
_DOMAIN_KINDS = {"domain", "space", "time", "???", "none"}


def read_nrrd(path: Path, max_bytes: int | None = None) -> tuple[np.ndarray, Geometry]:
    """Read a NRRD image.

    Args:
        path: The ``.nrrd`` or ``.nhdr`` file.
        max_bytes: Memory limit for the decoded image (checked on the header, before decoding).

    Returns:
        The array (Shape: [*S] or [*S, C]) and its RAS+ geometry.

    Raises:
        CaseError: Not a NRRD file, unsupported field values, corrupt or truncated data, a
            header claiming more voxels than the file holds or the memory limit allows.
    """
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise CaseError(f"{path}: cannot read file ({exc})") from exc
    fields, data_offset = _parse_header(blob, path)
    try:
        sizes = [int(v) for v in fields["sizes"].split()]
        dtype = _TYPE_BY_NAME[fields["type"].strip().lower()]
    except KeyError as exc:
        raise CaseError(f"{path}: missing or unsupported NRRD field {exc}") from exc
    except ValueError as exc:
        raise CaseError(f"{path}: bad NRRD 'sizes' field ({exc})") from exc
    # As stored, plus the float32 copy the case is assembled into.
    nbytes = int(np.prod(sizes, dtype=np.float64)) * (dtype.itemsize + 4)
    check_memory(path, "the image", sizes, nbytes, max_bytes)
    data = _load_data(path, fields, blob, data_offset, dtype, int(np.prod(sizes)))
    array = data.reshape(sizes, order="F")
    return _with_geometry(path, fields, array)


def _parse_header(blob: bytes, path: Path) -> tuple[dict[str, str], int]:
    """Split ``blob`` into header fields (lower-case keys) and the offset of attached data."""
    if not blob.startswith(b"NRRD000"):
        raise CaseError(f"{path}: not a NRRD file (missing 'NRRD000X' magic)")
    end = blob.find(b"\n\n")
    header = blob if end < 0 else blob[:end]
    fields: dict[str, str] = {}
    for line in header.decode("latin-1").splitlines()[1:]:
        line = line.rstrip("\r")
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(": ")
        # "key:=value" lines are free-form key/value pairs, not fields.
        if sep and ":=" not in key:
            fields[key.strip().lower()] = value.strip()
    return fields, (len(blob) if end < 0 else end + 2)


def _load_data(
    path: Path, fields: dict[str, str], blob: bytes, offset: int, dtype: np.dtype, count: int
) -> np.ndarray:
    """Decode the voxel payload (attached or in the detached data file)."""
    data_file = fields.get("data file") or fields.get("datafile")
    if data_file:
        if data_file.split()[0].upper() == "LIST" or len(data_file.split()) > 1:
            raise CaseError(f"{path}: multi-file NRRD data ('{data_file}') is not supported")
        source = confined(path.parent, data_file)
        if source is None:
            raise CaseError(f"{path}: NRRD data file {data_file!r} is not in the header's folder (refused)")
        try:
            blob, offset = source.read_bytes(), 0
        except OSError as exc:
            raise CaseError(f"{path}: cannot read NRRD data file {source} ({exc})") from exc
    for _ in range(int(fields.get("line skip", fields.get("lineskip", "0")))):
        offset = blob.index(b"\n", offset) + 1
    encoding = fields.get("encoding", "raw").lower()
    byte_skip = int(fields.get("byte skip", fields.get("byteskip", "0")))
    nbytes = count * dtype.itemsize
    payload = blob[offset:]
    if encoding in {"gzip", "gz", "raw"}:
        stored = len(payload) - (byte_skip if byte_skip > 0 and encoding == "raw" else 0)
        check_claimed_size(path, [count], dtype.itemsize, stored, compressed=encoding != "raw")
    if encoding in {"gzip", "gz"}:
        try:
            payload = gzip.decompress(payload)
        except (OSError, EOFError, zlib.error) as exc:
            raise CaseError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    elif encoding in {"text", "txt", "ascii"}:
        values = np.array(payload.split(), dtype=np.float64)
        if values.size < count:
            raise CaseError(f"{path}: truncated: expected {count} values, found {values.size}")
        return values[:count].astype(dtype)
    elif encoding != "raw":
        raise CaseError(f"{path}: unsupported NRRD encoding '{encoding}' (raw, gzip, text are)")
    payload = payload[-nbytes:] if byte_skip == -1 else payload[byte_skip:]
    if len(payload) < nbytes:
        raise CaseError(f"{path}: truncated: expected {nbytes} bytes of voxel data, found {len(payload)}")
    endian = "<" if fields.get("endian", "little").lower() == "little" else ">"
    return np.frombuffer(payload[:nbytes], dtype=dtype.newbyteorder(endian)).astype(dtype)


def _vector(text: str) -> np.ndarray:
    """Parse ``(a,b,c)`` into a float vector."""
    return np.array([float(v) for v in text.strip().strip("()").split(",")], dtype=np.float64)


def _with_geometry(path: Path, fields: dict[str, str], array: np.ndarray) -> tuple[np.ndarray, Geometry]:
    """Move a non-spatial axis last and build the affine from the space fields."""
    ndim = array.ndim
    directions = re.findall(r"\([^)]*\)|none", fields.get("space directions", ""))
    if directions and len(directions) != ndim:
        raise CaseError(f"{path}: 'space directions' has {len(directions)} entries for {ndim} axes")
    if directions:
        spatial = [i for i, d in enumerate(directions) if d != "none"]
    else:
        kinds = fields.get("kinds", "").split()
        spatial = [i for i in range(ndim) if not kinds or kinds[i].lower() in _DOMAIN_KINDS]
    others = [i for i in range(ndim) if i not in spatial]
    if len(others) > 1 or len(spatial) not in (2, 3):
        raise CaseError(f"{path}: unsupported NRRD layout ({len(spatial)} spatial axes, {len(others)} other)")
    array = np.transpose(array, spatial + others)
    if directions:
        axes = np.stack([_vector(directions[i]) for i in spatial], axis=1)
        origin_text = fields.get("space origin")
        origin = _vector(origin_text) if origin_text else np.zeros(axes.shape[0])
    else:
        spacings = fields.get("spacings", "").split()
        steps = [float(spacings[i]) if spacings and spacings[i].lower() != "nan" else 1.0 for i in spatial]
        axes, origin = np.diag(steps), np.zeros(len(spatial))
    space = fields.get("space", "").lower()
    signs = _SPACE_SIGNS.get(space, (1.0, 1.0, 1.0))
    affine = affine_from_axes(axes, origin, signs)
    return array, make_geometry(affine, array.shape[: len(spatial)], "nrrd")
