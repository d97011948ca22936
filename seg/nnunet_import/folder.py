"""An nnU-Net v2 result folder, read and checked before anything is built or written.

The folder is a trainer folder ``nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIGURATION``:
``dataset.json`` and ``plans.json`` (copied there by nnU-Net's trainer), ``fold_N/`` (and
``fold_all/``) holding ``checkpoint_final.pth`` / ``checkpoint_best.pth``, and sometimes nnU-Net's
chosen post-processing (``postprocessing.json``, here or in ``crossval_results_folds_*``; the
pickled ``postprocessing.pkl`` beside it is never read). Every problem is one
:class:`NnunetImportError` naming the file.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seg.errors import SegError
from seg_runtime.errors import DataError
from seg_runtime.naming import read_dataset_json, read_json_object

log = logging.getLogger(__name__)

CHECKPOINTS = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth"}
_FOLD = re.compile(r"^fold_(\d+|all)$")


class NnunetImportError(SegError, ValueError):
    """A result folder that cannot be imported; the message names the file and the problem."""


@dataclass
class ResultFolder:
    """What an import needs from a result folder, checked.

    Attributes:
        root: The trainer folder.
        dataset: ``dataset.json``.
        plans: ``plans.json``.
        configuration_name: The configuration the folder name ends with (e.g. ``3d_fullres``).
        configuration: That configuration, inheritance resolved.
        checkpoints: ``(fold, path)`` per fold to import (a fold is an int or ``"all"``).
        postprocessing: nnU-Net's ``postprocessing.json``, or None.
    """

    root: Path
    dataset: dict[str, Any]
    plans: dict[str, Any]
    configuration_name: str
    configuration: dict[str, Any]
    checkpoints: list[tuple[int | str, Path]] = field(default_factory=list)
    postprocessing: dict[str, Any] | None = None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path`` (NnunetImportError naming it otherwise)."""
    if not path.is_file():
        raise NnunetImportError(f"{path}: missing (an nnU-Net result folder holds dataset.json, plans.json "
                                "and fold_N/checkpoint_final.pth)")
    try:
        return read_json_object(path)
    except DataError as exc:
        raise NnunetImportError(str(exc)) from None


def resolve_configuration(plans: dict[str, Any], name: str, where: Path) -> dict[str, Any]:
    """A configuration of ``plans.json`` with ``inherits_from`` resolved (cycles refused)."""
    configurations = plans.get("configurations")
    if not isinstance(configurations, dict):
        raise NnunetImportError(f"{where}: no 'configurations' object")
    chain: list[str] = []
    merged: dict[str, Any] = {}
    while name is not None:
        if name in chain or name not in configurations or not isinstance(configurations[name], dict):
            problem = "circular inheritance" if name in chain else "no such configuration"
            raise NnunetImportError(f"{where}: configuration {name!r}: {problem} "
                                    f"(configurations: {', '.join(configurations)})")
        chain.append(name)
        merged = {**configurations[name], **merged}
        name = configurations[name].get("inherits_from")
    merged.pop("inherits_from", None)
    return merged


def _available_folds(root: Path) -> dict[str, Path]:
    return {m.group(1): p for p in sorted(root.iterdir()) if p.is_dir() and (m := _FOLD.match(p.name))}


def _chosen_folds(root: Path, folds: list[str] | None, checkpoint: str) -> list[tuple[int | str, Path]]:
    """``(fold, checkpoint path)`` for the folds asked for, by default every ``fold_N`` present."""
    present = _available_folds(root)
    wanted = [f for f in present if f != "all"] if not folds else list(dict.fromkeys(folds))
    if not wanted:
        raise NnunetImportError(f"{root}: no fold_N folder (folds present: "
                                f"{', '.join(present) or 'none'}; 'all' is nnU-Net's separate fold_all model)")
    pairs: list[tuple[int | str, Path]] = []
    for fold in wanted:
        if fold not in present:
            raise NnunetImportError(f"{root / f'fold_{fold}'}: missing (folds present: {', '.join(present) or 'none'})")
        path = present[fold] / CHECKPOINTS[checkpoint]
        if not path.is_file():
            raise NnunetImportError(f"{path}: missing (fold {fold} has no {checkpoint} checkpoint)")
        pairs.append((fold if fold == "all" else int(fold), path))
    return pairs


def _postprocessing(root: Path, folds: list[int | str]) -> dict[str, Any] | None:
    """nnU-Net's ``postprocessing.json`` for these folds, if it chose one."""
    names = "_".join(str(f) for f in sorted(f for f in folds if f != "all"))
    for candidate in (root / "postprocessing.json", root / f"crossval_results_folds_{names}" / "postprocessing.json"):
        if candidate.is_file():
            return {**read_json(candidate), "_file": str(candidate)}
    if any(root.glob("**/postprocessing.pkl")):
        log.warning("%s: postprocessing.pkl without postprocessing.json: not read (pickles are never "
                    "loaded); the bundle has no post-processing", root)
    return None


def read_result_folder(root: str | Path, folds: list[str] | None = None, checkpoint: str = "final") -> ResultFolder:
    """Read and check a result folder (see the module docstring).

    Args:
        root: The trainer folder.
        folds: Fold names to import (``"0"``, ``"all"``, ...); None: every ``fold_N`` present.
        checkpoint: ``final`` or ``best``.

    Raises:
        NnunetImportError: a missing or invalid file, a missing fold or checkpoint, an unknown
            configuration; the message names the file.
    """
    root = Path(root)
    if not root.is_dir():
        raise NnunetImportError(f"{root}: not a folder (expected an nnU-Net result folder "
                                "TRAINER__PLANS__CONFIGURATION)")
    try:
        dataset = read_dataset_json(root)
    except DataError as exc:
        raise NnunetImportError(str(exc)) from None
    plans = read_json(root / "plans.json")
    parts = root.name.split("__")
    if len(parts) != 3:
        raise NnunetImportError(f"{root}: the folder name is not TRAINER__PLANS__CONFIGURATION "
                                "(pass the trainer folder inside nnUNet_results/DatasetXXX)")
    configuration = resolve_configuration(plans, parts[2], root / "plans.json")
    chosen = _chosen_folds(root, folds, checkpoint)
    return ResultFolder(root, dataset, plans, parts[2], configuration, chosen,
                        _postprocessing(root, [f for f, _ in chosen]))
