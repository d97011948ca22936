"""The README's ```bash ci blocks run as written, in order, in one scratch folder (integration tier).

The folder holds a copy of ``configs/`` (the demo configs name ``../demo_out``, so their runs land in
the scratch folder's ``demo_out/`` like the demo's), and ``seg`` / ``seg-run`` on PATH are this
interpreter's (the installed entry points in CI; the tree under test wherever PYTHONPATH points).
Each block runs with ``bash -e -x``; a failure names the block's README line, the command that
failed and the tail of its stderr. The untagged blocks and why CI leaves them out:
``tests/readme_blocks.py`` (``UNTAGGED``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .readme_blocks import README, blocks

REPO = README.parent

pytestmark = pytest.mark.integration


def _scratch(tmp_path: Path) -> dict[str, str]:
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    for name, module in (("seg", "seg.cli"), ("seg-run", "seg_runtime")):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m {module} "$@"\n')
        script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CI": "true",
            "HOME": str(tmp_path / "home"), "NO_COLOR": "1"}


def test_readme_ci_blocks_run(tmp_path: Path) -> None:
    tagged = [block for block in blocks() if block.tagged]
    assert len(tagged) >= 6, "README.md has lost its ```bash ci blocks"
    env = _scratch(tmp_path)
    (tmp_path / "home").mkdir()
    timings = []
    for block in tagged:
        start = time.perf_counter()
        result = subprocess.run(["bash", "-e", "-x", "-c", block.text], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=900, check=False)
        timings.append(f"README.md:{block.line} {time.perf_counter() - start:.0f}s")
        if result.returncode != 0:
            traced = [line for line in result.stderr.splitlines() if line.startswith("+ ")]
            command = traced[-1][2:] if traced else "?"
            pytest.fail(f"README.md line {block.line} (```bash ci block): `{command}` exited {result.returncode}\n"
                        f"stderr tail:\n{result.stderr[-2500:]}", pytrace=False)
    print("README blocks:", ", ".join(timings))
