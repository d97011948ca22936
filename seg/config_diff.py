"""What differs between a run's stored config and the one it is resumed with (dotted keys, old -> new)."""

from __future__ import annotations

from typing import Any

from seg.config import config_from_dict
from seg.errors import ConfigError

# Settings a run may change when it resumes (seg train --resume, a half-trained or finished fold):
# epochs may grow (resume extends them), the parent folder may move, and how data is cached, where it
# runs and how it predicts do not change what was trained. Any other difference is refused, named.
IGNORED_KEYS = ("train.epochs", "output_dir", "data.cache", "data.num_workers", "train.device")
IGNORED_PREFIXES = ("infer.", "export.")


def config_changes(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every training setting that differs (dotted keys).

    A setting the stored config predates (a key added to seg since) counts as its default, which is
    what that run trained with.
    """
    try:
        stored = config_from_dict(stored, "stored config").to_dict()
    except ConfigError:  # a key since removed: compare as stored, the difference is then named
        pass
    old, new = _flatten(stored), _flatten(current)
    keys = sorted(k for k in set(old) | set(new) if k not in IGNORED_KEYS and not k.startswith(IGNORED_PREFIXES)
                  and old.get(k) != new.get(k))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
