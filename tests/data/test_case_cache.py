"""The on-disk case cache: written once, invalidated per case, never trusts a torn entry, and cuts
the same patches from its memory maps as the in-memory cache does."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import CacheDataset

from seg.config import Config
from seg.data.case_cache import CaseCache, dataset_cache_dir
from seg.data.datalist import build_datalist
from seg.data.loaders import MmapPatchDataset, build_loaders, resolve_workers
from seg.data.patches import RandPatchCropd, crop_padded
from seg.data.transforms import train_random_transforms, train_transforms
from seg.engine.fit import fit
from tests.conftest import tiny_config


@pytest.fixture
def cached(tiny3d: Config) -> tuple[CaseCache, list[dict]]:
    items = build_datalist(tiny3d.data)[:3]
    cache = CaseCache(dataset_cache_dir(tiny3d), tiny3d.data)
    assert cache.ensure(items, progress=False) == 3
    return cache, items


def _mtimes(cache: CaseCache, items: list[dict]) -> list[int]:
    return [(cache.entry(it) / "image.npy").stat().st_mtime_ns for it in items]


def test_second_build_reads_without_preprocessing(cached: tuple[CaseCache, list[dict]]) -> None:
    cache, items = cached
    before = _mtimes(cache, items)
    assert CaseCache(cache.root, cache.data).ensure(items, progress=False) == 0
    assert _mtimes(cache, items) == before
    case = cache.load(items[0])
    assert isinstance(case["image"], np.memmap) and case["image"].dtype == np.float32
    assert case["label"].dtype == np.uint8 and case["label"].shape[1:] == case["image"].shape[1:]
    assert len(case["fg_locations"]) > 0 and not list(cache.root.glob(".tmp-*"))


def test_changed_file_redoes_that_case_only(cached: tuple[CaseCache, list[dict]]) -> None:
    cache, items = cached
    before = _mtimes(cache, items)
    st = os.stat(items[1]["label"])
    os.utime(items[1]["label"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cache.ensure(items, progress=False) == 1
    after = _mtimes(cache, items)
    assert after[0] == before[0] and after[2] == before[2] and after[1] != before[1]


def test_changed_preprocessing_gets_its_own_cache(tiny3d: Config) -> None:
    other = tiny3d.model_copy(deep=True)
    other.data.preprocess.target_spacing = [2.0, 2.0, 2.0]
    assert dataset_cache_dir(other) != dataset_cache_dir(tiny3d)
    items = build_datalist(tiny3d.data)[:1]
    a, b = CaseCache(dataset_cache_dir(tiny3d), tiny3d.data), CaseCache(dataset_cache_dir(other), other.data)
    assert a.ensure(items, progress=False) == 1 and b.ensure(items, progress=False) == 1
    assert a.load(items[0])["image"].shape != b.load(items[0])["image"].shape
    other.data.cache_dir = tiny3d.output_dir / "elsewhere"
    assert dataset_cache_dir(other).parent == tiny3d.output_dir / "elsewhere"


@pytest.mark.parametrize("damage", ["truncate_image", "torn_meta", "missing_label"])
def test_torn_entry_is_redone_not_trusted(cached: tuple[CaseCache, list[dict]], damage: str) -> None:
    cache, items = cached
    entry = cache.entry(items[0])
    good = np.load(entry / "image.npy")
    if damage == "truncate_image":
        with open(entry / "image.npy", "r+b") as f:
            f.truncate(os.path.getsize(entry / "image.npy") // 2)
    elif damage == "torn_meta":
        (entry / "meta.json").write_text('{"key": "')
    else:
        (entry / "label.npy").unlink()
    assert cache.read_meta(items[0]) is None
    assert cache.ensure(items, progress=False) == 1
    np.testing.assert_array_equal(np.load(entry / "image.npy"), good)


def test_crop_padded_reads_inside_and_pads_outside() -> None:
    a = np.arange(2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5)
    out = crop_padded(a, [-1, 3], [3, 4])
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out[:, 1:, :2], a[:, 0:2, 3:5])
    assert not out[:, 0].any() and not out[:, :, 2:].any()
    crop = RandPatchCropd([6, 6], 1.0).set_random_state(0)
    assert crop.patch_start([4, 5], np.zeros((0, 2), np.int32))[0] == -1  # 4 voxels centred in 6


def test_mmap_patches_equal_in_memory_patches(tiny3d: Config) -> None:
    items = build_datalist(tiny3d.data)[:3]
    cache = CaseCache(dataset_cache_dir(tiny3d), tiny3d.data)
    cache.ensure(items, progress=False)
    memory = CacheDataset(items, transform=train_transforms(tiny3d), progress=False)
    disk = MmapPatchDataset(items, cache, train_random_transforms(tiny3d))
    for ds in (memory, disk):
        ds.transform.set_random_state(seed=7)
    for i in [0, 1, 2, 0, 2, 1, 1, 0]:  # augmentation included: same draws, same voxels
        a, b = memory[i], disk[i]
        assert a["image"].shape == (1, 32, 32, 32)
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_fit_runs_with_the_disk_cache(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, 3, "data.cache=disk", "train.epochs=1")
    result = fit(cfg, progress=False)
    assert (result.run_dir / "last.pt").is_file()
    root = dataset_cache_dir(cfg)
    assert root.parent == cfg.output_dir / ".cache" and len(list(root.glob("*/image.npy"))) == 8
    loaders = build_loaders(cfg)
    assert isinstance(loaders.train.dataset, MmapPatchDataset)
    case = loaders.val[0]
    assert case["image"].ndim == 4 and case["label"].shape[1:] == case["image"].shape[1:]


def test_auto_workers_leave_small_machines_single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for cores, expected in ((2, 0), (4, 2), (16, 8)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert resolve_workers("auto") == expected
    assert resolve_workers(3) == 3


def test_leftovers_of_a_killed_build_are_swept(cached: tuple[CaseCache, list[dict]]) -> None:
    cache, items = cached
    old, fresh = cache.root / ".tmp-synth_000-1-dead", cache.root / ".tmp-synth_001-2-live"
    for folder in (old, fresh):
        folder.mkdir()
        (folder / "image.npy").write_bytes(b"\x93NUMPY")  # a half-written array
    os.utime(old, (0, 0))
    assert cache.ensure(items, progress=False) == 0
    assert not old.exists() and fresh.exists()  # a recent one may be another rank's entry in the making
