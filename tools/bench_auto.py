"""`seg auto` against the shipped hand-written configs at the same training budget (issue 13).

Runs both arms through the seg command line on the shared data (``../shared/data``), then prints
a table and writes ``--json``. Every step is resumable and skipped when its output is there, so a
rerun only tabulates.

- ``isbi`` (2D): the hand-written ``configs/isbi_ag_unet.yaml`` trains on slices 0-14 (20 epochs x
  20 iterations x batch 4 of 256², 1,600 patches). ``seg auto`` gets the same 15 slices as a plain
  ``images/`` + ``labels/`` folder, 2 folds, and a per-fold time budget that the planner turns into
  the same total patch voxels. Both are scored on slices 15-19 (membrane Dice), the ensemble and
  each fold alone. The hand-written run validates on slices 15-19 too, so its ``best.pt`` was chosen
  on the scored slices: the comparison uses its ``last.pt`` (as the CV folds do); the ``best.pt``
  row is printed beside it, marked, to show what that selection is worth, and a row with mirroring
  TTA (which ``seg auto`` plans on and the shipped config leaves off) compares equal inference.
- ``brats`` (3D, 4 cases): both arms run the same seeded 2-fold CV (``seg train --folds all``); the
  hand-written ``configs/brats_ag_unet.yaml`` at 15 epochs x 20 x batch 2 of 64³ per fold (600
  patches), ``seg auto`` with the per-fold budget the planner turns into 600 patches of 64³. Scored
  by each fold's CV table, pooled over the 4 cases (WT / TC / ET Dice); the hand-written folds are
  scored twice, as shipped and validated with mirroring TTA (as seg auto plans). Every case trains one fold,
  so the ensemble cannot be scored here without a leak.

    python tools/bench_auto.py isbi --out /tmp/bench --json isbi.json
    python tools/bench_auto.py isbi --out /tmp/bench --seeds 0 1 2 --json isbi_seeds.json
    python tools/bench_auto.py brats --out /tmp/bench --json brats.json
    python tools/bench_auto.py brats --out /tmp/bench --seeds 1 --json seed1.json   # one seed per process
    python tools/bench_auto.py brats --merge seed0.json seed1.json --json brats_seeds.json
    # a planner variant, seg auto only, beside an earlier run's arms (same seeds: runs are deterministic)
    python tools/bench_auto.py brats --out /tmp/bench --seeds 0 --auto-only --tag _classes \
        --set train.foreground_sampling=classes --json classes0.json
    python tools/bench_auto.py brats --merge brats_seeds.json classes0.json --json both.json

``--seeds`` repeats both arms with ``seed=N`` (initialisation, patch draws, augmentation; the CV split
stays seed 0) in ``OUT/seed<N>/`` and adds a summary: each arm's mean and standard deviation over
the seeds, and its seed-paired difference to the hand-written arm.

Training time is read from each run's metrics.jsonl (seconds per epoch); a machine busy with another
job inflates it, the scores are unaffected (budgets are iterations, not seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from seg.table import format_table  # noqa: E402

ISBI_TRAIN, ISBI_VAL = range(15), range(15, 20)
# Per-fold minutes at the planner's assumed CPU throughput that give the hand-written patch voxels:
# ISBI 1,600 x 256² in all = 2 folds x 100 iterations x batch 8; BraTS 600 x 64³ per fold.
ISBI_MINUTES, BRATS_MINUTES = 3.05, 17.5
BRATS_LABELS = ["background=0", "necrosis=1", "edema=2", "non_enhancing=3", "enhancing=4"]
BRATS_REGIONS = "data.regions={whole_tumour: [1, 2, 3, 4], tumour_core: [1, 3, 4], enhancing_tumour: [4]}"
REGION_KEYS = ["dice_whole_tumour", "dice_tumour_core", "dice_enhancing_tumour"]
HAND_ISBI = "hand-written isbi_ag_unet (last.pt)"
HAND_ISBI_BEST = "hand-written isbi_ag_unet (best.pt, chosen on the scored slices)"
HAND_ISBI_TTA = "hand-written isbi_ag_unet (last.pt) + mirroring TTA"


def seg(*args: str) -> None:
    """Run one seg command (the one installed beside this Python), echoing it; a failure stops the benchmark."""
    installed = Path(sys.executable).with_name("seg")
    print("+ seg " + " ".join(args), flush=True)
    started = time.perf_counter()
    subprocess.run([str(installed) if installed.exists() else "seg", *args], check=True)
    print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)


def train_seconds(run: Path) -> float:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return float(sum(r.get("seconds", 0.0) for r in rows))


def patches(run: Path) -> int:
    import yaml

    train = yaml.safe_load((run / "config.yaml").read_text())["train"]
    return int(train["epochs"] * train["iters_per_epoch"] * train["batch_size"])


def link_slices(src: Path, dst: Path, ids: range) -> Path:
    for sub in ("images", "labels"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
        for i in ids:
            link = dst / sub / f"{i}.png"
            if not link.exists():
                os.symlink(src / sub / f"{i}.png", link)
    return dst


def membrane_dice(pred: Path, ref: Path) -> float:
    seg("evaluate", "--pred", str(pred), "--ref", str(ref), "--config", str(REPO / "configs/isbi_ag_unet.yaml"),
        "--no-surface")
    return float(json.loads((pred / "evaluation.json").read_text())["mean"]["dice_membrane"])


def bench_isbi(out: Path, shared: Path, seed: int) -> dict:
    source = shared / "isbi2012-membrane"
    train_dir, val_dir = link_slices(source, out / "isbi_train", ISBI_TRAIN), link_slices(source, out / "isbi_val", ISBI_VAL)
    hand = out / "hw_isbi" / "isbi_ag_unet"
    seg("train", str(REPO / "configs/isbi_ag_unet.yaml"), *(["--resume"] if (hand / "last.pt").is_file() else []),
        "train.epochs=20", "train.iters_per_epoch=20", f"output_dir={out / 'hw_isbi'}", f"data.root={source}",
        f"seed={seed}")
    auto = out / "auto_isbi"
    seg("auto", str(train_dir), "-o", str(auto), "--device", "cpu", "--time-budget", str(ISBI_MINUTES),
        "--labels", "interior=255", "membrane=0", "data.split.folds=2", f"seed={seed}")
    arms = {HAND_ISBI: (str(hand / "last.pt"), [], [hand]),
            HAND_ISBI_BEST: (str(hand / "best.pt"), [], [hand]),
            HAND_ISBI_TTA: (str(hand / "last.pt"), ["--tta"], [hand]),
            "seg auto, 2-fold ensemble": (str(auto / "cv"), [], [auto / "cv" / "fold_0", auto / "cv" / "fold_1"]),
            "seg auto, fold 0 alone": (str(auto / "cv"), ["--folds", "0"], [auto / "cv" / "fold_0"]),
            "seg auto, fold 1 alone": (str(auto / "cv"), ["--folds", "1"], [auto / "cv" / "fold_1"])}
    rows = []
    for name, (model, extra, runs) in arms.items():
        pred = out / "isbi_pred" / name.replace(" ", "_").replace(",", "")
        if not (pred / "predictions.json").is_file():
            seg("predict", "-m", model, *extra, "-i", str(val_dir / "images"), "-o", str(pred))
        rows.append({"model": name, "patches": sum(patches(r) for r in runs),
                     "train_min": round(sum(train_seconds(r) for r in runs) / 60, 1),
                     "dice_membrane": membrane_dice(pred, val_dir / "labels")})
    return {"dataset": "isbi", "seed": seed, "scored_on": "slices 15-19 (held out)", "rows": rows,
            "plan": (auto / "plan.txt").read_text()}


def brats_row(name: str, parent: Path) -> dict:
    """One arm's pooled CV scores (raw and after the post-processing chosen on them) from its CV folder."""
    table = json.loads((parent / "cv_results.json").read_text())
    post = json.loads((parent / "postprocessing.json").read_text())
    runs = [parent / f"fold_{i}" for i in (0, 1)]
    row = {"model": name, "patches": sum(patches(r) for r in runs),
           "train_min": round(sum(train_seconds(r) for r in runs) / 60, 1)}
    row.update({f"{k} (raw)": table["pooled"][k] for k in REGION_KEYS})
    row.update({f"{k} (post-processed)": post["pooled_after"][k.removeprefix("dice_")] for k in REGION_KEYS})
    row["post-processing"] = {"tta": post.get("tta", False), "keep_largest": post["keep_largest"],
                              "remove_small": post.get("remove_small", {})}
    return row


