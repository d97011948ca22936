"""Validation on whole cases: the runtime's Gaussian sliding window and Dice per class/region.

The sliding window is ``seg_runtime``'s, the very one ``seg predict`` and ``seg-run`` use, so a
validation Dice is the Dice of what prediction would output on the model grid (without mirroring).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from seg.config import Config
from seg.metrics import dice_scores, nanmean
from seg_runtime.outputs import paint_regions, region_paint_labels
from seg_runtime.tiling import sliding_window_inference


def torch_predict_batch(model: nn.Module, device: torch.device, amp: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """A runtime ``predict_batch`` for a torch network: logits of a batch of numpy patches.

    Args:
        model: The network (in eval mode for inference).
        device: Where it runs.
        amp: bf16 autocast (CUDA only).

    Shape: [B, C, *P] -> [B, K, *P], float32
    """

    @torch.inference_mode()
    def predict_batch(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            out = model(t)
        return out.float().cpu().numpy()

    return predict_batch


def predict_case(model: nn.Module, image: Any, cfg: Config, device: torch.device) -> np.ndarray:
    """Label map of one preprocessed case (argmax of classes, or painted regions).

    Shape: image [C, *S] -> labels [*S] (int)
    """
    regions = cfg.model.outputs == "regions"
    image = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    probabilities = sliding_window_inference(
        image.astype(np.float32, copy=False), torch_predict_batch(model, device), cfg.patch_size,
        num_classes=cfg.out_channels, overlap=cfg.infer.overlap, batch_size=cfg.infer.batch_size,
        activation="sigmoid" if regions else "softmax")
    if regions:
        return paint_regions(probabilities, region_paint_labels(cfg.data.regions))
    return probabilities.argmax(0)


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
