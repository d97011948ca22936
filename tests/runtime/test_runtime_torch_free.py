"""seg_runtime runs end to end in a fresh interpreter where torch, MONAI and seg cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from runtime_helpers import save_nifti

EXPORT_DIR = Path(__file__).resolve().parents[2] / "export"

SCRIPT = r"""
import importlib.abc, json, sys

BLOCKED = {"torch", "monai", "seg"}
attempts = []

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            attempts.append(name)
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, Blocker())
import seg_runtime
from seg_runtime.cli import main

code = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"code": code, "attempts": attempts, "loaded": loaded, "file": seg_runtime.__file__}))
"""


def test_runtime_never_imports_torch(tmp_path: Path, bundle_factory: Callable[..., Path]) -> None:
    bundle = bundle_factory()
    (tmp_path / "in").mkdir()
    save_nifti(tmp_path / "in" / "a.nii.gz", np.linspace(0, 3, 6 * 7 * 5).reshape(6, 7, 5), np.eye(4))
    env = {**os.environ, "PYTHONPATH": str(EXPORT_DIR)}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            str(bundle),
            "-i",
            str(tmp_path / "in"),
            "-o",
            str(tmp_path / "out"),
            "--tta",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["code"] == 0
    assert report["loaded"] == [] and report["attempts"] == []
    assert Path(report["file"]).is_relative_to(EXPORT_DIR)
    assert (tmp_path / "out" / "a.nii.gz").is_file()
