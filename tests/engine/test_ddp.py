"""Distributed data parallel: a 2-process gloo run on the CPU through torchrun completes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ..conftest import REPO


def test_two_process_gloo_run(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "seg.cli",
           "train", str(REPO / "configs" / "demo3d.yaml"), f"data.root={tmp_path / 'data'}",
           f"output_dir={tmp_path / 'runs'}", "train.epochs=1", "train.iters_per_epoch=3", "train.val_cases=1",
           "model.params.channels=[4,8,16]", "train.device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "demo3d"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["train_loss"] > 0  # one writer: rank 0
    assert (run / "last.pt").is_file()
