"""The preprocessed on-disk case cache: written once, then read a patch at a time (nnU-Net style).

Each case runs the deterministic prefix once (read, channel-first, reorient, resample, normalise,
foreground locations) and is stored uncompressed, so training can memory-map it and page in only
the patch it cuts::

    <cache root>/<dataset hash>/<case>/image.npy   float32 [C, *S]
                                      label.npy   uint8 (int16 past 255 classes) [1, *S]
                                      fg.npy      int32 [K, D] foreground voxel locations
                                      meta.json   key, shapes, dtypes, byte sizes, spacing

The dataset hash covers the dataset root, its layout and every preprocessing setting, so another
preprocessing gets another folder. Inside, an entry records the key of what made it: its files'
paths, sizes and modification times plus the settings; a changed file re-preprocesses that case
only. Entries are written into a temporary folder and renamed into place, so a killed run leaves
no half entry under a real name (its temporary folders are swept after an hour) and the next run
resumes with the cases still missing. An entry is trusted only when its meta parses, its key
matches and every array file has the recorded size and ``.npy`` header; anything else (a
truncated file, a torn meta) is rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

import seg
from seg.config import Config, DataConfig
from seg.data.datalist import DataError, DataItem
from seg.data.patches import FG_KEY, MAX_FG_LOCATIONS, ForegroundLocationsd
from seg.data.transforms import LoadPreprocessd, preprocess_spec
from seg_runtime.atomic import STALE_AFTER_S, atomic_write_text, remove_stale, stage_dir

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the entry layout or the prefix's output changes
ARRAYS = {"image": "image.npy", "label": "label.npy", FG_KEY: "fg.npy"}


def cache_settings(data: DataConfig) -> dict[str, Any]:
    """Everything the cached arrays depend on besides the case's own files."""
    return {
        "format": CACHE_FORMAT, "seg": seg.__version__, "spatial_dims": data.spatial_dims,
        "in_channels": data.in_channels, "preprocess": dataclasses.asdict(preprocess_spec(data)),
        "label_values": {str(k): v for k, v in (data.label_values or {}).items()},
        "fg_locations": MAX_FG_LOCATIONS,
    }


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def dataset_cache_dir(cfg: Config) -> Path:
    """``data.cache_dir`` (default ``output_dir/.cache``) / hash of the dataset and its preprocessing."""
    base = Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else Path(cfg.output_dir) / ".cache"
    root = str(Path(cfg.data.root).expanduser().resolve()) if cfg.data.root else ""
    return base / _digest([root, cfg.data.layout, cache_settings(cfg.data)])[:16]


def case_key(item: DataItem, settings: dict[str, Any]) -> str:
    """Hash of the case's files (path, size, mtime) and the preprocessing settings."""
    files = [*item["image"], *([item["label"]] if item.get("label") else [])]
    stamps = []
    for path in files:
        try:
            st = os.stat(path)
        except OSError as err:
            raise DataError(f"{path}: cannot read case {item['id']} for the cache: {err.strerror}") from err
        stamps.append([str(path), st.st_size, st.st_mtime_ns])
    return _digest([stamps, settings])


def _entry_name(case_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", case_id).lstrip(".") or "case"
    return safe if safe == case_id else f"{safe}-{hashlib.sha1(case_id.encode()).hexdigest()[:8]}"


def _save_npy(path: Path, array: np.ndarray) -> int:
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    return path.stat().st_size


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckRecord:
    """The cases that passed :func:`seg.data.datalist.check_datalist`, by :func:`case_key`.

    Kept as ``checked.json`` in the dataset's cache folder, so a training start opens only the
    cases that are new or whose files changed (size or mtime) since they last passed: a stat per
    file instead of reading 1,000 CT volumes. A record that cannot be read counts as empty.
    """

    FILE = "checked.json"

    def __init__(self, root: Path, data: DataConfig) -> None:
        self.path = Path(root) / self.FILE
        self.settings = {"labels": data.labels, "label_values": data.label_values, "dims": data.spatial_dims,
                         "channels": len(data.channel_names)}
        try:
            keys = json.loads(self.path.read_text())
            self.keys: dict[str, str] = keys if isinstance(keys, dict) else {}
        except (OSError, ValueError):
            self.keys = {}

    def passed(self, item: DataItem) -> bool:
        try:
            return self.keys.get(item["id"]) == case_key(item, self.settings)
        except DataError:  # a file is gone: check it (and report it) again
            return False

    def mark(self, items: list[DataItem]) -> None:
        """Record ``items`` as passed (atomically; a failed write only costs a recheck next time)."""
        if not items:
            return
        for item in items:
            self.keys[item["id"]] = case_key(item, self.settings)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(self.keys))
        except OSError as err:
            log.warning("cannot record the data check in %s: %s", self.path, err)


