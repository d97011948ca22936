"""nnU-Net's naming, written once: ``dataset.json`` and the ``CASE_XXXX`` channel files.

nnU-Net raw datasets (and the inputs nnU-Net users have) name each channel of a case
``CASE_0000.nii.gz``, ``CASE_0001.nii.gz``, ...; ``dataset.json`` beside ``imagesTr/`` names the
channels, the labels and the file ending. Case discovery, the dataset layouts, the planner and the
synthetic demo data all read and write these names through here.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .errors import DataError

DATASET_JSON = "dataset.json"
_CHANNEL_STEM = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def channel_file_name(case_id: str, channel: int, ending: str) -> str:
    """``CASE_XXXX<ending>``, the file of channel ``channel`` of case ``case_id``."""
    return f"{case_id}_{int(channel):04d}{ending}"


def split_channel_stem(stem: str) -> tuple[str, int] | None:
    """``("CASE", 1)`` for a file stem ``CASE_0001``; None for a stem without a channel number."""
    match = _CHANNEL_STEM.match(stem)
    return None if match is None else (match["case"], int(match["channel"]))


def split_channel_name(name: str, ending: str) -> tuple[str, int] | None:
    """``("CASE", 1)`` for ``CASE_0001<ending>``; None for any other file name."""
    if not name.endswith(ending):
        return None
    return split_channel_stem(name[: len(name) - len(ending)])


def read_dataset_json(root: str | os.PathLike[str]) -> dict[str, Any]:
    """``root/dataset.json`` as a dict.

    Raises:
        DataError: the file is missing, unreadable, not JSON, or not a JSON object (names the file).
    """
    path = Path(root) / DATASET_JSON
    if not path.is_file():
        raise DataError(f"{path} not found: this layout needs its dataset.json")
    return read_json_object(path)


def read_json_object(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON object from ``path`` (nnU-Net's ``dataset.json``, ``plans.json``, ...).

    Raises:
        DataError: unreadable, not JSON, or not a JSON object (names the file).
    """
    path = Path(path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object at the top level")
    return meta


def dataset_channel_names(meta: dict[str, Any]) -> dict[str, str]:
    """Channel index (as a string) -> name, from nnU-Net's ``channel_names`` or MSD's ``modality``."""
    names = meta.get("channel_names") or meta.get("modality") or {}
    return {str(k): str(v) for k, v in names.items()} if isinstance(names, dict) else {}


def dataset_file_ending(meta: dict[str, Any]) -> str:
    """The image file ending ``dataset.json`` names (nnU-Net's default ``.nii.gz``)."""
    return str(meta.get("file_ending", ".nii.gz"))
