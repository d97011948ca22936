"""tools/bench_train_scale.py: the synthetic datasets it trains on, and measure()'s result shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from seg.config import DataConfig
from seg.data.datalist import build_datalist
from tests.tools.helpers import load_tool


@pytest.fixture(scope="module")
def tool():
    return load_tool("bench_train_scale")


def test_datasets_reuse_a_small_pool_of_phantoms(tool, tmp_path: Path) -> None:
    pool = tool.write_pool(tmp_path / "pool", size=2)
    root = tool.write_dataset(tmp_path / "cases", 5, pool)
    data = DataConfig(layout="nnunet", root=root, labels={"background": 0, "lesion": 1, "organ": 2})
    items = build_datalist(data)
    assert [c["id"] for c in items] == [f"case{i:04d}" for i in range(5)]
    assert Path(items[2]["image"][0]).stat().st_ino == pool[0][0].stat().st_ino  # linked, not copied


@pytest.mark.slow
def test_measure_reports_every_count(tool) -> None:
    result = tool.measure([4, 8], quick=True)
    for key in ("train_peak_rss_mb", "loader_batch_s", "step_s"):
        assert set(result[key]) == {"4", "8"} and all(v >= 0 for v in result[key].values())
    assert result["train_peak_rss_mb"]["4"] > 100
