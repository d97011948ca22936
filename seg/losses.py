"""Config-driven losses: MONAI's DiceCE (classes) or Dice + BCE (regions), wrapped for deep supervision."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seg.config import Config


class RegionDiceBCELoss(nn.Module):
    """Dice + binary cross-entropy on sigmoid region outputs against integer labels.

    Each output channel is one region (a union of classes); the integer labels are turned into
    the overlapping region masks here, after deep supervision has resized them.

    Args:
        regions: The class indices of each region, in output-channel order.

    Shape: logits [B, R, *S], labels [B, 1, *S] -> scalar
    """

    def __init__(self, regions: Sequence[Sequence[int]]) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.regions = [sorted(set(members)) for members in regions]
        self.dice = DiceLoss(sigmoid=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)
        self.bce = nn.BCEWithLogitsLoss()

    def region_masks(self, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Shape: [B, 1, *S] integer labels -> [B, R, *S] region masks (0/1 in ``dtype``)."""
        labels = torch.as_tensor(labels)[:, :1].round().long()
        masks = []
        for members in self.regions:
            mask = torch.zeros_like(labels, dtype=torch.bool)
            for index in members:
                mask |= labels == index
            masks.append(mask)
        return torch.cat(masks, dim=1).to(dtype)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = torch.as_tensor(logits)
        target = self.region_masks(labels, logits.dtype)
        return self.dice(logits, target) + self.bce(logits, target)


def build_loss(cfg: Config, deep_supervision: bool) -> nn.Module:
    """The training loss for the config's outputs, against integer labels ``[B, 1, *S]``.

    Classes: Dice + cross-entropy on softmax outputs (background left out of the Dice).
    Regions: Dice + BCE on sigmoid outputs, one channel per ``data.regions`` entry.
    With deep supervision the loss takes the list of outputs (full resolution first) and MONAI's
    ``DeepSupervisionLoss`` resizes the labels to each level and halves the weight per level
    ("exp" weighting, as nnU-Net).
    """
    from monai.losses import DeepSupervisionLoss, DiceCELoss

    if cfg.model.outputs == "regions":
        loss: nn.Module = RegionDiceBCELoss(list(cfg.data.regions.values()))
    else:
        loss = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, smooth_nr=1e-5,
                          smooth_dr=1e-5, batch=True)
    if deep_supervision:
        return DeepSupervisionLoss(loss, weight_mode="exp")
    return loss