def bench_brats(out: Path, shared: Path, seed: int, tag: str = "", hand_arm: bool = True,
                extra: tuple[str, ...] = ()) -> dict:
    source = shared / "brats2013-deepmedic"
    hand = out / "hw_brats" / "brats_ag_unet"
    rows = []
    # The shipped config as is (no mirroring), then the same folds validated with mirroring, as seg auto
    # plans it (nothing retrained: only the validation is predicted again).
    for tta in ("false", "true") if hand_arm else ():
        seg("train", str(REPO / "configs/brats_ag_unet.yaml"), "--folds", "all", "data.split.train=null",
            "data.split.val=null", "data.split.folds=2", "train.epochs=15", f"output_dir={out / 'hw_brats'}",
            f"data.root={source}", f"seed={seed}", f"infer.tta={tta}")
        rows.append(brats_row("hand-written brats_ag_unet" + (" + mirroring TTA" if tta == "true" else ""), hand))
    auto = out / f"auto_brats{tag}"
    seg("auto", str(source), "-o", str(auto), "--device", "cpu", "--time-budget", str(BRATS_MINUTES),
        "--labels", *BRATS_LABELS, "data.split.folds=2", BRATS_REGIONS, f"seed={seed}", *extra)
    rows.append(brats_row(f"seg auto ({tag.strip('_')})" if tag else "seg auto", auto / "cv"))
    return {"dataset": "brats", "seed": seed, "scored_on": "pooled 2-fold CV over the 4 cases (same seeded split)",
            "rows": rows, "plan": (auto / "plan.txt").read_text()}


