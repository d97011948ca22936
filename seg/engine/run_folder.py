"""The run folder: resolved config, checkpoints, metrics (JSONL + TensorBoard), curves PNG, log."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from seg.config import Config, save_config
from seg.engine.curves import plot_curves, read_metrics
from seg_runtime.atomic import atomic_write_text

log = logging.getLogger(__name__)


TENSORBOARD_HINT = "pip install tensorboard, or the [dev] extra"


def open_tensorboard(folder: Path) -> tuple[Any, str]:
    """A TensorBoard ``SummaryWriter`` on ``folder``, or None and why not (TensorBoard is optional).

    Args:
        folder: the event folder (created by the writer).

    Returns:
        ``(writer, "")``, or ``(None, reason)`` when tensorboard is not installed or fails to start.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None, f"tensorboard is not installed: {TENSORBOARD_HINT}"
    try:
        return SummaryWriter(str(folder)), ""
    except Exception as exc:  # a broken install must not stop training; the log says why
        return None, f"tensorboard failed to start: {exc}"


class RunFolder:
    """Owns the files of one training run.

    Layout: ``config.yaml`` (resolved), ``last.pt``, ``best.pt``, ``metrics.jsonl`` (one JSON
    object per epoch), ``curves.png``, ``train.log``, ``tb/`` (TensorBoard event files, when tensorboard is
    installed; ``train.log`` says whether they were written and, if not, why).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._tb = None
        self._handler: logging.Handler | None = None

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    def write_config(self, cfg: Config) -> None:
        save_config(cfg, self.path / "config.yaml")

    def start_logging(self) -> None:
        self._handler = logging.FileHandler(self.path / "train.log")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("seg").addHandler(self._handler)
        self._tb, reason = open_tensorboard(self.path / "tb")
        if self._tb is not None:
            log.info("TensorBoard events: %s (tensorboard --logdir %s)", self.path / "tb", self.path / "tb")
        else:
            log.info("TensorBoard events: not written (%s)", reason)

    def stop_logging(self) -> None:
        if self._handler is not None:
            logging.getLogger("seg").removeHandler(self._handler)
            self._handler.close()
            self._handler = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def read_metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.metrics_file)

    def truncate_metrics(self, epochs_done: int) -> None:
        """On resume, drop records of epochs after the checkpoint (they will be redone)."""
        rows = [r for r in self.read_metrics() if r.get("epoch", 0) <= epochs_done]
        atomic_write_text(self.metrics_file, "".join(json.dumps(r) + "\n" for r in rows))

    def log_epoch(self, record: dict[str, Any]) -> None:
        """Append one epoch's record; a non-finite number is written as null (strict JSON, no bare NaN)."""
        clean = {k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in record.items()}
        with open(self.metrics_file, "a") as fh:
            fh.write(json.dumps(clean, allow_nan=False) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "epoch" and math.isfinite(value):  # null: skipped
                    self._tb.add_scalar(key, value, record["epoch"])
            self._tb.flush()
        self.plot_curves()

    def plot_curves(self) -> None:
        """Loss and validation Dice against epoch, as ``curves.png``."""
        rows = self.read_metrics()
        if rows:
            plot_curves(self.path / "curves.png", {"train loss": rows})
