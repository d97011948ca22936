"""Cross-field checks of a model description, written once for a seg config and a deploy bundle.

A config (``seg.config``) and ``model.json`` (:mod:`seg_runtime.bundle`) describe the same things:
channels and their normalisation, labels and regions, the post-processing by structure name, the
output kind, the DICOM codes. Both run :func:`description_problems`; each names the keys in its own
terms (``infer.keep_largest`` in a config, ``keep_largest`` in ``model.json``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .label_codes import check_label_codes
from .outputs import region_paint_labels
from .postprocess import structure_members

# The keys as model.json names them; a config maps them onto its own (seg.config.DESCRIPTION_KEYS).
NORMALIZATION, KEEP_LARGEST, REMOVE_SMALL, OUTPUTS, LABEL_CODES = (
    "preprocess.normalization", "keep_largest", "remove_small", "outputs", "label_codes")


def description_problems(
    *,
    in_channels: int,
    normalization_entries: int,
    labels: Mapping[str, int],
    regions: Mapping[str, Sequence[int]],
    keep_largest: Sequence[str],
    remove_small: Mapping[str, float],
    outputs: str,
    label_codes: Mapping[str, Any],
) -> list[tuple[str, str]]:
    """``(key, message)`` for every cross-field inconsistency (none: an empty list)."""
    problems: list[tuple[str, str]] = []
    if normalization_entries not in (1, in_channels):
        problems.append((NORMALIZATION, f"needs 1 or {in_channels} entries, got {normalization_entries}"))
    for key, names in ((KEEP_LARGEST, keep_largest), (REMOVE_SMALL, remove_small)):
        for name in names:
            try:
                structure_members(name, labels, regions)
            except ValueError as exc:
                problems.append((key, str(exc)))
    negative = {k: v for k, v in remove_small.items() if v < 0}
    if negative:
        problems.append((REMOVE_SMALL, f"minimum volumes must be >= 0, got {negative}"))
    if outputs == "regions":
        try:
            region_paint_labels(regions)
        except ValueError as exc:
            problems.append((OUTPUTS, f"regions: {exc}"))
    try:
        check_label_codes(dict(label_codes), dict(labels))
    except ValueError as exc:
        problems.append((LABEL_CODES, str(exc)))
    return problems
