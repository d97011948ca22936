"""A complete, runnable config for a dataset folder under a stated budget (``seg plan DATASET -o cfg.yaml``).

Layout and metadata come from :mod:`seg.data.detect`, the fingerprint and the nnU-Net rules from
:mod:`seg.data.plan`; this module adds the budget (device, GPU memory, minutes of training) and the
table of statistics behind every choice.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from seg.config import apply_shell_overrides, config_from_dict, parse_override
from seg.data.datalist import build_datalist
from seg.data.detect import detect_data_config
from seg.data.plan import LOWRES_COVERAGE, fingerprint, propose_settings, voxel_budget
from seg.errors import ConfigError

logger = logging.getLogger(__name__)

# Assumed training throughput (patch voxels per second, forward + backward, ag_unet small with deep
# supervision) per device and spatial_dims, used to turn minutes into iterations; stated in the table
# so the user can rescale. CPU: measured on a 2-core VM (a small machine: more cores only make the
# plan err on the short side): 1.5e5 for batch 2 x 64^3 (BraTS, 3.5 s per iteration) and 2.9e5 for
# batch 8 x 256^2 (ISBI, 1.8 s per iteration).
THROUGHPUT = {"cpu": {3: 1.5e5, 2: 2.9e5}, "gpu": {3: 2.0e7, 2: 4.0e7}}
DEFAULT_MINUTES = {"cpu": 60.0, "gpu": 12 * 60.0}
BASE_MODEL_GB = 24.0  # a GPU with this much memory trains model.size=base
MAX_EPOCHS = 1000
MAX_FOLDS = 5
VALIDATIONS = 5  # full-volume validations per fold during training (the curves' points)
# Foreground this rare (share of all labelled voxels) gets more foreground-centred patches: a short
# budget otherwise spends most of its few hundred iterations on background.
RARE_FOREGROUND = 0.05
RARE_OVERSAMPLE = 0.66
# A short budget buys few optimiser steps. Below this many per fold the batch shrinks (same patches,
# more steps; never under BATCH_FLOOR): on ISBI at 800 patches per fold, batch 4 x 200 steps beat the
# memory's batch 8 x 100 (2-fold ensemble on held-out slices, raw Dice 0.809 vs 0.80; 2026-12-02).
MIN_STEPS = 200
BATCH_FLOOR = 2
# AdamW at the full learning rate from the first step can wreck a short schedule (Adam's second-moment
# estimates are poor early): the first epoch ramps the rate up linearly, where that epoch is at most
# this share of the schedule. BraTS, 300 steps per fold, pooled CV WT/TC/ET after post-processing,
# without -> with: seed 0 0.811/0.476/0.660 -> 0.810/0.465/0.703, seed 1 0.801/0.419/0.563 ->
# 0.803/0.480/0.678 (the hand-written BraTS config warms up too). ISBI's 4 epochs stay without.
MAX_WARMUP_SHARE = 0.2


@dataclass
class PlannedConfig:
    """The config (a plain dict, validated) and the rows of the table explaining it."""

    config: dict[str, Any]
    rows: list[list[str]] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def with_overrides(self, overrides: list[str]) -> PlannedConfig:
        """The plan with dotted ``KEY=VALUE`` overrides applied (as ``seg train`` applies them),
        validated, each one a row of the table ("set on the command line").

        Raises:
            ConfigError: an unknown key or a wrong type (the message names the key).
        """
        # A path typed on the command line is relative to the shell; the plan's own (``output_dir: .``
        # in seg auto's OUT) stays relative to the file it is written to.
        config = apply_shell_overrides(copy.deepcopy(self.config), list(overrides))
        config_from_dict(copy.deepcopy(config), "seg plan overrides")
        rows = [*self.rows, *([".".join(parse_override(o)[0]), str(parse_override(o)[1]),
                               "set on the command line"] for o in overrides)]
        return PlannedConfig(config, rows, self.fingerprint)

    def to_yaml(self) -> str:
        """The config as YAML, the table as a comment header."""
        head = ["# Written by `seg plan`: runnable as is (`seg train THIS.yaml`); every value may be edited.",
                *(f"#   {name}: {value}  ({why})" for name, value, why in self.rows)]
        return "\n".join(head) + "\n" + yaml.safe_dump(self.config, sort_keys=False, default_flow_style=None)


def plan_config(root: str | Path, *, device: str = "cpu", gpu_memory: float | None = None,
                time_budget: float | None = None, output_dir: str | Path = "runs",
                labels: dict[str, int] | None = None) -> PlannedConfig:
    """Detect, fingerprint and size a dataset into a full config.

    Args:
        root: the dataset folder.
        device: "cpu" or "gpu": the memory budget and the throughput assumed.
        gpu_memory: GB of GPU memory (scales the patch budget; >= 24 GB trains the base size).
        time_budget: minutes of training per fold (default 60 on CPU, 12 h on GPU).
        output_dir: the config's ``output_dir``.
        labels: class name -> value in the label files, background first (``--labels
            interior=255 membrane=0``): replaces the detected label map, e.g. for image folders
            whose value 0 is not the background. Detected regions are dropped with it.

    Raises:
        DataError: the folder has no recognisable layout or bad cases.
        ValueError: a bad budget.
    """
    if device not in THROUGHPUT:
        raise ConfigError(f"--device must be one of {sorted(THROUGHPUT)}, got {device!r}")
    minutes = DEFAULT_MINUTES[device] if time_budget is None else float(time_budget)
    if minutes <= 0:
        raise ConfigError(f"--time-budget must be positive (minutes), got {time_budget}")
    data = detect_data_config(root)
    if labels:
        data = with_labels(data, labels)
    items = build_datalist(data)
    fp = fingerprint(items, data)
    proposal = propose_settings(fp, data, memory_budget=device, gpu_memory=gpu_memory)
    patch, batch = proposal["train"]["patch_size"], proposal["train"]["batch_size"]
    batch = step_batch(minutes, THROUGHPUT[device][data.spatial_dims], patch, batch)
    epochs, iters = _schedule(minutes, THROUGHPUT[device][data.spatial_dims], patch, batch)
    share = foreground_share(fp)
    size = "base" if device == "gpu" and (gpu_memory or 0) >= BASE_MODEL_GB else "small"
    section = data.model_dump(exclude_defaults=True)
    section["root"] = str(Path(data.root))
    section.update(layout=data.layout, spatial_dims=data.spatial_dims, labels=dict(data.labels))
    section["split"] = {"folds": max(2, min(MAX_FOLDS, len(items))), "seed": 0}
    section["preprocess"] = proposal["data"]["preprocess"]
    config = {
        "name": Path(data.root).name,
        "seed": 0,
        "output_dir": str(output_dir),
        "data": section,
        "model": {"name": "ag_unet", "size": size},
        "train": {"epochs": epochs, "iters_per_epoch": iters, "batch_size": batch, "patch_size": patch,
                  # about five full-volume validations per fold: each costs time the budget does not count
                  "val_every": max(1, -(-epochs // VALIDATIONS)), "device": "cpu" if device == "cpu" else "auto"},
        # Mirroring TTA, nnU-Net's default: the CV validates with it, so post-processing is chosen on
        # what the ensemble deploys (ISBI's 2-fold ensemble, held-out slices, 3 seeds: 0.810 -> 0.817).
        "infer": {"tta": True},
    }
    if share is not None and share < RARE_FOREGROUND:
        config["train"]["foreground_oversample"] = RARE_OVERSAMPLE
    if 1 / epochs <= MAX_WARMUP_SHARE:
        config["train"]["warmup_epochs"] = 1
    config_from_dict(config, f"plan of {root}")  # never write a config that does not load
    rows = _rows(data, fp, proposal, device, gpu_memory, minutes, config["train"], size)
    return PlannedConfig(config, rows, fp)


def foreground_share(fp: dict[str, Any]) -> float | None:
    """Share of labelled voxels that are not background (None without labels)."""
    counts = list(fp["label_counts"].values())  # in class order: background (class 0) first
    total = sum(counts)
    return 1.0 - counts[0] / total if total else None


def with_labels(data: Any, labels: dict[str, int]) -> Any:
    """``data`` with the user's label map: class i is the i-th name, read from its file value."""
    if len(set(labels.values())) != len(labels):
        raise ConfigError(f"--labels: two classes share a file value ({labels})")
    if data.regions:
        logger.info("--labels given: the detected regions %s are dropped", sorted(data.regions))
    return data.model_copy(update={
        "labels": {name: index for index, name in enumerate(labels)},
        "label_values": {int(value): index for index, value in enumerate(labels.values())},
        "regions": {},
    })


