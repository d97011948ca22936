"""Training curves as a PNG, written once for a run folder (``curves.png``) and for CV / ``seg auto``.

Left: training loss per epoch; right: validation Dice per epoch (0 to 1). One line per run and
Dice key, read from the runs' ``metrics.jsonl`` rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from seg_runtime.atomic import atomic_path


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` (none when it does not exist)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(path: Path, runs: Mapping[str, Sequence[dict[str, Any]]], dice_keys: Sequence[str] | None = None) -> None:
    """Plot the loss and Dice curves of ``runs`` (label -> metrics rows) into ``path``, atomically.

    Args:
        path: The PNG to write.
        runs: One entry per run; its label names the run's lines when there are several runs.
        dice_keys: The Dice keys to draw (default: every ``val_dice_*`` key in the rows).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows_all = [r for rows in runs.values() for r in rows]
    keys = list(dice_keys) if dice_keys is not None else sorted({k for r in rows_all for k in r if k.startswith("val_dice")})
    fig, (loss_ax, dice_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for label, rows in runs.items():
        loss_ax.plot([r["epoch"] for r in rows], [r["train_loss"] for r in rows], label=label)
        for key in keys:
            points = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
            name = key.removeprefix("val_") if len(runs) == 1 else label if len(keys) == 1 else f"{label} {key}"
            if points:
                dice_ax.plot(*zip(*points), marker="o", label=name)
    loss_ax.set(xlabel="epoch", ylabel="training loss")
    dice_ax.set(xlabel="epoch", ylabel="validation Dice", ylim=(0, 1))
    loss_ax.legend(fontsize=7)
    if keys:
        dice_ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
