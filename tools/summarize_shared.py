"""Mean and spread over seeds of ``benchmark_shared.py`` results, one row per model.

Every row of the given JSON files is one trained model (any seed); rows are grouped by model and
each metric is reported as mean ± standard deviation over the group, with the number of runs:

    python tools/summarize_shared.py docs/benchmarks/2026-11-23/shared_brats_regions_*.json
    python tools/summarize_shared.py FILES... --keys dice_membrane hd95_membrane --json summary.json

With ``--baseline NAME`` the table also gives each model's mean minus the baseline's mean.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

DEFAULT_KEYS = ["dice_whole_tumour", "dice_tumour_core", "dice_enhancing_tumour", "hd95_whole_tumour"]


def summarize(rows: list[dict], keys: list[str]) -> dict[str, dict]:
    """Per model: ``n`` and, per key, ``mean``, ``std`` (population, over runs) and ``values``."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["model"], []).append(row)
    out: dict[str, dict] = {}
    for model, group in groups.items():
        stats: dict[str, dict] = {}
        for key in keys:
            values = [float(r[key]) for r in group if r.get(key) is not None]
            if values:
                stats[key] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values}
        out[model] = {"n": len(group), **stats}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="JSON written by benchmark_shared.py --json")
    parser.add_argument("--keys", nargs="+", default=DEFAULT_KEYS, help="metrics to summarise")
    parser.add_argument("--baseline", default="monai_attention_unet", help="model the others are compared with")
    parser.add_argument("--json", type=Path, help="write the summary here")
    args = parser.parse_args()
    rows = [row for path in args.files for row in json.loads(path.read_text())]
    summary = summarize(rows, args.keys)
    base = summary.get(args.baseline)
    header = ["model", "runs", *args.keys]
    lines = []
    for model, stats in summary.items():
        cells = [model, str(stats["n"])]
        for key in args.keys:
            if key not in stats:
                cells.append("-")
                continue
            cell = f"{stats[key]['mean']:.3f} ± {stats[key]['std']:.3f}"
            if base and model != args.baseline and key in base:
                cell += f" ({stats[key]['mean'] - base[key]['mean']:+.3f})"
            cells.append(cell)
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for cells in lines:
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
    if base:
        print(f"(in brackets: mean minus {args.baseline}'s mean)")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
