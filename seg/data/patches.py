"""Training patch sampling that reads only the patch: foreground oversampling from stored locations.

MONAI's crop transforms need the whole case as a tensor (they pad it and scan the label for
foreground on every draw). Here the foreground locations of a case are computed once, in the
deterministic prefix (and stored next to an on-disk cached case), and a patch is cut by slicing:
from an in-memory array or from a memory-mapped ``.npy`` alike, so only the patch's bytes are
read. Both cache modes run this same transform, which is what makes their patches voxel-identical
for a seed.

Sampling (nnU-Net style): with probability ``foreground_ratio`` the patch is centred on a random
stored foreground voxel (label > 0), otherwise it is placed uniformly at random. With
``class_balanced`` the foreground draw first picks one of the classes among the case's stored
locations uniformly, then a voxel of that class (nnU-Net's rule), so a class with a tenth of another's
volume is still centred as often; without it, classes are drawn in proportion to their volume. The
class of a location is read from the label at draw time (K values, K <= 10,000), so the cached
locations serve both modes; a class under about 1/10,000 of a case's foreground may be absent from
the subsample and is then not drawn on its own. A case smaller than the patch is zero-padded
symmetrically (image and label), as ``SpatialPadd`` did.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai import transforms as mt

FG_KEY = "fg_locations"
MAX_FG_LOCATIONS = 10_000  # enough to cover any structure; bounded so the cache entry stays small


def foreground_locations(label: np.ndarray, max_points: int = MAX_FG_LOCATIONS) -> np.ndarray:
    """Coordinates of up to ``max_points`` voxels with label > 0 (a fixed-seed subsample).

    Shape: label [1, *S] -> locations [K, len(S)] (int32, K <= max_points; K = 0 without foreground)
    """
    coords = np.argwhere(np.asarray(label)[0] > 0)
    if len(coords) > max_points:  # deterministic: the memory and disk caches must agree
        keep = np.sort(np.random.default_rng(0).choice(len(coords), max_points, replace=False))
        coords = coords[keep]
    return coords.astype(np.int32)


class ForegroundLocationsd(mt.MapTransform):
    """Add ``fg_locations`` (see :func:`foreground_locations`) computed from ``label``."""

    def __init__(self) -> None:
        super().__init__(keys=["label"])

    def __call__(self, d: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(d)
        out[FG_KEY] = foreground_locations(out["label"])
        return out


def crop_padded(array: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Copy ``array[:, start:start+size]``, zero-filling where the box leaves the array.

    Works on memory maps: only the voxels inside the box are read.
    Shape: [C, *S] -> [C, *size]
    """
    spatial = array.shape[1:]
    out = np.zeros((array.shape[0], *size), dtype=array.dtype)
    src, dst = [slice(None)], [slice(None)]
    for s, n, dim in zip(start, size, spatial):
        lo, hi = max(s, 0), min(s + n, dim)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[tuple(dst)] = array[tuple(src)]
    return out


class RandPatchCropd(mt.Randomizable, mt.MapTransform):
    """Cut one training patch from ``image`` [C, *S] and ``label`` [1, *S] using ``fg_locations``.

    Output: ``image`` [C, *patch] float32 and ``label`` [1, *patch] int16 as fresh arrays (never views
    of the source), ``fg_locations`` dropped.
    """

    def __init__(self, patch_size: Sequence[int], foreground_ratio: float, class_balanced: bool = False) -> None:
        mt.MapTransform.__init__(self, keys=["image", "label"])
        self.patch = [int(p) for p in patch_size]
        self.foreground_ratio = float(foreground_ratio)
        self.class_balanced = bool(class_balanced)

    def randomize(self, data: Any = None) -> None:  # noqa: D102 - the draws happen in patch_start
        pass

    def patch_start(self, spatial: Sequence[int], locations: np.ndarray,
                    classes: np.ndarray | None = None) -> list[int]:
        """The patch's first voxel in the case's own coordinates (negative = inside the padding).

        ``classes``: the label value at each location (class-balanced draws), or None.
        """
        pad = [max(p - s, 0) // 2 for p, s in zip(self.patch, spatial)]
        room = [max(s, p) - p for p, s in zip(self.patch, spatial)]  # start range in the padded frame
        if len(locations) and self.R.rand() < self.foreground_ratio:
            if classes is not None:
                present = np.unique(classes)
                of_class = np.flatnonzero(classes == present[self.R.randint(len(present))])
                centre = locations[of_class[self.R.randint(len(of_class))]]
            else:
                centre = locations[self.R.randint(len(locations))]
            start = [int(np.clip(c + o - p // 2, 0, r)) for c, o, p, r in zip(centre, pad, self.patch, room)]
        else:
            start = [int(self.R.randint(r + 1)) for r in room]
        return [s - o for s, o in zip(start, pad)]

    def __call__(self, d: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = {k: v for k, v in d.items() if k != FG_KEY}
        image, label = out["image"], out["label"]
        locations = np.asarray(d.get(FG_KEY, np.zeros((0, 0))))
        classes = None
        if self.class_balanced and len(locations):  # K point reads, from memory or the memory map
            classes = np.asarray(label[0][tuple(locations.T)])
        start = self.patch_start(image.shape[1:], locations, classes)
        out["image"] = crop_padded(image, start, self.patch).astype(np.float32, copy=False)
        out["label"] = crop_padded(label, start, self.patch).astype(np.int16, copy=False)
        return out
