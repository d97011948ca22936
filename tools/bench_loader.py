"""Is data loading the bottleneck? Loader throughput vs training-step throughput for a config.

    python tools/bench_loader.py configs/demo3d.yaml --batches 20
    python tools/bench_loader.py configs/brats_ag_unet.yaml data.num_workers=2 --json loader.json

Times (a) drawing batches from the training loader alone (after the cache is filled) and (b)
training steps (forward, loss, backward, optimiser step) on batches already in memory, and prints
both rates and their ratio. A ratio above 1 means the loader delivers faster than the step
consumes: it is not the bottleneck. Both run in one process, one after the other.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from seg.config import load_config
from seg.data.loaders import build_loaders
from seg.engine.optim import build_optimizer
from seg.losses import build_loss
from seg.models import create_model
from seg.models.factory import is_deep_supervised
from seg.table import format_table


def time_loader(loader, n: int) -> tuple[list[dict], list[float]]:
    batches, times = [], []
    it = iter(loader)
    while len(batches) < n:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        times.append(time.perf_counter() - t0)
        batches.append(batch)
    return batches, times


def time_steps(cfg, batches: list[dict]) -> list[float]:
    model = create_model(cfg)
    ds = is_deep_supervised(model)
    loss_fn = build_loss(cfg, ds)
    opt = build_optimizer(model, cfg.train)
    model.train()
    times = []
    for batch in batches:
        t0 = time.perf_counter()
        out = model(batch["image"])
        y = batch["label"].float()
        loss = loss_fn(out, y) if ds else loss_fn(out[0] if isinstance(out, list) else out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    t0 = time.perf_counter()
    loaders = build_loaders(cfg)
    setup = time.perf_counter() - t0
    batches, load_t = time_loader(loaders.train, args.batches)
    step_t = time_steps(cfg, batches)
    load_s, step_s = statistics.median(load_t[1:] or load_t), statistics.median(step_t[1:] or step_t)
    row = {"config": str(args.config), "workers": loaders.train.num_workers, "threads": torch.get_num_threads(),
           "setup_s": round(setup, 2), "batch_s": round(load_s, 4), "step_s": round(step_s, 4),
           "loader_to_step_ratio": round(step_s / max(load_s, 1e-9), 2)}
    print(format_table(list(row), [list(row.values())]))
    if args.json:
        args.json.write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
