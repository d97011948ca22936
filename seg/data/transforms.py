"""MONAI dictionary pipelines for training, validation and inference, built from the config.

All pipelines share one deterministic prefix, :class:`LoadPreprocessd`: read the case's channels
with their geometry, reorient to RAS, resample to the target spacing and normalise. It is the very
code the deploy runtime (``seg_runtime.preprocess``) runs, so a model sees at deploy exactly the
arrays it saw in training. Training adds the foreground locations (still deterministic, so cached
with the prefix), then patch sampling with foreground oversampling (``seg.data.patches``, which
reads only the patch, also from a memory-mapped cache) and augmentation: MONAI random transforms
in 3D, albumentations in 2D.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from monai import transforms as mt

from seg.config import Config, DataConfig
from seg.data.patches import ForegroundLocationsd, RandPatchCropd
from seg_runtime.cases import Case
from seg_runtime.io import read_case
from seg_runtime.labelmaps import read_label_map, remap_values
from seg_runtime.preprocess import PreprocessSpec, preprocess_image, preprocess_label


def preprocess_spec(data: DataConfig) -> PreprocessSpec:
    """The runtime's preprocessing spec for this data config (also written into model.json)."""
    pre = data.preprocess
    return PreprocessSpec(
        orientation=pre.orientation if data.spatial_dims == 3 else None,
        target_spacing=list(pre.target_spacing) if pre.target_spacing else None,
        normalization=[_norm_dict(n.model_dump()) for n in pre.normalization],
    )


def _norm_dict(n: dict[str, Any]) -> dict[str, Any]:
    keep = {"zscore": ("nonzero",), "fixed": ("clip", "mean", "std"), "minmax": ("lo", "hi"), "none": ()}
    return {"scheme": n["scheme"], **{k: n[k] for k in keep[n["scheme"]]}}


class LoadPreprocessd(mt.MapTransform):
    """Read a case dict ``{"id", "image": [paths], "label": path}`` and apply the deterministic prefix.

    Output: ``image`` float32 [C, *S'], ``label`` int16 [1, *S'] (when the case has one), ``id``.
    """

    def __init__(self, data: DataConfig) -> None:
        super().__init__(keys=["image"])
        self.data = data
        self.spec = preprocess_spec(data)

    def __call__(self, d: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        paths = [Path(p) for p in d["image"]]
        case = Case(id=str(d["id"]), paths=paths, kind="folder", output_ext=".nii.gz")
        image, geometry = read_case(case, self.data.spatial_dims, self.data.in_channels)
        image, _ = preprocess_image(image, geometry, self.spec)
        out: dict[Hashable, Any] = {"id": d["id"], "image": image.astype(np.float32)}
        if d.get("label"):
            raw, _ = read_label_map(d["label"], self.data.spatial_dims)
            label = remap_values(raw, self.data.label_values)
            out["label"] = preprocess_label(label, geometry, self.spec)[None].astype(np.int16)
        return out


class Albumentations2Dd(mt.MapTransform, mt.RandomizableTransform):
    """2D augmentation through albumentations on channel-first arrays (image [C,H,W], label [1,H,W])."""

    def __init__(self) -> None:
        mt.MapTransform.__init__(self, keys=["image", "label"])
        mt.RandomizableTransform.__init__(self, prob=1.0)
        import albumentations as A

        self.aug = A.Compose([
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.Affine(scale=(0.85, 1.15), rotate=(-15, 15), p=0.3),
            A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.15, p=0.3),
            A.GaussNoise(std_range=(0.0, 0.05), p=0.1),
        ])

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.aug.set_random_seed(int(self.R.randint(0, 2**31 - 1)))
        return self

    def __call__(self, d: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(d)
        image = np.moveaxis(np.asarray(out["image"], dtype=np.float32), 0, -1)
        label = np.asarray(out["label"])[0].astype(np.uint8)
        res = self.aug(image=image, mask=label)
        out["image"] = np.ascontiguousarray(np.moveaxis(res["image"], -1, 0))
        out["label"] = res["mask"][None].astype(np.int16)
        return out


def _augment_3d() -> list[mt.Transform]:
    keys = ["image", "label"]
    return [
        mt.RandAffined(keys, prob=0.2, rotate_range=(0.26, 0.26, 0.26), scale_range=(0.15, 0.15, 0.15),
                       mode=("bilinear", "nearest"), padding_mode="zeros"),
        *[mt.RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(3)],
        mt.RandScaleIntensityd("image", factors=0.1, prob=0.3),
        mt.RandShiftIntensityd("image", offsets=0.1, prob=0.3),
        mt.RandGaussianNoised("image", prob=0.1, std=0.05),
        mt.RandAdjustContrastd("image", prob=0.15, gamma=(0.7, 1.5)),
    ]


def train_random_transforms(cfg: Config) -> mt.Compose:
    """The random part of training: patch sampling (foreground oversampling) + augmentation.

    Input: a preprocessed case with ``fg_locations`` (in memory, or memory-mapped from the disk cache).
    """
    keys = ["image", "label"]
    steps: list[mt.Transform] = [RandPatchCropd(cfg.train.patch_size, cfg.train.foreground_oversample,
                                                  class_balanced=cfg.train.foreground_sampling == "classes")]
    if cfg.train.augment:
        steps += _augment_3d() if cfg.data.spatial_dims == 3 else [Albumentations2Dd()]
    steps.append(mt.EnsureTyped(keys, track_meta=False))
    return mt.Compose(steps)


def train_transforms(cfg: Config) -> mt.Compose:
    """Prefix + foreground locations (deterministic, cacheable) + :func:`train_random_transforms`."""
    return mt.Compose([LoadPreprocessd(cfg.data), ForegroundLocationsd(),
                       *train_random_transforms(cfg).transforms])


def val_transforms(cfg: Config) -> mt.Compose:
    """The deterministic prefix only: validation runs sliding-window on whole cases."""
    return mt.Compose([LoadPreprocessd(cfg.data), mt.EnsureTyped(["image", "label"], track_meta=False,
                                                                  allow_missing_keys=True)])
