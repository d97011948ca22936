"""Config-driven losses: MONAI's DiceCE, wrapped for deep supervision."""

from __future__ import annotations

from torch import nn

from seg.config import Config


def build_loss(cfg: Config, deep_supervision: bool) -> nn.Module:
    """Dice + cross-entropy on softmax outputs against integer labels ``[B, 1, *S]``.

    With deep supervision the loss takes the list of outputs (full resolution first) and MONAI's
    ``DeepSupervisionLoss`` resizes the labels to each level and halves the weight per level
    ("exp" weighting, as nnU-Net).
    """
    from monai.losses import DeepSupervisionLoss, DiceCELoss

    loss = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, smooth_nr=1e-5,
                      smooth_dr=1e-5, batch=True)
    if deep_supervision:
        return DeepSupervisionLoss(loss, weight_mode="exp")
    return loss