class CaseCache:
    """One dataset's preprocessed cases on disk (see the module docstring)."""

    def __init__(self, root: Path, data: DataConfig) -> None:
        self.root = Path(root)
        self.data = data
        self.settings = cache_settings(data)
        self._prefix = LoadPreprocessd(data)
        self._locations = ForegroundLocationsd()

    def entry(self, item: DataItem) -> Path:
        return self.root / _entry_name(str(item["id"]))

    def read_meta(self, item: DataItem) -> dict[str, Any] | None:
        """The entry's meta when the entry is complete and matches the case's current key, else None."""
        folder = self.entry(item)
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if meta.get("key") != case_key(item, self.settings):
                return None
            for name, file in ARRAYS.items():
                spec = meta["arrays"][name]
                if (folder / file).stat().st_size != spec["bytes"]:
                    return None
                arr = np.load(folder / file, mmap_mode="r", allow_pickle=False)
                if list(arr.shape) != spec["shape"] or str(arr.dtype) != spec["dtype"]:
                    return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return meta

    def write(self, item: DataItem) -> Path:
        """Preprocess one case and install its entry atomically (replacing a stale one)."""
        key = case_key(item, self.settings)
        case = self._locations(self._prefix(dict(item)))
        label = np.asarray(case.get("label", np.zeros((1, *case["image"].shape[1:]), np.int16)))
        arrays = {"image": np.asarray(case["image"], np.float32),
                  "label": label.astype(np.uint8 if label.max(initial=0) < 256 else np.int16),
                  FG_KEY: np.asarray(case[FG_KEY], np.int32)}
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.entry(item)
        tmp = stage_dir(final)
        try:
            meta: dict[str, Any] = {"id": str(item["id"]), "key": key, "has_label": bool(item.get("label")),
                                    "spacing": self.settings["preprocess"].get("target_spacing"), "arrays": {}}
            for name, arr in arrays.items():
                size = _save_npy(tmp / ARRAYS[name], arr)
                meta["arrays"][name] = {"shape": list(arr.shape), "dtype": str(arr.dtype), "bytes": size}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            _fsync_dir(tmp)
            self._install(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    def _install(self, tmp: Path, final: Path) -> None:
        if final.exists():  # stale or torn: move it aside first, a directory rename needs a free name
            trash = final.with_name(f".trash-{final.name}-{secrets.token_hex(4)}")
            try:
                os.rename(final, trash)
            except FileNotFoundError:
                pass  # another process replaced it meanwhile
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not "another process installed it first": a real failure
                raise
        _fsync_dir(self.root)

    def ensure(self, items: list[DataItem], rank: int = 0, world_size: int = 1, progress: bool = True,
               threads: int = 4) -> int:
        """Write the entries missing or stale among this rank's share of ``items``.

        Ranks split the cases (``i % world_size == rank``), so under DDP every rank writes distinct
        entries; a rank that finds another's entry missing later simply writes it again (atomic).
        ``threads`` cases are preprocessed at a time (reading, fsync and most numpy work release
        the GIL); each thread holds one case.

        Returns:
            How many cases were preprocessed (0 when the cache was complete).
        """
        self._sweep()
        todo = [it for i, it in enumerate(items) if i % world_size == rank and self.read_meta(it) is None]
        if not todo:
            return 0
        log.info("preprocessing %d of %d cases into %s", len(todo), len(items), self.root)
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            jobs = [pool.submit(self.write, item) for item in todo]
            for job in tqdm(as_completed(jobs), total=len(jobs), desc="preprocessing cases",
                            disable=not progress or len(todo) < 2 or not sys.stderr.isatty(), leave=False,
                            dynamic_ncols=True):
                job.result()  # a case that cannot be read stops the build with its own error
        return len(todo)

    def _sweep(self, age_s: float = STALE_AFTER_S) -> None:
        """Remove what killed builds left (temporary and trash folders), once old enough not to be
        another rank's entry in the making."""
        remove_stale([*self.root.glob(".tmp-*"), *self.root.glob(".trash-*")], age_s)

    def load(self, item: DataItem, mmap: bool = True) -> dict[str, Any]:
        """The cached case: ``image``, ``label`` (memory-mapped read-only when ``mmap``), locations, id."""
        folder = self.entry(item)
        mode = "r" if mmap else None
        try:
            out: dict[str, Any] = {"id": item["id"],
                                   "image": np.load(folder / ARRAYS["image"], mmap_mode=mode, allow_pickle=False),
                                   "label": np.load(folder / ARRAYS["label"], mmap_mode=mode, allow_pickle=False),
                                   FG_KEY: np.load(folder / ARRAYS[FG_KEY], allow_pickle=False)}
        except (OSError, ValueError) as err:
            raise DataError(f"{folder}: cached case {item['id']} is unreadable ({err}); "
                            "delete the folder and train again to rebuild it") from err
        return out
