"""What a command wrote: a folder's file set and a small, comparable summary of each file.

The readers here are independent of ``seg`` and ``seg_runtime`` (nibabel, Pillow, a minimal NRRD
parser), so a regression in the product's own readers cannot hide one in its writers.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import yaml
from PIL import Image

from .golden import Normaliser

IGNORED_DIRS = frozenset({"tb", ".cache", "__pycache__"})
INPUT_DIRS = frozenset({"data", "data2d"})  # datasets a command wrote as its input (seg demo): listed only
CONTENT_IGNORED = frozenset({"train.log", "curves.png", "model.onnx"})  # existence only
STATE_DICTS = frozenset({"state_dict", "model_state"})
KEYS_ONLY = frozenset({"optimizer", "scheduler", "rng"})  # checkpoint state: which parts, not values
# LPS+ (NRRD's left-posterior-superior) to RAS+ (nibabel's world).
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def list_files(folder: Path, norm: Normaliser) -> list[str]:
    """Relative paths of the files and links under ``folder`` (hidden names and volatile folders left
    out); a link is listed as ``name -> target`` with the target normalised."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        for name in list(dirnames):
            if (here / name).is_symlink():
                filenames.append(name)
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_DIRS and not d.startswith(".")
                             and not (here / d).is_symlink())
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = here / name
            rel = path.relative_to(folder).as_posix()
            out.append(f"{rel} -> {norm.text(os.readlink(path))}" if path.is_symlink() else rel)
    return sorted(out)


def snapshot(folder: Path, norm: Normaliser, labels: bool = True) -> dict[str, Any]:
    """``{"files": [...], "content": {relative path: summary}}`` of everything under ``folder``."""
    files = list_files(folder, norm)
    content = {}
    for rel in files:
        if " -> " in rel or rel.split("/")[0] in INPUT_DIRS:
            continue
        summary = summarise(folder / rel, norm, labels=labels)
        if summary is not None:
            content[rel] = summary
    return {"files": files, "content": content}


def summarise(path: Path, norm: Normaliser, labels: bool = True) -> Any:
    """A comparable summary of one written file, or None when only its existence matters."""
    name = path.name
    if name in CONTENT_IGNORED:
        return None
    if name.endswith(".json"):
        return norm.value(json.loads(path.read_text()))
    if name.endswith(".jsonl"):
        return [norm.value(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    if name.endswith(".csv"):
        return read_csv(path, norm)
    if name.endswith((".yaml", ".yml")):
        text = path.read_text()
        comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
        return {"yaml": norm.value(yaml.safe_load(text)), "comments": norm.lines(comments)}
    if name.endswith((".md", ".txt")):
        return norm.lines(path.read_text())
    if name.endswith(".pt"):
        return checkpoint_summary(path, norm)
    if name.endswith("_probabilities.nii.gz"):
        return probabilities_summary(path)
    if path.parent.name == "preview" and name.endswith(".png"):
        with Image.open(path) as image:
            return {"kind": "image", "size": list(image.size), "mode": image.mode}
    if labels and name.endswith((".nii.gz", ".nrrd", ".png")):
        return label_summary(read_labels(path)[0])
    return None


def read_csv(path: Path, norm: Normaliser) -> dict[str, Any]:
    """The header (column order) and the rows by column name, numbers parsed (ints stay ints)."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    header = rows[0] if rows else []
    return {"header": header, "rows": [{k: _cell(c, norm) for k, c in zip(header, row)} for row in rows[1:]]}


def _cell(text: str, norm: Normaliser) -> Any:
    for kind in (int, float):
        try:
            return norm.value(kind(text))
        except ValueError:
            pass
    return norm.text(text)


def checkpoint_summary(path: Path, norm: Normaliser) -> dict[str, Any]:
    """A checkpoint's parts: parameter names and shapes, training state parts by name, the rest by value."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    out: dict[str, Any] = {}
    for key, value in ckpt.items():
        if key in STATE_DICTS:
            shapes = {name: list(tensor.shape) for name, tensor in value.items()}
            same = shapes == out.get("state_dict")  # the training model's weights beside the evaluated ones
            out[key] = "<names and shapes as state_dict>" if same else shapes
        elif key in KEYS_ONLY and isinstance(value, dict):
            out[key] = sorted(str(k) for k in value)
        else:
            out[key] = norm.value(value, key)
    return out


def label_summary(array: np.ndarray) -> dict[str, Any]:
    """Shape, dtype and voxel count per label value."""
    values, counts = np.unique(np.asarray(array), return_counts=True)
    return {"kind": "labels", "shape": list(array.shape), "dtype": str(array.dtype),
            "voxels": int(array.size), "counts": {str(int(v)): int(c) for v, c in zip(values, counts)}}


def probabilities_summary(path: Path) -> dict[str, Any]:
    """A probability map's shape and stored type, and whether its classes sum to one per voxel."""
    image = nib.load(str(path))
    data = np.asarray(image.dataobj, dtype=np.float32)
    total = data.sum(axis=-1)
    return {"kind": "probabilities", "shape": list(image.shape), "stored_dtype": str(image.get_data_dtype()),
            "sums_to_one": bool(np.abs(total - 1.0).max() <= 0.02)}


def read_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A label map or image as stored and its RAS+ voxel-to-world affine (identity for PNG)."""
    name = path.name
    if name.endswith((".nii.gz", ".nii")):
        image = nib.load(str(path))
        return np.asarray(image.dataobj), image.affine
    if name.endswith(".nrrd"):
        return read_nrrd(path)
    with Image.open(path) as image:
        return np.asarray(image), np.eye(4)


def read_nrrd(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A minimal attached-header NRRD reader (raw or gzip, 3D, LPS or RAS space)."""
    raw = path.read_bytes()
    head, _, body = raw.partition(b"\n\n")
    fields = {}
    for line in head.decode("ascii").splitlines()[1:]:
        if line.startswith("#") or ": " not in line:
            continue
        key, value = line.split(": ", 1)
        fields[key.strip()] = value.strip()
    sizes = [int(s) for s in fields["sizes"].split()]
    dtype = {"uchar": np.uint8, "unsigned char": np.uint8, "short": np.int16, "ushort": np.uint16,
             "int": np.int32, "float": np.float32}[fields["type"]]
    data = gzip.decompress(body) if fields.get("encoding") == "gzip" else body
    array = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(sizes, order="F")
    vectors = re.findall(r"\(([^)]*)\)", fields["space directions"])
    directions = [[float(x) for x in vec.split(",")] for vec in vectors]
    origin = [float(x) for x in re.findall(r"\(([^)]*)\)", fields["space origin"])[0].split(",")]
    affine = np.eye(4)
    affine[:3, :3] = np.array(directions).T
    affine[:3, 3] = origin
    if fields.get("space", "").lower() in ("left-posterior-superior", "lps"):
        affine = _LPS @ affine
    return array, affine
