"""What a model's output channels mean, and how they become a label map.

Two kinds (``Bundle.outputs``, ``model.outputs`` in a seg config):

- ``classes``: one channel per class, background included; softmax, then argmax.
- ``regions``: one channel per region (e.g. BraTS whole tumour, tumour core, enhancing
  tumour), each an independent sigmoid: the network is trained on the overlapping regions that
  are scored, not on the classes that make them up (nnU-Net's region-based training). A voxel
  belongs to a region where its probability is > 0.5. The label map is painted region by region
  in the listed order, so regions go from largest to smallest; each region paints the first of
  its classes that no later region contains (whole tumour [1, 2, 3, 4] paints 2, tumour core
  [1, 3, 4] paints 1, enhancing [4] paints 4). Classes that no region tells apart (necrosis and
  non-enhancing core, here) come out as one of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

__all__ = [
    "OUTPUT_KINDS",
    "REGION_THRESHOLD",
    "labels_on_input_grid",
    "output_channels",
    "paint_regions",
    "region_paint_labels",
]

OUTPUT_KINDS = ("classes", "regions")
REGION_THRESHOLD = 0.5


def region_paint_labels(regions: Mapping[str, Sequence[int]]) -> list[int]:
    """The label each region paints, in order (see the module docstring).

    Raises:
        ValueError: No regions, a region holding only background, or a region with no class of
            its own (every class of it is in a later region); the message names the region.
    """
    if not regions:
        raise ValueError("region outputs need at least one region (data.regions)")
    items = list(regions.items())
    paint = []
    for position, (name, members) in enumerate(items):
        later = {m for _, others in items[position + 1 :] for m in others}
        own = [m for m in members if m != 0 and m not in later]
        if not own:
            order = ", ".join(n for n, _ in items)
            raise ValueError(
                f"region {name!r} {list(members)} has no foreground class outside the regions after it "
                f"(order: {order}); list regions from largest to smallest"
            )
        paint.append(int(own[0]))
    return paint


def output_channels(outputs: str, num_classes: int, regions: Mapping[str, Sequence[int]]) -> int:
    """Number of network output channels: classes (background included) or regions."""
    if outputs not in OUTPUT_KINDS:
        raise ValueError(f"outputs must be one of {', '.join(OUTPUT_KINDS)}; got {outputs!r}")
    return num_classes if outputs == "classes" else len(regions)


def paint_regions(probabilities: np.ndarray, paint_labels: Sequence[int]) -> np.ndarray:
    """Label map from region probabilities: each region paints its label where > 0.5, in order.

    Shape: probabilities [R, *S] -> labels [*S] (uint8, or uint16 past label 255)
    """
    if len(paint_labels) != probabilities.shape[0]:
        raise ValueError(f"{probabilities.shape[0]} region channels but {len(paint_labels)} paint labels")
    dtype = np.uint8 if max(paint_labels, default=0) < 256 else np.uint16
    labels = np.zeros(probabilities.shape[1:], dtype=dtype)
    for channel, label in zip(probabilities, paint_labels, strict=True):
        labels[channel > REGION_THRESHOLD] = label
    return labels


def labels_on_input_grid(
    scores: np.ndarray,
    restore: Callable[[np.ndarray, int], np.ndarray],
    *,
    keep_scores: bool = False,
    paint_labels: Sequence[int] | None = None,
    threshold: float = REGION_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Restore scores to the input grid one channel at a time and decode the labels.

    Class outputs take the argmax; region outputs (``paint_labels`` given) paint each region's
    label where its score is above ``threshold`` (0.5 for probabilities, 0 for logits), in channel
    order (see the module docstring). Only one restored channel plus the running maximum are held at
    once (in the dtype of ``scores``), and a float16 copy of all channels when ``keep_scores``.

    Args:
        scores: Probabilities or logits on the model grid, float32 or float16. Shape: [K, *S'].
        restore: Maps model-grid channels to the input grid, given the index of the first of them.
            Shape: [1, *S'] -> [1, *S_in].
        keep_scores: Also return the restored scores.
        paint_labels: For region outputs, the label each channel paints. Length K.
        threshold: The region decision threshold on the restored scores.

    Returns:
        The label map (Shape: [*S_in], uint8 or uint16) and the float16 restored scores
        (Shape: [K, *S_in]) or None.
    """
    channels = scores.shape[0]
    largest = max(paint_labels) + 1 if paint_labels is not None else channels
    kept: np.ndarray | None = None
    labels: np.ndarray | None = None
    best: np.ndarray | None = None
    for index in range(channels):
        restored = restore(scores[index : index + 1], index)[0]
        if labels is None:
            labels = np.zeros(restored.shape, dtype=np.uint8 if largest <= 256 else np.uint16)
            kept = np.empty((channels, *restored.shape), np.float16) if keep_scores else None
        if kept is not None:
            kept[index] = restored
        if paint_labels is not None:
            labels[restored > threshold] = paint_labels[index]
            continue
        if best is None:
            best = restored
            continue
        better = restored > best  # strict: ties keep the lower class, like np.argmax
        labels[better] = index
        np.maximum(best, restored, out=best)
    return labels, kept
