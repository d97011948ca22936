"""Optimiser, learning-rate schedule, EMA and seeding for the training loop."""

from __future__ import annotations

import math
import os

import torch
from torch import nn

from seg.config import TrainConfig


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed python/numpy/torch; in deterministic mode also force deterministic kernels."""
    from monai.utils import set_determinism

    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        set_determinism(seed=seed, use_deterministic_algorithms=True)
    else:
        set_determinism(seed=seed)
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, or SGD with Nesterov momentum (nnU-Net's choice)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the base LR at optimiser step ``step`` (linear warm-up, then poly/cosine/constant)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
    if kind == "poly":
        return (1.0 - progress) ** 0.9
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    """A per-step LambdaLR; its state is just the step count, so resume needs no callables."""
    warmup = cfg.warmup_epochs * cfg.iters_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, total_steps, warmup, cfg.scheduler))


def build_ema(model: nn.Module, decay: float | None):
    """Exponential moving average of the weights (used for validation and the saved model)."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
