"""Datasets and loaders: the datalist, split and pipelines of a config turned into MONAI loaders."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset
from torch.utils.data import RandomSampler

from seg.config import Config
from seg.data.datalist import build_datalist, check_datalist, split_datalist
from seg.data.transforms import train_transforms, val_transforms
from seg.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Loaders:
    """What training needs: a patch loader, the validation cases, and the split (for the run folder)."""

    train: DataLoader
    val: Dataset
    train_ids: list[str]
    val_ids: list[str]


def _dataset(items: list[dict], transform, cache: str, cache_dir: Path | None, workers: int) -> Dataset:
    if cache == "memory":
        return CacheDataset(items, transform=transform, cache_rate=1.0, num_workers=max(workers, 1),
                            progress=False)
    if cache == "disk" and cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        return PersistentDataset(items, transform=transform, cache_dir=cache_dir)
    return Dataset(items, transform=transform)


def build_loaders(cfg: Config, cache_dir: Path | None = None, seed: int = 0,
                  rank: int = 0, world_size: int = 1) -> Loaders:
    """Discover, check and split the cases, then build the training loader and the validation set.

    Each epoch draws ``iters_per_epoch * batch_size`` patches with replacement (nnU-Net style: the
    epoch length is a budget, not a pass over the cases). Under DDP every rank draws its own share.
    """
    items = build_datalist(cfg.data)
    check_datalist(items, cfg.data)
    train_items, val_items = split_datalist(items, cfg.data.split)
    if not train_items:
        raise ConfigError("the split leaves no training cases")
    log.info("%d training cases, %d validation cases", len(train_items), len(val_items))
    workers = cfg.data.num_workers
    train_ds = _dataset(train_items, train_transforms(cfg), cfg.data.cache,
                        cache_dir / "train" if cache_dir else None, workers)
    val_ds = _dataset(val_items, val_transforms(cfg), cfg.data.cache,
                      cache_dir / "val" if cache_dir else None, workers)
    gen = torch.Generator().manual_seed(seed * 1000 + rank)
    sampler = RandomSampler(train_ds, replacement=True, generator=gen,
                            num_samples=cfg.train.iters_per_epoch * cfg.train.batch_size)
    loader = DataLoader(train_ds, batch_size=cfg.train.batch_size, sampler=sampler, num_workers=workers,
                        persistent_workers=workers > 0, drop_last=True)
    return Loaders(train=loader, val=val_ds, train_ids=[str(i["id"]) for i in train_items],
                   val_ids=[str(i["id"]) for i in val_items])
