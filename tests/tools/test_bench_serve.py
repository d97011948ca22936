"""tools/bench_serve.py end to end on a tiny bundle: every method's row, the ratios and the JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.tools.helpers import load_tool

pytestmark = pytest.mark.integration  # it starts a real seg-run serve process and seg-run processes


def test_bench_serve_reports_every_method(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
    from runtime_helpers import make_bundle_dir, save_nifti

    bundle = make_bundle_dir(tmp_path / "bundle")
    cases = tmp_path / "cases"
    cases.mkdir()
    for index in range(2):
        save_nifti(cases / f"c{index}.nii.gz", np.full((10, 9, 8), 1.5 + index, np.float32), np.eye(4))
    tool = load_tool("bench_serve")
    code = tool.main(["--bundle", str(bundle), "--cases", str(cases), "--requests", "4", "--per-process", "2",
                      "--json", str(tmp_path / "out.json")])
    report = json.loads((tmp_path / "out.json").read_text())
    assert code == 0
    assert [(r["method"], r["clients"]) for r in report["rows"]] == [
        ("serve (warm)", 1), ("serve (warm)", 4), ("serve (warm)", 16),
        ("seg-run, one process per case", 1), ("seg-run, one batch call", 1)]
    assert all(r["cases_per_s"] > 0 and r["p95_s"] >= r["p50_s"] for r in report["rows"])
    assert report["rows"][3]["x_process_per_case"] == 1.0
