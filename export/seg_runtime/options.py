"""How a prediction run runs and what it writes: one options object for every runner and both CLIs.

``seg-run`` and ``seg predict`` map their command lines onto :class:`PredictOptions`
(:mod:`seg_runtime.cli_options`); the service and the DICOM node build it from their requests. What
the model itself decides (patch size, preprocessing, its post-processing and mirroring defaults) is
the backend's bundle; these options only override it where they say so.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PredictOptions:
    """The options of one prediction run.

    Attributes:
        tta: Mirroring test-time augmentation over every spatial axis; None: the model's default.
        keep_largest: Structures cut to their largest component, replacing the model's list; an
            empty tuple turns every post-processing step off (remove-small too); None: the model's.
        batch_size: Patches per network call; None: the backend's default.
        overwrite: Predict cases whose output already exists.
        shard: ``(i, n)``: only the cases at sorted positions ``p % n == i``.
        save_probabilities: Also write ``<id>_probabilities.nii.gz`` (3D) / ``.npz`` (2D).
        preview: Also write ``OUTPUT/preview/<id>.png``.
        dicom_seg: Also write ``<id>.seg.dcm`` for DICOM series inputs (needs highdicom).
        rtstruct: Also write ``<id>.rtstruct.dcm`` (RT Structure Set) for DICOM series inputs.
        statistics: Also write per-structure volumes and input intensities:
            ``statistics/<id>.json`` per case and ``statistics.csv`` over the run.
        output_format: Label-map format (:data:`seg_runtime.formats.OUTPUT_FORMATS`).
        max_memory_gb: Memory limit per case in GiB (None: ``$SEG_MAX_MEMORY_GB`` or half the RAM).
        progress: Progress bars.
        allow_gaps: Accept DICOM series with uneven slice gaps, resampled onto an even grid.
        class_indices: Write label maps as class indices, not in the dataset's own values (the
            bundle's ``label_values``).
    """

    tta: bool | None = None
    keep_largest: tuple[str, ...] | None = None
    batch_size: int | None = None
    overwrite: bool = False
    shard: tuple[int, int] | None = None
    save_probabilities: bool = False
    preview: bool = False
    dicom_seg: bool = False
    rtstruct: bool = False
    statistics: bool = False
    output_format: str = "auto"
    max_memory_gb: float | None = None
    progress: bool = True
    allow_gaps: bool = False
    class_indices: bool = False
