"""MetaImage (``.mha`` with attached data, ``.mhd`` + data file), ITK's LPS+ convention.

``TransformMatrix`` lists the direction cosines of each voxel axis in turn (ITK reads
element ``i * N + j`` as component j of axis i), so the direction matrix with axes as
columns is its transpose when read row-major.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from ..geometry import LPS_SIGNS, CaseError, Geometry, affine_from_axes, make_geometry
from ..limits import check_claimed_size, check_memory
from ..paths import confined

_TYPES = {
    "MET_CHAR": np.int8,
    "MET_UCHAR": np.uint8,
    "MET_SHORT": np.int16,
    "MET_USHORT": np.uint16,
    "MET_INT": np.int32,
    "MET_UINT": np.uint32,
    "MET_LONG": np.int32,
    "MET_ULONG": np.uint32,
    "MET_LONG_LONG": np.int64,
    "MET_ULONG_LONG": np.uint64,
    "MET_FLOAT": np.float32,
    "MET_DOUBLE": np.float64,
}
_ALIASES = {
    "position": "offset",
    "origin": "offset",
    "rotation": "transformmatrix",
    "orientation": "transformmatrix",
}


def read_metaimage(path: Path, max_bytes: int | None = None) -> tuple[np.ndarray, Geometry]:
    """Read a MetaImage.

    Args:
        path: The ``.mha`` or ``.mhd`` file.
        max_bytes: Memory limit for the decoded image (checked on the header, before decoding).

    Returns:
        The array (Shape: [*S] or [*S, C]) and its RAS+ geometry.

    Raises:
        CaseError: Not a MetaImage, unsupported fields, corrupt or truncated data.
    """
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise CaseError(f"{path}: cannot read file ({exc})") from exc
    fields, offset = _parse_header(blob, path)
    try:
        ndim = int(fields["ndims"])
        dims = [int(v) for v in fields["dimsize"].split()][:ndim]
        dtype = np.dtype(_TYPES[fields["elementtype"].upper()])
    except KeyError as exc:
        raise CaseError(f"{path}: missing or unsupported MetaImage field {exc}") from exc
    channels = int(fields.get("elementnumberofchannels", "1"))
    if ndim not in (2, 3) or len(dims) != ndim:
        raise CaseError(f"{path}: unsupported MetaImage dimensionality NDims={ndim}, DimSize={dims}")
    count = channels * int(np.prod(dims))
    check_memory(path, "the image", [*dims, channels], count * (dtype.itemsize + 4), max_bytes)
    data = _load_data(path, fields, blob, offset, dtype, count)
    # Channels are interleaved per voxel, i.e. the fastest axis.
    array = data.reshape(([channels] if channels > 1 else []) + dims, order="F")
    if channels > 1:
        array = np.moveaxis(array, 0, -1)
    return array, make_geometry(_affine(fields, ndim), tuple(dims), "mha")


def _parse_header(blob: bytes, path: Path) -> tuple[dict[str, str], int]:
    """Read ``Key = Value`` lines up to and including ``ElementDataFile``."""
    fields: dict[str, str] = {}
    position = 0
    while position < len(blob):
        end = blob.find(b"\n", position)
        end = len(blob) if end < 0 else end
        line = blob[position:end].decode("latin-1").strip()
        position = end + 1
        key, sep, value = line.partition("=")
        if not sep:
            if line:
                break
            continue
        key = key.strip().lower()
        fields[_ALIASES.get(key, key)] = value.strip()
        if key == "elementdatafile":
            return fields, position
    raise CaseError(f"{path}: not a MetaImage file (no 'ElementDataFile' header line)")


def _load_data(
    path: Path, fields: dict[str, str], blob: bytes, offset: int, dtype: np.dtype, count: int
) -> np.ndarray:
    """Decode the voxel payload (attached after the header, or in ElementDataFile)."""
    data_file = fields["elementdatafile"]
    if data_file.upper() != "LOCAL":
        if data_file.upper().startswith("LIST") or "%" in data_file:
            raise CaseError(f"{path}: multi-file MetaImage data ('{data_file}') is not supported")
        source = confined(path.parent, data_file)
        if source is None:
            raise CaseError(f"{path}: MetaImage data file {data_file!r} is not in the header's folder (refused)")
        try:
            blob, offset = source.read_bytes(), 0
        except OSError as exc:
            raise CaseError(f"{path}: cannot read MetaImage data file {source} ({exc})") from exc
        offset = int(fields.get("headersize", "0"))
    nbytes = count * dtype.itemsize
    payload = blob[offset:] if offset >= 0 else blob[-nbytes:]
    compressed = fields.get("compresseddata", "false").lower() == "true"
    check_claimed_size(path, [count], dtype.itemsize, len(payload), compressed=compressed)
    if compressed:
        payload = _inflate(path, payload)
    if len(payload) < nbytes:
        raise CaseError(f"{path}: truncated: expected {nbytes} bytes of voxel data, found {len(payload)}")
    msb = fields.get("binarydatabyteordermsb", fields.get("elementbyteordermsb", "false")).lower() == "true"
    return np.frombuffer(payload[:nbytes], dtype=dtype.newbyteorder(">" if msb else "<")).astype(dtype)


def _inflate(path: Path, payload: bytes) -> bytes:
    """Decompress zlib (or gzip) data, rejecting a stream that ends early."""
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)
    try:
        data = inflater.decompress(payload)
    except zlib.error as exc:
        raise CaseError(f"{path}: corrupt compressed data ({exc})") from exc
    if not inflater.eof:
        raise CaseError(f"{path}: truncated: compressed data ends before the end of the stream")
    return data


def _affine(fields: dict[str, str], ndim: int) -> np.ndarray:
    """RAS+ affine from ElementSpacing, Offset and TransformMatrix (all LPS+)."""
    spacing = np.array(fields.get("elementspacing", fields.get("elementsize", "1 " * ndim)).split(), float)
    origin = np.array(fields.get("offset", "0 " * ndim).split(), dtype=np.float64)
    matrix_text = fields.get("transformmatrix")
    directions = np.eye(ndim)
    if matrix_text:
        directions = np.array(matrix_text.split(), dtype=np.float64).reshape(ndim, ndim).T
    return affine_from_axes(directions * spacing[None, :ndim], origin[:ndim], LPS_SIGNS)
