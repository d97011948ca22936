"""tools/benchmark_shared.py: an existing run folder is reused only for the same experiment."""

from __future__ import annotations

from pathlib import Path

import pytest

from seg.config import load_config
from seg.engine.checkpoint import Checkpoint, save_checkpoint
from tests.tools.helpers import TOOLS, load_tool

REPO = TOOLS.parent


@pytest.fixture(scope="module")
def tool():
    return load_tool("benchmark_shared")


def test_differences_are_dotted_and_skip_epochs_and_output_dir(tool):
    stored = {"seed": 0, "output_dir": "/a", "train": {"epochs": 15, "lr": 0.003},
              "data": {"split": {"val": ["p3", "p4"]}}}
    wanted = {"seed": 1, "output_dir": "/b", "train": {"epochs": 40, "lr": 0.003},
              "data": {"split": {"val": ["p5", "p6"]}}, "extra": True}
    assert tool.settings_differ(stored, wanted) == ["data.split.val", "extra", "seed"]
    assert tool.settings_differ(stored, stored) == []


def test_a_run_with_other_settings_is_refused(tool, tmp_path: Path):
    cfg = load_config(REPO / "configs" / "demo3d.yaml")
    last = tmp_path / "last.pt"
    save_checkpoint(Checkpoint(last, cfg.to_dict(), {}))
    tool.check_reusable(cfg, last)  # the same experiment: reused
    other = load_config(REPO / "configs" / "demo3d.yaml", ["seed=7", "train.epochs=99"])
    with pytest.raises(SystemExit, match=r"other settings \(seed\).*name="):
        tool.check_reusable(other, last)
