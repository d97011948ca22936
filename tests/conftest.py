"""Shared fixtures: tiny synthetic datasets and configs; the shared real data when present."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seg.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def tiny_config(tmp: Path, dims: int = 3, *extra: str) -> Config:
    """The demo config shrunk to seconds: 8-channel-wide net, 2 epochs of 4 steps."""
    patch = "[32,32,32]" if dims == 3 else "[48,48]"
    return load_config(REPO / "configs" / f"demo{dims}d.yaml", [
        f"data.root={tmp / 'data'}", f"output_dir={tmp / 'runs'}", "train.epochs=2", "train.iters_per_epoch=4",
        "train.batch_size=2", f"train.patch_size={patch}", "train.val_every=1", "train.val_cases=1",
        "model.params.channels=[4,8,16]", *extra,
    ])


@pytest.fixture
def tiny3d(tmp_path: Path) -> Config:
    return tiny_config(tmp_path, 3)


@pytest.fixture
def tiny2d(tmp_path: Path) -> Config:
    return tiny_config(tmp_path, 2)


@pytest.fixture
def cuda() -> torch.device:
    """The CUDA device for tests marked ``gpu`` (``pytest -m gpu``); a skip where there is none."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    return torch.device("cuda")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


# Tests that need something most machines lack run only when asked for by name: ``pytest -m gpu``
# (CUDA) and ``pytest -m integration`` (real components: nnU-Net, Orthanc, Chromium, Ray Serve, the
# README's blocks). Any other selection, ``pytest -m "not slow"`` included, leaves them out, so the
# plain ``pytest`` and every narrower ``-m`` stay within the unit and contract tier.
OPT_IN_MARKERS = ("gpu", "integration")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    expression = config.getoption("markexpr") or ""
    hidden = [marker for marker in OPT_IN_MARKERS if marker not in expression]
    keep, drop = [], []
    for item in items:
        (drop if any(item.get_closest_marker(m) for m in hidden) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
