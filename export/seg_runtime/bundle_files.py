"""The files a deploy bundle reads: confined to its folder, hashed into ``model.json``, checked at load.

A hash inside the bundle proves that its files agree with its ``model.json`` (a swapped
``model.onnx`` with the same shapes is caught), not where the bundle came from: that is what the
bundle's own digest (the SHA-256 of ``model.json``, which holds the files' hashes) and a deployment
pinning it (``--expect-sha256``) are for.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .hashing import sha256_file
from .onnx_scan import OnnxFormatError, scan_onnx
from .paths import confined


def bundle_digest(folder: Path, json_name: str = "model.json") -> str:
    """SHA-256 of the bundle's ``model.json`` as stored (it holds the hashes of every other file)."""
    return hashlib.sha256((folder / json_name).read_bytes()).hexdigest()


def _external(folder: Path, model_file: str) -> list[str]:
    """The external data locations of the model (the model file is confined already)."""
    path = folder / model_file
    if path.suffix.lower() != ".onnx":
        return []
    try:
        return scan_onnx(path, check_values=False).external_files
    except OnnxFormatError:
        return []  # onnxruntime says what is wrong with the file when it loads it


def file_hashes(folder: Path, model_file: str) -> dict[str, str]:
    """SHA-256 of the model file and of every external data file it names (for ``model.json``)."""
    names = [model_file, *(n for n in _external(folder, model_file) if confined(folder, n))]
    return {name: sha256_file(folder / name) for name in dict.fromkeys(names)}


def file_problems(folder: Path, model_file: str, files: dict[str, str]) -> list[tuple[str, str]]:
    """``(key, problem)`` for every file of the bundle that cannot be trusted (none: an empty list).

    Checks: the model file and every listed file lie inside ``folder``; when ``files`` lists hashes
    (schema 2), each file exists and has its hash, the model file is listed, and every external data
    file the model names is listed; the model's floating weights are finite.
    """
    problems: list[tuple[str, str]] = []
    for key, name in [("model_file", model_file), *(("files", n) for n in files)]:
        if confined(folder, name) is None:
            problems.append((key, f"{name!r} is not a file inside the bundle folder"))
    if problems or not (folder / model_file).is_file():
        return problems
    external = _external(folder, model_file)
    outside = [n for n in external if confined(folder, n) is None]
    if outside:
        return [("model_file", f"{model_file} reads external data outside the bundle folder: {outside}")]
    if files:
        problems += _hash_problems(folder, model_file, external, files)
    return problems or _weight_problems(folder, model_file)


def _hash_problems(folder: Path, model_file: str, external: list[str], files: dict[str, str]) -> list[tuple[str, str]]:
    problems = [("files", f"{name} is not listed with its SHA-256") for name in [model_file, *external]
                if name not in files]
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            problems.append(("files", f"{name} is missing"))
        elif sha256_file(path) != expected.lower():
            problems.append(("files", f"{name} has another SHA-256 than model.json records (the file was "
                             "replaced or corrupted after export)"))
    return problems


def _weight_problems(folder: Path, model_file: str) -> list[tuple[str, str]]:
    path = folder / model_file
    if path.suffix.lower() != ".onnx":
        return []
    try:
        bad = scan_onnx(path).non_finite
    except OnnxFormatError:
        return []
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        return [("model_file", f"{model_file} holds NaN or Inf weights ({shown}): it would predict nonsense")]
    return []
