"""Installed size of seg's base install and of what each extra adds, from the environment it runs in.

Reads ``pyproject.toml``, resolves each requirement set to the distributions installed here (with their
dependencies, environment markers and extras honoured) and sums the files each distribution's RECORD
lists. An extra's figure is what it adds beyond the base install (packages shared with the base count
once, in the base). Run it in a venv where the extras are installed (``pip install -e ".[dev]"``); a
requirement that is not installed is listed as missing, not guessed.

    python tools/extras_sizes.py [--json sizes.json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, metadata.Distribution]:
    dists: dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions():
        dists.setdefault(canonical(dist.metadata["Name"]), dist)
    return dists


def dist_bytes(dist: metadata.Distribution) -> int:
    """Bytes of the files the distribution's RECORD lists (those present on disk)."""
    total = 0
    for file in dist.files or []:
        path = Path(dist.locate_file(file))
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


class Sizes(dict):
    """Bytes per distribution name, measured on first use."""

    def __init__(self, dists: dict[str, metadata.Distribution]) -> None:
        super().__init__()
        self.dists = dists

    def __missing__(self, name: str) -> int:
        self[name] = dist_bytes(self.dists[name])
        return self[name]


def closure(requirements: Iterable[str], dists: dict[str, metadata.Distribution],
            missing: set[str]) -> set[str]:
    """The installed distributions the requirements pull in, transitively."""
    seen: set[str] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonical(req.name)
        if name not in dists:
            missing.add(name)
            continue
        for wanted in [""] + sorted(req.extras):
            key = f"{name}[{wanted}]"
            if key in seen:
                continue
            seen.add(key)
            todo.extend((Requirement(r), wanted) for r in dists[name].requires or [])
    return {key.split("[")[0] for key in seen}


def measure(pyproject: Path) -> dict:
    project = tomllib.loads(pyproject.read_text())["project"]
    dists = installed()
    sizes = Sizes(dists)
    rows, missing_all = [], {}
    missing: set[str] = set()
    base = closure(project["dependencies"], dists, missing)
    rows.append({"install": "base", "packages": len(base), "mb": sum(sizes[n] for n in base) / 1e6,
                 "largest": largest(base, sizes)})
    missing_all["base"] = sorted(missing)
    torch = closure(["torch"], dists, set()) & base
    rows.append({"install": "  of which torch", "packages": len(torch), "mb": sum(sizes[n] for n in torch) / 1e6,
                 "largest": largest(torch, sizes)})
    for extra, reqs in project.get("optional-dependencies", {}).items():
        missing = set()
        added = closure(reqs, dists, missing) - base
        rows.append({"install": f"[{extra}]", "packages": len(added), "mb": sum(sizes[n] for n in added) / 1e6,
                     "largest": largest(added, sizes)})
        missing_all[f"[{extra}]"] = sorted(missing)
    return {"python": sys.version.split()[0], "rows": rows, "missing": missing_all}


def largest(names: set[str], sizes: Sizes, count: int = 3) -> str:
    top = sorted(names, key=lambda n: -sizes[n])[:count]
    return ", ".join(f"{n} {sizes[n] / 1e6:.0f}" for n in top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=REPO / "pyproject.toml")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    result = measure(args.pyproject)
    print(f"{'install':<16} {'packages':>8} {'MB':>8}  largest (MB)")
    for row in result["rows"]:
        print(f"{row['install']:<16} {row['packages']:>8} {row['mb']:>8.1f}  {row['largest']}")
    for install, names in result["missing"].items():
        if names:
            print(f"{install}: not installed here, not counted: {', '.join(names)}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
