"""Mean and spread over seeds (and folds) of ``benchmark_shared.py`` results, one row per model.

Every row of the given JSON files is one trained model (any seed, any fold). Two tables:

- per model and fold (the fold is the set of validation cases a row was scored on): each metric
  as mean ± standard deviation over the runs, with the number of runs;
- per model over every scored case (only when rows come from more than one fold): each case's
  metric is first averaged over that model's seeds, then over the cases, so every case weighs the
  same whatever the number of seeds or folds. Against the baseline, the case-paired difference
  and how many cases the model scored at least as well on (for HD95: at most as far).

::

    python tools/summarize_shared.py docs/benchmarks/2026-11-23/shared_brats_regions_*.json
    python tools/summarize_shared.py FILES... --keys dice_membrane hd95_membrane --json summary.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from seg.table import format_table

DEFAULT_KEYS = ["dice_whole_tumour", "dice_tumour_core", "dice_enhancing_tumour", "hd95_whole_tumour"]


def fold_of(row: dict) -> str:
    """The fold a row was scored on, named by its validation case ids (sorted, ``+``-joined)."""
    return "+".join(sorted(str(case["id"]) for case in row.get("cases", [])))


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


def summarize_by_fold(rows: list[dict], keys: list[str]) -> dict[str, dict[str, dict]]:
    """:func:`summarize` within each fold: ``{fold: {model: stats}}``."""
    folds: dict[str, list[dict]] = {}
    for row in rows:
        folds.setdefault(fold_of(row), []).append(row)
    return {fold: summarize(group, keys) for fold, group in folds.items()}


def case_means(rows: list[dict], keys: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """``{model: {case id: {key: mean over that model's runs that scored the case}}}`` (NaN skipped)."""
    values: dict[str, dict[str, dict[str, list[float]]]] = {}
    for row in rows:
        for case in row.get("cases", []):
            per_key = values.setdefault(row["model"], {}).setdefault(str(case["id"]), {})
            for key in keys:
                value = case.get(key)
                if value is not None and np.isfinite(value):
                    per_key.setdefault(key, []).append(float(value))
    return {model: {cid: {k: float(np.mean(v)) for k, v in per_key.items()} for cid, per_key in cases.items()}
            for model, cases in values.items()}


def paired_with_baseline(rows: list[dict], keys: list[str], baseline: str) -> dict[str, dict]:
    """Per model, per key, over every case it and the baseline both scored.

    Returns ``{model: {"cases": n, key: {"mean", "baseline", "diff", "wins"}}}`` where ``mean`` and
    ``baseline`` average the per-case seed means, ``diff`` is their difference and ``wins`` counts
    the cases where the model is at least as good (higher Dice; lower for ``hd95_*`` keys).
    Without the baseline among the rows only ``mean`` is given.
    """
    means = case_means(rows, keys)
    base = means.get(baseline, {})
    out: dict[str, dict] = {}
    for model, cases in means.items():
        entry: dict = {"cases": len(cases)}
        for key in keys:
            ids = [c for c in cases if key in cases[c]]
            if not ids:
                continue
            stats: dict = {"mean": float(np.mean([cases[c][key] for c in ids]))}
            shared = [c for c in ids if key in base.get(c, {})]
            if base and model != baseline and shared:
                ours = np.array([cases[c][key] for c in shared])
                theirs = np.array([base[c][key] for c in shared])
                better = ours <= theirs if key.startswith("hd95") else ours >= theirs
                stats.update(mean=float(ours.mean()), baseline=float(theirs.mean()),
                             diff=float((ours - theirs).mean()), wins=f"{int(better.sum())}/{len(shared)}")
            entry[key] = stats
        out[model] = entry
    return out


def fold_table(summary: dict[str, dict], keys: list[str], baseline: str) -> str:
    base = summary.get(baseline)
    lines = []
    for model, stats in summary.items():
        cells = [model, str(stats["n"])]
        for key in keys:
            if key not in stats:
                cells.append("-")
                continue
            cell = f"{stats[key]['mean']:.3f} ± {stats[key]['std']:.3f}"
            if base and model != baseline and key in base:
                cell += f" ({stats[key]['mean'] - base[key]['mean']:+.3f})"
            cells.append(cell)
        lines.append(cells)
    return format_table(["model", "runs", *keys], lines)


def pooled_table(paired: dict[str, dict], keys: list[str]) -> str:
    lines = []
    for model, entry in paired.items():
        cells = [model, str(entry["cases"])]
        for key in keys:
            stats = entry.get(key)
            if stats is None:
                cells.append("-")
            elif "diff" in stats:
                cells.append(f"{stats['mean']:.3f} ({stats['diff']:+.3f}, {stats['wins']})")
            else:
                cells.append(f"{stats['mean']:.3f}")
        lines.append(cells)
    return format_table(["model", "cases", *keys], lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="JSON written by benchmark_shared.py --json")
    parser.add_argument("--keys", nargs="+", default=DEFAULT_KEYS, help="metrics to summarise")
    parser.add_argument("--baseline", default="monai_attention_unet", help="model the others are compared with")
    parser.add_argument("--json", type=Path, help="write the summary here")
    args = parser.parse_args()
    rows = [row for path in args.files for row in json.loads(path.read_text())]
    by_fold = summarize_by_fold(rows, args.keys)
    for fold, summary in by_fold.items():
        if len(by_fold) > 1:
            print(f"\nfold scored on {fold}")
        print(fold_table(summary, args.keys, args.baseline))
    print(f"(mean ± sd over runs; in brackets: mean minus {args.baseline}'s mean)")
    result: dict = next(iter(by_fold.values())) if len(by_fold) == 1 else {"folds": by_fold}
    if len(by_fold) > 1:
        paired = paired_with_baseline(rows, args.keys, args.baseline)
        print("\nall folds: per-case means over seeds, averaged over cases")
        print(pooled_table(paired, args.keys))
        print(f"(in brackets: case-paired difference to {args.baseline}, cases at least as good)")
        result["pooled"] = paired
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
