"""Datasets and loaders: the datalist, split and pipelines of a config turned into MONAI loaders."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from monai.data import CacheDataset, DataLoader, Dataset
from monai.transforms import Compose, EnsureTyped, apply_transform
from torch.utils.data import RandomSampler

from seg.config import Config
from seg.data.case_cache import CaseCache, CheckRecord, dataset_cache_dir
from seg.data.check import check_datalist
from seg.data.datalist import build_datalist, split_datalist
from seg.data.patches import FG_KEY
from seg.data.transforms import train_random_transforms, train_transforms, val_transforms
from seg.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Loaders:
    """What training needs: a patch loader, the validation cases, and the split (for the run folder)."""

    train: DataLoader
    val: Dataset
    train_ids: list[str]
    val_ids: list[str]


class MmapPatchDataset(Dataset):
    """Training cases from the disk cache: each draw memory-maps its case and cuts one patch.

    The maps live only for one draw, so a process holds the pages of the patches it is cutting,
    never a growing set of cases.
    """

    def __init__(self, items: list[dict], cache: CaseCache, transform: Compose) -> None:
        super().__init__(items, transform=transform)
        self.cache = cache

    def _transform(self, index: int):
        return apply_transform(self.transform, self.cache.load(self.data[index], mmap=True))


class CachedCaseDataset(Dataset):
    """Whole preprocessed cases from the disk cache, read one at a time (validation)."""

    def __init__(self, items: list[dict], cache: CaseCache) -> None:
        super().__init__(items, transform=EnsureTyped(["image", "label"], track_meta=False))
        self.cache = cache

    def _transform(self, index: int):
        case = self.cache.load(self.data[index], mmap=False)
        case.pop(FG_KEY)
        return apply_transform(self.transform, case)


def _dataset(items: list[dict], transform, cache: str, workers: int) -> Dataset:
    if cache == "memory":
        return CacheDataset(items, transform=transform, cache_rate=1.0, num_workers=max(workers, 1),
                            progress=False)
    return Dataset(items, transform=transform)


def resolve_workers(num_workers: int | str) -> int:
    """``data.num_workers``: an int, or ``auto``: none below 4 CPU cores (a loader process would only
    take a core from the step), else one per core beyond two (kept for the step), at most 8."""
    if num_workers != "auto":
        return int(num_workers)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cores < 4 else min(8, cores - 2)


def build_loaders(cfg: Config, cache_dir: Path | None = None, seed: int = 0, rank: int = 0,
                  world_size: int = 1, barrier: Callable[[], None] | None = None) -> Loaders:
    """Discover, check and split the cases, then build the training loader and the validation set.

    Each epoch draws ``iters_per_epoch * batch_size`` patches with replacement (nnU-Net style: the
    epoch length is a budget, not a pass over the cases). Under DDP every rank draws its own share.

    ``data.cache``: ``disk`` (default) preprocesses every case once into the on-disk cache
    (``cache_dir``, default :func:`dataset_cache_dir`) and memory-maps it per patch, so memory does
    not grow with the number of cases; ``memory`` holds every preprocessed case in RAM; ``none``
    preprocesses on every draw. Under DDP (``barrier`` given) each rank writes its share of the
    cache, then all wait for each other.
    """
    items = build_datalist(cfg.data)
    # With the disk cache, the check is recorded beside it: a restart opens only new or changed cases.
    check_datalist(items, cfg.data, CheckRecord(cache_dir or dataset_cache_dir(cfg), cfg.data)
                   if cfg.data.cache == "disk" else None)
    train_items, val_items = split_datalist(items, cfg.data.split)
    if not train_items:
        raise ConfigError("the split leaves no training cases")
    log.info("%d training cases, %d validation cases", len(train_items), len(val_items))
    workers = resolve_workers(cfg.data.num_workers)
    if cfg.data.cache == "disk":
        cache = CaseCache(cache_dir or dataset_cache_dir(cfg), cfg.data)
        cache.ensure(train_items + val_items, rank, world_size, progress=rank == 0)
        if world_size > 1:
            if barrier is not None:
                barrier()  # every rank's share written ...
            cache.ensure(train_items + val_items, progress=False)  # ... and whatever a rank missed is written (atomic)
        train_ds: Dataset = MmapPatchDataset(train_items, cache, train_random_transforms(cfg))
        val_ds: Dataset = CachedCaseDataset(val_items, cache)
    else:
        train_ds = _dataset(train_items, train_transforms(cfg), cfg.data.cache, workers)
        val_ds = _dataset(val_items, val_transforms(cfg), cfg.data.cache, workers)
    gen = torch.Generator().manual_seed(seed * 1000 + rank)
    sampler = RandomSampler(train_ds, replacement=True, generator=gen,
                            num_samples=cfg.train.iters_per_epoch * cfg.train.batch_size)
    # Workers start afresh each epoch, seeded from `generator` (reseeded per epoch by the trainer):
    # persistent workers would carry their augmentation RNG across epochs and break exact resume.
    loader = DataLoader(train_ds, batch_size=cfg.train.batch_size, sampler=sampler, num_workers=workers,
                        persistent_workers=False, drop_last=True, prefetch_factor=4 if workers > 0 else None,
                        generator=torch.Generator().manual_seed(seed * 1000 + rank + 1))
    return Loaders(train=loader, val=val_ds, train_ids=[str(i["id"]) for i in train_items],
                   val_ids=[str(i["id"]) for i in val_items])
