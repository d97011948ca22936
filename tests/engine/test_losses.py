"""Training losses on real tensors: class Dice+CE and region Dice+BCE, with deep supervision."""

from __future__ import annotations

from pathlib import Path

import torch

from seg.losses import RegionDiceBCELoss, build_loss

from ..conftest import tiny_config

BRATS = [[1, 2, 3, 4], [1, 3, 4], [4]]


def _labels() -> torch.Tensor:
    """Shape: [1, 1, 4, 4, 4], every BraTS class present."""
    labels = torch.zeros(1, 1, 4, 4, 4)
    labels[..., 0, :, :] = 1
    labels[..., 1, :, :] = 2
    labels[..., 2, :2, :] = 3
    labels[..., 3, :, :] = 4
    return labels


def test_region_masks_are_the_unions_of_classes() -> None:
    labels = _labels()
    masks = RegionDiceBCELoss(BRATS).region_masks(labels, torch.float32)
    assert masks.shape == (1, 3, 4, 4, 4)
    for channel, members in enumerate(BRATS):
        expected = sum((labels == m).float() for m in members)
        assert torch.equal(masks[:, channel : channel + 1], expected)


def test_region_loss_is_low_for_the_truth_and_trains_towards_it() -> None:
    loss = RegionDiceBCELoss(BRATS)
    masks = loss.region_masks(_labels(), torch.float32)
    assert loss(20.0 * (2 * masks - 1), _labels()) < 1e-3
    assert loss(-20.0 * (2 * masks - 1), _labels()) > 10
    logits = torch.zeros_like(masks, requires_grad=True)
    optimizer = torch.optim.SGD([logits], lr=50.0)
    start = float(loss(logits, _labels()).detach())
    for _ in range(20):
        optimizer.zero_grad()
        loss(logits, _labels()).backward()
        optimizer.step()
    assert float(loss(logits, _labels()).detach()) < 0.2 * start


def test_deep_supervised_region_loss_takes_coarse_outputs(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, 3, "model.outputs=regions", "data.regions={foreground: [1, 2], lesion: [1]}")
    loss = build_loss(cfg, deep_supervision=True)
    labels = torch.randint(0, 3, (2, 1, 8, 8, 8)).float()
    outputs = [torch.randn(2, 2, 8, 8, 8, requires_grad=True), torch.randn(2, 2, 4, 4, 4, requires_grad=True)]
    value = loss(outputs, labels)
    value.backward()
    assert torch.isfinite(value) and all(o.grad is not None and o.grad.abs().sum() > 0 for o in outputs)
