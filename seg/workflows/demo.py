"""``seg demo``: every journey on built-in synthetic data, in a few minutes on a CPU.

synthetic dataset (nnU-Net layout on disk) -> ``fit`` -> ``predict_folder`` with the torch backend
-> ``export_bundle`` -> ``predict_folder`` with the ONNX backend (onnxruntime) on the same folder ->
Dice of both against the ground truth and their voxel agreement.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seg.config import Config, load_config
from seg.metrics import nanmean
from seg.table import format_table, wrap_lines

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class DemoResult:
    """Per-case scores of the torch and onnxruntime predictions.

    ``rows``: ``[case, mean fg Dice torch, mean fg Dice onnxruntime, voxel agreement]``, the Dice being
    the mean over the foreground ``classes`` (a class absent from prediction and reference left out).
    """

    rows: list[list] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)

    def mean(self, column: int) -> float:
        return nanmean([r[column] for r in self.rows])

    def table(self) -> str:
        rows = [*self.rows, ["mean", self.mean(1), self.mean(2), self.mean(3)]]
        timing = ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        headers = ["case", "mean fg Dice torch", "mean fg Dice onnxruntime", "voxel agreement"]
        notes = (f"mean fg Dice: the mean of the Dice of the foreground classes ({', '.join(self.classes)}); "
                 "voxel agreement: the share of voxels where torch and onnxruntime give the same label")
        return "\n".join([format_table(headers, rows), *wrap_lines(notes), f"time: {timing}"])


def demo_config(out: Path, dims: int, overrides: list[str] | None = None) -> Config:
    path = CONFIG_DIR / f"demo{dims}d.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run seg demo from a source checkout (pip install -e .)")
    base = [f"data.root={(out / 'data').resolve()}", f"output_dir={(out / 'runs').resolve()}"]
    return load_config(path, base + list(overrides or []))


def _train(cfg: Config) -> Path:
    from seg.engine.fit import default_run_dir, fit

    run_dir = default_run_dir(cfg)
    if run_dir.exists():  # the demo always starts from scratch: its folder is its own
        shutil.rmtree(run_dir)
    fit(cfg, run_dir)
    return run_dir


def _score(cfg: Config, data_root: Path, torch_dir: Path, onnx_dir: Path) -> list[list]:
    from seg.evaluation import label_files, load_labels
    from seg.metrics import dice_scores

    refs = label_files(data_root / "labelsTs")
    torch_preds, onnx_preds = label_files(torch_dir), label_files(onnx_dir)
    rows = []
    for cid, ref_path in refs.items():
        ref = load_labels(ref_path)
        a, b = load_labels(torch_preds[cid]), load_labels(onnx_preds[cid])
        labels = cfg.data.labels
        d_torch = nanmean(list(dice_scores(a, ref, labels).values()))
        d_onnx = nanmean(list(dice_scores(b, ref, labels).values()))
        rows.append([cid, d_torch, d_onnx, float(np.mean(a == b))])
    return rows


def run_demo(out: Path, dims: int = 3, overrides: list[str] | None = None) -> DemoResult:
    """Run the whole pipeline into ``out`` and return the score table."""
    from seg.data.datalist import build_datalist
    from seg.export_onnx import export_bundle
    from seg.inference import load_backend
    from seg_runtime.options import PredictOptions
    from seg_runtime.predict import predict_folder
    from seg_runtime.session import OnnxBackend

    out = Path(out)
    cfg = demo_config(out, dims, overrides)
    result = DemoResult()
    t0 = time.perf_counter()
    build_datalist(cfg.data)  # writes the synthetic dataset on first use
    run_dir = _train(cfg)
    result.seconds["train"] = time.perf_counter() - t0
    test_images = Path(cfg.data.root) / "imagesTs"
    options = PredictOptions(overwrite=True, progress=False)
    t0 = time.perf_counter()
    predict_folder(test_images, out / "pred_torch", load_backend(run_dir), options)
    result.seconds["predict"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    export_bundle(run_dir, out / "bundle")
    result.seconds["export"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    predict_folder(test_images, out / "pred_onnx", OnnxBackend(out / "bundle", provider="cpu"), options)
    result.seconds["deploy"] = time.perf_counter() - t0
    result.rows = _score(cfg, Path(cfg.data.root), out / "pred_torch", out / "pred_onnx")
    result.classes = [name for name, index in cfg.data.labels.items() if index != 0]
    return result
