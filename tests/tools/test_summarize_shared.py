"""tools/summarize_shared.py: per-fold spread and the case-paired comparison with the baseline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tools.helpers import TOOLS, load_tool

TOOL = TOOLS / "summarize_shared.py"


@pytest.fixture(scope="module")
def tool():
    return load_tool("summarize_shared")


def run_row(model: str, cases: dict[str, tuple[float, float]]) -> dict:
    """One benchmark row: per case (dice, hd95); the row's means are the case means."""
    rows = [{"id": cid, "dice_wt": d, "hd95_wt": h} for cid, (d, h) in cases.items()]
    return {"model": model, "cases": rows,
            "dice_wt": sum(d for d, _ in cases.values()) / len(cases),
            "hd95_wt": sum(h for _, h in cases.values()) / len(cases)}


ROWS = [
    # fold A (cases a1, a2): two seeds of "ours", one of the baseline
    run_row("ours", {"a1": (0.8, 10.0), "a2": (0.6, 20.0)}),
    run_row("ours", {"a1": (0.9, 12.0), "a2": (0.7, 30.0)}),
    run_row("base", {"a1": (0.8, 11.0), "a2": (0.7, 20.0)}),
    # fold B (case b1; NaN HD95 is skipped)
    run_row("ours", {"b1": (0.5, float("nan"))}),
    run_row("base", {"b1": (0.6, 5.0)}),
]


def test_folds_are_named_by_their_validation_cases(tool):
    by_fold = tool.summarize_by_fold(ROWS, ["dice_wt"])
    assert set(by_fold) == {"a1+a2", "b1"}
    assert by_fold["a1+a2"]["ours"]["n"] == 2
    assert by_fold["a1+a2"]["ours"]["dice_wt"]["mean"] == pytest.approx(0.75)
    assert by_fold["b1"]["base"]["dice_wt"]["values"] == [0.6]


def test_cases_are_averaged_over_seeds_then_paired(tool):
    paired = tool.paired_with_baseline(ROWS, ["dice_wt", "hd95_wt"], "base")
    dice = paired["ours"]["dice_wt"]
    # per-case seed means: a1 0.85, a2 0.65, b1 0.5 -> 2/3; baseline 0.8, 0.7, 0.6 -> 0.7
    assert paired["ours"]["cases"] == 3
    assert dice["mean"] == pytest.approx(2.0 / 3.0)
    assert dice["baseline"] == pytest.approx(0.7)
    assert dice["diff"] == pytest.approx(2.0 / 3.0 - 0.7)
    assert dice["wins"] == "1/3"  # only a1 is at least as good
    hd = paired["ours"]["hd95_wt"]
    # b1 has no finite HD95 for ours: two cases pair; lower is better (a1 11 vs 11, a2 25 vs 20)
    assert hd["wins"] == "1/2"
    assert hd["diff"] == pytest.approx(((11 - 11) + (25 - 20)) / 2)
    assert "diff" not in paired["base"]["dice_wt"]


def test_cli_writes_both_tables(tmp_path: Path):
    src = tmp_path / "rows.json"
    src.write_text(json.dumps(ROWS))
    out = tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, str(TOOL), str(src), "--keys", "dice_wt", "--baseline", "base",
                           "--json", str(out)], capture_output=True, text=True, check=True)
    assert "fold scored on a1+a2" in proc.stdout and "all folds" in proc.stdout
    summary = json.loads(out.read_text())
    assert summary["pooled"]["ours"]["dice_wt"]["wins"] == "1/3"
    assert summary["folds"]["b1"]["ours"]["dice_wt"]["mean"] == pytest.approx(0.5)
