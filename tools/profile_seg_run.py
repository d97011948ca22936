"""Where a ``seg-run predict`` spends its time, stage by stage (read, preprocess, network, stitching,
restore + post-process, write): one run under cProfile, the cumulative seconds of each stage's function.

    python tools/profile_seg_run.py BUNDLE -i CASES -o OUT [--json FILE] [-- extra seg-run options]

Stitching is the sliding window's own work (infer_case less the network calls). Wall time includes the
start-up and the bundle's load; cProfile's overhead is a few percent on numpy-heavy code.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

# Stage -> (file suffix, function name) whose cumulative time it is.
STAGES = {
    "read": ("seg_runtime/io.py", "read_case"),
    "preprocess": ("seg_runtime/stages.py", "load_case"),
    "sliding window (all)": ("seg_runtime/stages.py", "infer_case"),
    "network": ("seg_runtime/session.py", "predict_batch"),
    "restore + post-process + write": ("seg_runtime/stages.py", "finish_case"),
    "write label map": ("seg_runtime/io.py", "write_labels"),
}


def _cumulative(stats: pstats.Stats) -> dict[str, float]:
    found = dict.fromkeys(STAGES, 0.0)
    for (path, _, name), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        for stage, (suffix, function) in STAGES.items():
            if name == function and path.replace("\\", "/").endswith(suffix):
                found[stage] = max(found[stage], cumulative)
    found["preprocess"] -= found["read"]  # load_case = read + the preprocessing part
    found["stitching"] = found["sliding window (all)"] - found["network"]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("-i", "--input", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    args, extra = parser.parse_known_args()
    from seg_runtime.cli import main as seg_run

    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    code = seg_run(["predict", str(args.bundle), "-i", str(args.input), "-o", str(args.output), "--overwrite",
                    "--no-progress", *[e for e in extra if e != "--"]])
    profile.disable()
    wall = time.perf_counter() - start
    stages = _cumulative(pstats.Stats(profile))
    rows = [("wall (whole command)", wall)] + [(k, v) for k, v in stages.items() if k != "sliding window (all)"]
    print(f"{'stage':32s}  {'seconds':>8s}  {'share':>6s}")
    for name, seconds in rows:
        print(f"{name:32s}  {seconds:8.1f}  {100 * seconds / wall:5.1f}%")
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(["python", "tools/profile_seg_run.py", *sys.argv[1:]]),
                                         "exit_code": code, "seconds": dict(rows)}, indent=2) + "\n")
    sys.exit(code)


if __name__ == "__main__":
    main()
