"""Label-map post-processing: keep only the largest connected component of chosen structures, or
remove their components below a minimum volume.

nnU-Net's standard clean-up. A structure that is one connected object in every case (a
tumour, an organ) often gets stray islands far away from it in the prediction; each island
costs little Dice but dominates HD95. Removing all but the largest component of such a
structure fixes that. It is opt-in per structure (``keep_largest`` in the config and the bundle),
because it is wrong for structures that really come in pieces (lesions, vessels cut by the field
of view, cell membranes).

A structure is a class name or a region name (the union of several classes, e.g. BraTS "whole
tumour"). Voxels of its classes outside the largest component of their union become background
(0); the classes inside keep their own labels. The name ``foreground`` (unless a class or region
has that name) is the union of every foreground class: nnU-Net's first candidate, which keeps the
one object a scan shows and lets each class keep its own labels inside it.

Removing small components (``remove_small``: structure -> minimum volume in mm³, or in pixels for
images without spacing) is the gentler variant for structures that come in several real pieces:
only islands smaller than the smallest real object go.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["FOREGROUND", "keep_largest_components", "postprocess_labels", "remove_small_components",
           "structure_members"]

FOREGROUND = "foreground"


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
    if name == FOREGROUND and name not in labels:
        return sorted(i for i in labels.values() if i != 0)
    valid = [n for n, i in labels.items() if i != 0] + list(regions) + [FOREGROUND]
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


def remove_small_components(
    labels: np.ndarray,
    min_volume: Mapping[str, float],
    class_labels: Mapping[str, int],
    regions: Mapping[str, Sequence[int]],
    voxel_volume: float = 1.0,
) -> np.ndarray:
    """Set the face-connected components of each structure smaller than its minimum volume to 0, in place.

    Args:
        labels: Label map of class indices. Shape: [*S] (2D or 3D).
        min_volume: Structure name (see :func:`structure_members`) -> smallest volume kept, in the
            units of ``voxel_volume`` (mm³ for scans).
        class_labels: Class name → index.
        regions: Region name → class indices.
        voxel_volume: Volume of one voxel of ``labels`` (the product of its spacing).

    Returns:
        ``labels`` itself, edited.
    """
    from scipy import ndimage

    for name, volume in min_volume.items():
        mask = np.isin(labels, structure_members(name, class_labels, regions))
        components, count = ndimage.label(mask)
        if count == 0:
            continue
        sizes = np.bincount(components.ravel()) * float(voxel_volume)
        small = sizes < float(volume)
        small[0] = False
        if small.any():
            labels[small[components]] = 0
    return labels


def postprocess_labels(
    labels: np.ndarray,
    keep_largest: Sequence[str],
    remove_small: Mapping[str, float],
    class_labels: Mapping[str, int],
    regions: Mapping[str, Sequence[int]],
    voxel_volume: float = 1.0,
) -> np.ndarray:
    """Both steps as a bundle or config names them: keep-largest first, then remove-small (in place)."""
    if keep_largest:
        keep_largest_components(labels, keep_largest, class_labels, regions)
    if remove_small:
        remove_small_components(labels, remove_small, class_labels, regions, voxel_volume)
    return labels
