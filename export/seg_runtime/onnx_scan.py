"""What an ONNX file holds, read from its protobuf wire format without the ``onnx`` package.

Two questions a bundle must answer before it is trusted (:mod:`seg_runtime.bundle_trust`): which
files does the graph read its external data from (each must lie inside the bundle folder and be
hashed in ``model.json``), and are its weights finite (a NaN weight predicts all-background label
maps with exit 0). The graph is walked recursively: initializers, sparse initializers, tensors in
node attributes (``Constant``) and subgraphs (``If``/``Loop`` bodies, functions).

Wire format: every field is a varint key ``(number << 3) | type`` followed by a varint (type 0),
8 bytes (1), a length-delimited payload (2) or 4 bytes (5).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Field numbers of onnx.proto (stable since ONNX 1.0).
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE = 1, 5, 15
_FUNCTION_NODE = 7
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS = 5, 6, 10, 11
_SPARSE_VALUES = 1
_TENSOR_DIMS, _TENSOR_TYPE, _TENSOR_FLOATS, _TENSOR_NAME, _TENSOR_RAW = 1, 2, 4, 8, 9
_TENSOR_DOUBLES, _TENSOR_EXTERNAL, _TENSOR_LOCATION = 10, 13, 14
# TensorProto.DataType -> numpy dtype of its little-endian raw bytes, for the floating types.
_FLOAT_TYPES = {1: np.dtype("<f4"), 10: np.dtype("<f2"), 11: np.dtype("<f8")}
_BFLOAT16 = 16


class OnnxFormatError(ValueError):
    """The bytes are not a readable ONNX model."""


@dataclass
class TensorInfo:
    """One stored tensor: its name, its element type, and where its data is."""

    name: str = ""
    data_type: int = 0
    raw: memoryview | None = None
    floats: memoryview | None = None
    doubles: memoryview | None = None
    external: dict[str, str] = field(default_factory=dict)


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise OnnxFormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise OnnxFormatError("varint too long")


def fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """``(field number, wire type, value)`` of one message; length-delimited values as memoryviews."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, kind = key >> 3, key & 7
        if kind == 0:
            value, pos = _varint(buf, pos)
        elif kind in (1, 5):
            width = 8 if kind == 1 else 4
            value, pos = int.from_bytes(buf[pos : pos + width], "little"), pos + width
        elif kind == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise OnnxFormatError("a field runs past the end of its message")
            value, pos = buf[pos : pos + length], pos + length
        else:
            raise OnnxFormatError(f"unsupported wire type {kind}")
        yield number, kind, value


def _tensor(buf: memoryview) -> TensorInfo:
    info = TensorInfo()
    for number, kind, value in fields(buf):
        if number == _TENSOR_TYPE and kind == 0:
            info.data_type = int(value)
        elif number == _TENSOR_NAME and kind == 2:
            info.name = bytes(value).decode("utf-8", "replace")
        elif number == _TENSOR_RAW and kind == 2:
            info.raw = value
        elif number == _TENSOR_FLOATS and kind == 2:
            info.floats = value
        elif number == _TENSOR_DOUBLES and kind == 2:
            info.doubles = value
        elif number == _TENSOR_EXTERNAL and kind == 2:
            entry = {n: bytes(v).decode("utf-8", "replace") for n, k, v in fields(value) if k == 2}
            info.external[entry.get(1, "")] = entry.get(2, "")
    return info


def _graph_tensors(buf: memoryview) -> Iterator[TensorInfo]:
    for number, kind, value in fields(buf):
        if kind != 2:
            continue
        if number == _GRAPH_INITIALIZER:
            yield _tensor(value)
        elif number == _GRAPH_SPARSE:
            yield from (_tensor(v) for n, k, v in fields(value) if n == _SPARSE_VALUES and k == 2)
        elif number == _GRAPH_NODE:
            yield from _node_tensors(value)


def _node_tensors(buf: memoryview) -> Iterator[TensorInfo]:
    for number, kind, attribute in fields(buf):
        if number != _NODE_ATTRIBUTE or kind != 2:
            continue
        for inner, inner_kind, value in fields(attribute):
            if inner_kind != 2:
                continue
            if inner in (_ATTR_T, _ATTR_TENSORS):
                yield _tensor(value)
            elif inner in (_ATTR_G, _ATTR_GRAPHS):
                yield from _graph_tensors(value)


def model_tensors(buf: memoryview) -> Iterator[TensorInfo]:
    """Every stored tensor of a ModelProto's graph and functions.

    Raises:
        OnnxFormatError: the bytes are not a well-formed protobuf message, or hold no graph.
    """
    graphs = 0
    for number, kind, value in fields(buf):
        if number == _MODEL_GRAPH and kind == 2:
            graphs += 1
            yield from _graph_tensors(value)
        elif number == _MODEL_FUNCTIONS and kind == 2:
            for inner, inner_kind, node in fields(value):
                if inner == _FUNCTION_NODE and inner_kind == 2:
                    yield from _node_tensors(node)
    if not graphs:
        raise OnnxFormatError("no graph in the model")


def _values(tensor: TensorInfo, folder: Path) -> np.ndarray | None:
    """The tensor's floating values (None for integer and string tensors)."""
    if tensor.data_type == _BFLOAT16:
        source = _external_bytes(tensor, folder) if tensor.external else tensor.raw
        if source is None:
            return None
        return (np.frombuffer(source, "<u2").astype(np.uint32) << 16).view(np.float32)
    dtype = _FLOAT_TYPES.get(tensor.data_type)
    if dtype is None:
        return None
    if tensor.external:
        return np.frombuffer(_external_bytes(tensor, folder), dtype)
    if tensor.raw is not None:
        return np.frombuffer(tensor.raw, dtype)
    if tensor.floats is not None:  # packed repeated float (float16 values are stored widened)
        return np.frombuffer(tensor.floats, "<f4")
    if tensor.doubles is not None:
        return np.frombuffer(tensor.doubles, "<f8")
    return None


def _external_bytes(tensor: TensorInfo, folder: Path) -> bytes:
    offset = int(tensor.external.get("offset", "0") or 0)
    length = tensor.external.get("length")
    with open(folder / tensor.external["location"], "rb") as handle:
        handle.seek(offset)
        return handle.read(int(length) if length else -1)


@dataclass
class OnnxContents:
    """What :func:`scan_onnx` found."""

    external_files: list[str]
    tensors: int
    non_finite: list[str]  # names of floating tensors holding NaN or Inf


def scan_onnx(path: str | os.PathLike[str], check_values: bool = True) -> OnnxContents:
    """The external data files an ONNX model reads, and its floating tensors that are not finite.

    External data is looked up relative to the model's folder (as onnxruntime does); call this only
    after confining those locations (:func:`external_locations` first) when the file is untrusted.

    Raises:
        OnnxFormatError: not a readable ONNX model.
        OSError: the file (or an external data file) cannot be read.
    """
    path = Path(path)
    view = memoryview(path.read_bytes())  # < 2 GB: larger weights live in external data files
    tensors = list(model_tensors(view))
    external = sorted({t.external.get("location", "") for t in tensors if t.external})
    bad = []
    if check_values:
        for tensor in tensors:
            values = _values(tensor, path.parent)
            if values is not None and values.size and not np.isfinite(values).all():
                bad.append(tensor.name or "(unnamed)")
    return OnnxContents(external, len(tensors), bad)


def external_locations(path: str | os.PathLike[str]) -> list[str]:
    """The external data locations an ONNX model names, read without touching them."""
    return scan_onnx(path, check_values=False).external_files
