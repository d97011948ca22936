"""``pip install ./export`` writes nothing into the source tree, and a runtime installed beside seg is named.

Integration tier: it runs pip (no download: ``--no-deps --no-build-isolation`` builds with the
setuptools of this environment) into a ``--target`` folder, which, put first on PYTHONPATH beside the
installed seg, is the second copy of ``seg_runtime`` that ``pip install ./export`` in a dev venv makes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

EXPORT_DIR = Path(__file__).resolve().parents[2] / "export"

pytestmark = pytest.mark.integration


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if "__pycache__" not in p.parts}


def _run(args: list[str], cwd: Path, pythonpath: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300, check=False)


def test_runtime_install_beside_seg(tmp_path: Path) -> None:
    metadata.distribution("seg")  # the dev install this test stands for (CI: pip install -e ".[dev]")
    before = _tree(EXPORT_DIR)
    target = tmp_path / "site"
    pythonpath = os.environ.get("PYTHONPATH", "")
    install = _run(["-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(target), str(EXPORT_DIR)], tmp_path, pythonpath)
    assert install.returncode == 0, install.stderr[-3000:]
    assert _tree(EXPORT_DIR) == before, sorted(_tree(EXPORT_DIR) ^ before)  # no build/, no egg-info
    assert (target / "bin" / "seg-run").is_file() and (target / "seg_runtime" / "serve" / "web" / "index.html").is_file()

    shadowed = os.pathsep.join(filter(None, [str(target), pythonpath]))
    for command in (["-m", "seg_runtime", "summary", "-o", str(tmp_path / "none")], ["-m", "seg.cli", "models"]):
        beside = _run(command, tmp_path, shadowed)
        text = " ".join(beside.stderr.split())
        assert "is installed beside seg, which already includes the runtime and seg-run" in text, beside.stderr
        assert f"this process uses {target / 'seg_runtime'}" in text
        assert "pip uninstall seg-runtime, then reinstall seg" in text
    alone = _run(["-m", "seg_runtime", "summary", "-o", str(tmp_path / "none")], tmp_path, pythonpath)
    assert "installed beside seg" not in alone.stderr