def step_batch(minutes: float, throughput: float, patch: list[int], memory_batch: int) -> int:
    """The memory's batch, or a smaller one (>= BATCH_FLOOR) when the budget buys under MIN_STEPS steps."""
    patches = minutes * 60 * throughput / int(np.prod(patch))
    return int(np.clip(patches // MIN_STEPS, min(BATCH_FLOOR, memory_batch), memory_batch))


def _schedule(minutes: float, throughput: float, patch: list[int], batch: int) -> tuple[int, int]:
    """(epochs, iterations per epoch) that fill ``minutes`` at ``throughput`` patch voxels/s."""
    seconds_per_iter = batch * int(np.prod(patch)) / throughput
    total = max(2, int(minutes * 60 / seconds_per_iter))
    iters = 250 if total >= 250 * 20 else max(1, min(50, total // 2))
    return int(np.clip(total // iters, 1, MAX_EPOCHS)), iters


def _rows(data: Any, fp: dict[str, Any], proposal: dict[str, Any], device: str, gpu_memory: float | None,
          minutes: float, train_section: dict[str, Any], size: str) -> list[list[str]]:
    cases = fp["cases"]
    spacing = np.median([c["spacing"] for c in cases], axis=0)
    shape = np.median([c["shape"] for c in cases], axis=0)
    pre, train = proposal["data"]["preprocess"], proposal["train"]
    budget = voxel_budget(device, data.spatial_dims, gpu_memory)[0]
    memory = f", {gpu_memory:g} GB" if gpu_memory else ""
    epochs, iters = train_section["epochs"], train_section["iters_per_epoch"]
    total = max(sum(fp["label_counts"].values()), 1)
    share = ", ".join(f"{k} {100 * v / total:.2g}%" for k, v in fp["label_counts"].items())
    rows = [
        ["layout", data.layout, f"{len(cases)} cases in {data.root.name}/"],
        ["spatial_dims", str(data.spatial_dims), f"median shape {[int(s) for s in shape]}"],
        ["labels", str(dict(data.labels)), f"voxels per class: {share}"],
        ["target_spacing", str(pre["target_spacing"]), _spacing_reason(spacing, proposal["stats"])],
        ["patch_size", str(train["patch_size"]), f"{device} budget {budget} voxels{memory}"],
        ["batch_size", str(train_section["batch_size"]),
         "budget / patch voxels, within the device's range" if train_section["batch_size"] == train["batch_size"]
         else f"memory allows {train['batch_size']}; smaller for at least {MIN_STEPS} optimiser steps per fold"],
    ]
    for name, norm, stats in zip(fp["channels"], pre["normalization"], fp["intensity"], strict=True):
        rows.append([f"normalization {name}", norm["scheme"] + (" nonzero" if norm.get("nonzero") else ""),
                     f"off-background mean {stats['body_mean']:.3g} std {stats['body_std']:.3g}, "
                     f"p0.5-p99.5 {stats['p00_5']:.4g}..{stats['p99_5']:.4g}, "
                     f"zeros {100 * stats['zero_fraction']:.0f}%, integer {stats['integer_valued']}"])
    rows += [
        ["model", f"ag_unet {size}", f"{device}{memory}"],
        _oversample_row(foreground_share(fp), train_section.get("foreground_oversample")),
        _sampling_row(fp["label_counts"], train_section.get("foreground_sampling")),
        ["epochs x iters", f"{epochs} x {iters}",
         f"{minutes:g} min per fold at an assumed {THROUGHPUT[device][data.spatial_dims]:.2g} patch voxels/s "
         f"({epochs * iters * train_section['batch_size']} patches)"],
        _warmup_row(train_section),
        ["infer.tta", "on", f"mirroring over the {data.spatial_dims} axes, nnU-Net's default: CV and deploy "
         f"average {2 ** data.spatial_dims} passes per patch (--no-tta at predict time: {2 ** data.spatial_dims}x faster)"],
    ]
    return rows


def _warmup_row(train_section: dict[str, Any]) -> list[str]:
    """Why the plan warms the learning rate up for an epoch, or does not."""
    epochs, iters = train_section["epochs"], train_section["iters_per_epoch"]
    if train_section.get("warmup_epochs"):
        return ["warmup_epochs", "1", f"linear LR ramp over the first {iters} of {epochs * iters} steps"]
    return ["warmup_epochs", "0", f"one epoch would be {100 / epochs:.0f}% of the schedule "
            f"(over {100 * MAX_WARMUP_SHARE:.0f}%)"]


def _sampling_row(counts: dict[str, int], planned: str | None) -> list[str]:
    """Why foreground-centred patches draw a voxel (the default) or a class first (never planned yet).

    Class-first draws (nnU-Net's rule, ``train.foreground_sampling: classes``) were measured on
    BraTS, 4 classes of 0.21-0.95% of the voxels, 2-fold CV over 3 seeds, against the same plan
    with voxel draws: WT -0.012, TC +0.008, ET -0.020 (docs/benchmarks/2026-12-05). Not planned.
    """
    foreground = {name: n for name, n in list(counts.items())[1:]}  # class order: background first
    value = "classes" if planned == "classes" else "voxels (default)"
    if len(foreground) < 2:
        return ["foreground_sampling", value, f"{len(foreground)} foreground class"]
    rare, common = min(foreground, key=foreground.get), max(foreground, key=foreground.get)
    spread = (f"{common} has {foreground[common] / foreground[rare]:.3g}x the voxels of {rare}" if foreground[rare]
              else f"{rare} has no voxels")
    return ["foreground_sampling", value, f"{len(foreground)} foreground classes, {spread}; class-first draws "
            "(nnU-Net) did not pay on BraTS (WT -0.012, TC +0.008, ET -0.020 over 3 seeds), so a voxel is drawn"]


def _oversample_row(share: float | None, planned: float | None) -> list[str]:
    """Why the plan sets (``planned``) or leaves (None) ``train.foreground_oversample``."""
    if share is None:
        return ["foreground_oversample", "default", "no labels counted"]
    return ["foreground_oversample", "default (0.5)" if planned is None else str(planned),
            f"foreground is {100 * share:.2g}% of the voxels"
            + ("" if planned is None else f", under {100 * RARE_FOREGROUND:.0f}%")]


def _spacing_reason(spacing: np.ndarray, stats: dict[str, Any]) -> str:
    median = f"median spacing {[float(f'{s:.4g}') for s in spacing]}"
    if not stats["lowres"]:
        return median
    return (f"{median}; coarsened from {stats['full_resolution_spacing']} so the patch covers "
            f"{100 * stats['patch_coverage']:.0f}% of the median image {stats['median_shape']} "
            f"(nnU-Net's 3d_lowres rule, at least {100 * LOWRES_COVERAGE:.0f}%)")