def score_keys(rows: list[dict]) -> list[str]:
    return [k for k in rows[0] if k.startswith("dice_")]


def summarize(results: list[dict], reference: str) -> list[dict]:
    """Per arm and score: mean and sd over the seeds, and the seed-paired difference to ``reference``."""
    keys = score_keys(results[0]["rows"])
    by_arm: dict[str, dict[int, dict]] = {}
    for result in results:
        for row in result["rows"]:
            by_arm.setdefault(row["model"], {})[result["seed"]] = row
    summary = []
    for arm, rows in by_arm.items():
        for key in keys:
            values = [rows[s][key] for s in sorted(rows)]
            diffs = [rows[s][key] - by_arm[reference][s][key] for s in sorted(rows) if s in by_arm[reference]]
            summary.append({"model": arm, "score": key, "seeds": len(values), "mean": statistics.fmean(values),
                            "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                            "vs_reference_mean": statistics.fmean(diffs),
                            "vs_reference_sd": statistics.stdev(diffs) if len(diffs) > 1 else 0.0})
    return summary


def report(results: list[dict], dataset: str, seeds: list[int]) -> dict:
    """The JSON document: one seed's result as is, several with the summary over them (also printed)."""
    if len(results) == 1:
        return results[0]
    reference = HAND_ISBI if dataset == "isbi" else "hand-written brats_ag_unet"
    output = {"seeds": seeds, "runs": results, "summary": summarize(results, reference)}
    keys = list(output["summary"][0])
    print(format_table(keys, [[r[k] for k in keys] for r in output["summary"]]))
    print(f"mean and sd over seeds {seeds}; vs_reference: seed-paired difference to '{reference}'")
    return output


def merge(paths: list[Path], dataset: str, target: Path | None) -> int:
    """Summarise the seeds of several earlier ``--json`` files as if they had been one ``--seeds`` run."""
    by_seed: dict[int, dict] = {}
    for path in paths:
        doc = json.loads(path.read_text())
        for run in doc["runs"] if "runs" in doc else [doc]:
            if run["seed"] not in by_seed:
                by_seed[run["seed"]] = run
                continue
            # Another file's arms for the same seed (e.g. --auto-only beside an earlier run): added
            # beside them; an arm both files have keeps the first file's row.
            have = {row["model"] for row in by_seed[run["seed"]]["rows"]}
            by_seed[run["seed"]]["rows"] += [row for row in run["rows"] if row["model"] not in have]
    results = [by_seed[seed] for seed in sorted(by_seed)]
    output = report(results, dataset, [r["seed"] for r in results])
    if target:
        target.write_text(json.dumps(output, indent=2) + "\n")
        print(f"written: {target}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=["isbi", "brats"])
    parser.add_argument("--out", type=Path, help="working folder (runs, predictions); required unless --merge")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="training seeds of both arms, each in OUT/seed<N> (without --seeds: seed 0 in OUT)")
    parser.add_argument("--tag", default="", help="brats: suffix of the seg auto folder (OUT/auto_brats<TAG>), to "
                        "keep the runs of several planner versions apart")
    parser.add_argument("--auto-only", action="store_true",
                        help="brats: train and score only seg auto (a new planner version, --tag), to be merged "
                        "with an earlier run's hand-written arm (--merge); runs are deterministic per seed")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="brats: overrides of seg auto's planned config (with --tag, a variant's own folder)")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                        help="run nothing: merge the results of earlier runs (e.g. one seed per run) into one "
                        "summary, written to --json")
    args = parser.parse_args()
    if args.merge:
        return merge(args.merge, args.dataset, args.json)
    if args.out is None:
        parser.error("--out is required (unless --merge)")
    if not (args.shared / ("isbi2012-membrane" if args.dataset == "isbi" else "brats2013-deepmedic")).is_dir():
        print(f"bench_auto: no {args.dataset} data under {args.shared}", file=sys.stderr)
        return 2
    results = []
    seeds = args.seeds or [0]
    for seed in seeds:
        out = (args.out / f"seed{seed}" if args.seeds else args.out).resolve()
        out.mkdir(parents=True, exist_ok=True)
        if args.dataset == "isbi":
            result = bench_isbi(out, args.shared.resolve(), seed)
        else:
            result = bench_brats(out, args.shared.resolve(), seed, args.tag, hand_arm=not args.auto_only,
                                 extra=tuple(args.set))
        keys = [k for k in result["rows"][0] if k != "post-processing"]
        print(format_table(keys, [[r[k] for k in keys] for r in result["rows"]]))
        print(f"seed {seed}, scored on {result['scored_on']}")
        results.append(result)
        # after every seed, so a long run stopped part-way still leaves the seeds it finished
        output = report(results, args.dataset, seeds[: len(results)])
        if args.json:
            tmp = args.json.with_name(args.json.name + ".tmp")
            tmp.write_text(json.dumps(output, indent=2) + "\n")
            tmp.replace(args.json)
            print(f"written: {args.json} ({len(results)} of {len(seeds)} seeds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
