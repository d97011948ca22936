"""Label-map post-processing: keep only the largest connected component of chosen structures.

nnU-Net's standard clean-up. A structure that is one connected object in every case (a
tumour, an organ) often gets stray islands far away from it in the prediction; each island
costs little Dice but dominates HD95. Removing all but the largest component of such a
structure fixes that. It is opt-in per structure (``keep_largest`` in the config and the bundle),
because it is wrong for structures that really come in pieces (lesions, vessels cut by the field
of view, cell membranes).

A structure is a class name or a region name (the union of several classes, e.g. BraTS "whole
tumour"). Voxels of its classes outside the largest component of their union become background
(0); the classes inside keep their own labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["keep_largest_components", "structure_members"]


def structure_members(
    name: str, labels: Mapping[str, int], regions: Mapping[str, Sequence[int]]
) -> list[int]:
    """The class indices of a class or region name (background is never a structure).

    Raises:
        ValueError: The name is neither a foreground class nor a region; the message lists them.
    """
    if name in regions:
        return sorted(set(regions[name]) - {0})
    if name in labels and labels[name] != 0:
        return [labels[name]]
    valid = [n for n, i in labels.items() if i != 0] + list(regions)
    raise ValueError(f"{name!r} is not a foreground class or region; valid: {', '.join(valid)}")


def keep_largest_components(
    labels: np.ndarray,
    structures: Sequence[str],
    class_labels: Mapping[str, int],
    regions: Mapping[str, Sequence[int]],
) -> np.ndarray:
    """Keep only the largest face-connected component of each structure, in place.

    Structures are processed in the given order; an empty structure is left as it is.

    Args:
        labels: Label map of class indices. Shape: [*S] (2D or 3D).
        structures: Class or region names (see :func:`structure_members`).
        class_labels: Class name → index.
        regions: Region name → class indices.

    Returns:
        ``labels`` itself, edited.
    """
    from scipy import ndimage

    for name in structures:
        mask = np.isin(labels, structure_members(name, class_labels, regions))
        components, count = ndimage.label(mask)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        labels[mask & (components != int(np.argmax(sizes)))] = 0
    return labels
