"""Validation on whole cases: sliding-window inference (Gaussian blending) and Dice per class/region."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from seg.config import Config
from seg.metrics import dice_scores, nanmean
from seg_runtime.outputs import paint_regions, region_paint_labels


@torch.no_grad()
def predict_case(model: nn.Module, image: torch.Tensor, cfg: Config, device: torch.device) -> np.ndarray:
    """Label map of one preprocessed case (argmax of classes, or painted regions).

    Shape: image [C, *S] -> labels [*S] (int)
    """
    x = torch.as_tensor(image, dtype=torch.float32, device=device)[None]
    logits = sliding_window_inference(x, roi_size=cfg.patch_size, sw_batch_size=cfg.infer.batch_size,
                                      predictor=model, overlap=cfg.infer.overlap, mode="gaussian",
                                      padding_mode="constant")
    if cfg.model.outputs == "regions":
        return paint_regions(torch.sigmoid(logits[0]).cpu().numpy(), region_paint_labels(cfg.data.regions))
    return logits[0].argmax(0).cpu().numpy()


def validate(model: nn.Module, cases: Iterable[dict[str, Any]], cfg: Config, device: torch.device,
             limit: int | None = None) -> dict[str, float]:
    """Mean Dice over the validation cases, per class, per region and overall.

    Returns keys ``val_dice_<name>`` for every foreground class and region, and ``val_dice_mean``
    — the model-selection metric: the mean over foreground classes, or over the regions for
    region outputs (classes that no region separates would otherwise count as misses).
    """
    was_training = model.training
    model.eval()
    per_key: dict[str, list[float]] = {}
    for i, case in enumerate(cases):
        if limit is not None and i >= limit:
            break
        pred = predict_case(model, case["image"], cfg, device)
        ref = np.asarray(case["label"])[0]
        for key, value in dice_scores(pred, ref, cfg.data.labels, cfg.data.regions).items():
            per_key.setdefault(key, []).append(value)
    model.train(was_training)
    out = {f"val_dice_{k}": nanmean(v) for k, v in per_key.items()}
    if cfg.model.outputs == "regions":  # what the network predicts, and what it is scored on
        names = list(cfg.data.regions)
    else:
        names = [n for n, idx in cfg.data.labels.items() if idx != 0]
    out["val_dice_mean"] = nanmean([out[f"val_dice_{n}"] for n in names if f"val_dice_{n}" in out])
    return out
