"""The command chain the golden tests pin: every ``seg`` and ``seg-run`` command, run once, in-process.

:func:`run_chain` builds the tiny datasets (the synthetic 3D and 2D demo phantoms, written by the
first ``seg train`` as a user would get them) in one temporary folder and runs the commands in a
fixed order, each through its CLI's ``main(argv)`` with stdout and stderr captured, then takes a
snapshot of the folders it wrote (before a later command adds to them).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seg.cli import main as seg_main
from seg_runtime.cli import main as seg_run_main

from .golden import Normaliser
from .snapshot import snapshot

REPO = Path(__file__).resolve().parents[2]
# Log records reach stderr only outside pytest's log capture; they are not printed output.
_LOG_LINE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")

# 2 epochs; validation only at the last one (val_every == epochs), so best.pt is last.pt whatever
# the validation's sliding window does. 30 iterations give a 3D model that predicts every class.
CONFIG_3D = """\
base: {repo}/configs/demo3d.yaml
name: tiny3d
output_dir: runs
data:
  root: data
model:
  params: {{channels: [4, 8, 16]}}
train:
  epochs: 2
  iters_per_epoch: 30
  batch_size: 2
  patch_size: [32, 32, 32]
  val_every: 2
  val_cases: 1
"""
CONFIG_2D = """\
base: {repo}/configs/demo2d.yaml
name: tiny2d
output_dir: runs
data:
  root: data2d
model:
  params: {{channels: [4, 8, 16]}}
train:
  epochs: 2
  iters_per_epoch: 40
  batch_size: 4
  patch_size: [48, 48]
  val_every: 2
  val_cases: 1
"""
CV_OVERRIDES = ["data.split.folds=2", "name=cv3d", "train.iters_per_epoch=15"]
AUTO_OVERRIDES = ["data.split.folds=2", "train.epochs=1", "train.iters_per_epoch=2", "train.batch_size=2",
                  "train.patch_size=[32,32,32]", "model.params.channels=[4,8,16]"]
DEMO_OVERRIDES = ["train.epochs=1", "train.iters_per_epoch=2", "model.params.channels=[4,8,16]",
                  "train.patch_size=[32,32,32]", "train.val_cases=1", "train.val_every=1"]
AUTO_CASES = 4  # seg auto mirrors (planned TTA) every validation case 8 times: 4 cases keep it to seconds


@dataclass
class Step:
    """One command's run: what it printed, its exit status, and snapshots of what it wrote."""

    name: str
    argv: list[str]
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    seconds: float = 0.0
    snapshots: dict[str, Any] = field(default_factory=dict)


class Chain:
    """The temporary folder, the normaliser for it, and the steps run so far."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.norm = Normaliser({str(root): "<TMP>", str(root.resolve()): "<TMP>", str(REPO): "<REPO>"})
        self.steps: dict[str, Step] = {}

    def __getitem__(self, name: str) -> Step:
        return self.steps[name]

    def run(self, name: str, tool: str, argv: Sequence[str | Path], snap: dict[str, Path] | None = None,
            labels: bool = True) -> Step:
        """Run ``tool argv`` in-process, capture its output, snapshot ``snap``'s folders afterwards."""
        main: Callable[[list[str]], int] = seg_main if tool == "seg" else seg_run_main
        step = Step(name, [tool, *map(str, argv)])
        out, err = io.StringIO(), io.StringIO()
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                step.rc = main(step.argv[1:])
        except SystemExit as exc:  # argparse
            step.rc = exc.code if isinstance(exc.code, int) else 2
        except Exception:  # noqa: BLE001 - reported by the tests of this step, the chain goes on
            step.error = traceback.format_exc()
        step.seconds = time.perf_counter() - start
        step.stdout, step.stderr = out.getvalue(), err.getvalue()
        for key, folder in (snap or {}).items():
            if folder.exists():
                step.snapshots[key] = snapshot(folder, self.norm, labels=labels)
        self.steps[name] = step
        return step

    def printed(self, name: str, scores: bool = False) -> dict[str, Any]:
        """The normalised command line, exit status, stdout and stderr (log records left out) of a step.

        Args:
            name: the step.
            scores: its stdout prints scores of a trained model (compared with the loose tolerance).
        """
        step = self.steps[name]
        stderr = "\n".join(line for line in step.stderr.splitlines() if not _LOG_LINE.match(line))
        return {"argv": [self.norm.text(a) for a in step.argv], "rc": step.rc,
                "stdout (scores)" if scores else "stdout": self.norm.lines(step.stdout),
                "stderr": self.norm.lines(stderr)}


def write_nnunet_subset(source: Path, target: Path, cases: int) -> Path:
    """Copy the first ``cases`` training cases of a dataset into a plain nnU-Net raw folder."""
    meta = json.loads((source / "dataset.json").read_text())
    for sub in ("imagesTr", "labelsTr"):
        (target / sub).mkdir(parents=True, exist_ok=True)
    for i in range(cases):
        shutil.copy2(source / "imagesTr" / f"synth_{i:03d}_0000.nii.gz", target / "imagesTr")
        shutil.copy2(source / "labelsTr" / f"synth_{i:03d}.nii.gz", target / "labelsTr")
    plain = {k: meta[k] for k in ("channel_names", "labels", "file_ending")}
    (target / "dataset.json").write_text(json.dumps({**plain, "numTraining": cases}, indent=2))
    return target


def run_chain(root: Path) -> Chain:
    """Run every command once, in order (later commands use what earlier ones wrote)."""
    c, r = Chain(root), root
    (r / "tiny3d.yaml").write_text(CONFIG_3D.format(repo=REPO))
    (r / "tiny2d.yaml").write_text(CONFIG_2D.format(repo=REPO))
    data, ts, run, cv = r / "data", r / "data" / "imagesTs", r / "runs" / "tiny3d", r / "runs" / "cv3d"
    pred, onnx = r / "pred", r / "pred_onnx"

    # 1. train (writes the synthetic dataset on first use)
    c.run("train", "seg", ["train", r / "tiny3d.yaml"], {"run": run})
    # 2. predict, a rerun into the same folder (all skipped), --summary
    c.run("predict", "seg", ["predict", "-m", run, "-i", ts, "-o", pred], {"pred": pred})
    c.run("predict-rerun", "seg", ["predict", "-m", run, "-i", ts, "-o", pred], {"pred": pred}, labels=False)
    c.run("predict-summary", "seg", ["predict", "--summary", "-o", pred], {"pred": pred}, labels=False)
    # 3. evaluate with the model's label map, and with labels read from the references
    refs = data / "labelsTs"
    c.run("evaluate", "seg", ["evaluate", "--pred", pred, "--ref", refs, "--model", run], {"pred": pred},
          labels=False)
    c.run("evaluate-refs", "seg", ["evaluate", "--pred", pred, "--ref", refs, "-o", r / "eval_refs"],
          {"out": r / "eval_refs"})
    # 4. export; 5. seg-run, rerun, --summary, and the optional outputs in another format
    c.run("export", "seg", ["export", run, "-o", r / "bundle"], {"bundle": r / "bundle"})
    c.run("seg-run", "seg-run", [r / "bundle", "-i", ts, "-o", onnx], {"pred": onnx})
    c.run("seg-run-rerun", "seg-run", [r / "bundle", "-i", ts, "-o", onnx], {"pred": onnx}, labels=False)
    c.run("seg-run-summary", "seg-run", ["--summary", "-o", onnx], {"pred": onnx}, labels=False)
    extra = ["--preview", "--save-probabilities", "--output-format", "nrrd"]
    c.run("seg-run-extra", "seg-run", [r / "bundle", "-i", ts, "-o", r / "pred_extra", *extra],
          {"pred": r / "pred_extra"})
    # 6. cross-validation, the fold ensemble through seg predict, export and seg-run
    c.run("train-cv", "seg", ["train", r / "tiny3d.yaml", "--folds", "all", *CV_OVERRIDES], {"cv": cv})
    c.run("predict-cv", "seg", ["predict", "-m", cv, "-i", ts, "-o", r / "pred_cv"], {"pred": r / "pred_cv"})
    c.run("export-cv", "seg", ["export", cv, "-o", r / "bundle_cv"], {"bundle": r / "bundle_cv"})
    c.run("seg-run-cv", "seg-run", [r / "bundle_cv", "-i", ts, "-o", r / "pred_cv_onnx"],
          {"pred": r / "pred_cv_onnx"})
    # 7. plan a dataset folder into a config; propose settings for a config
    c.run("plan", "seg", ["plan", data, "-o", r / "planned.yaml"])
    c.run("plan-config", "seg", ["plan", r / "tiny3d.yaml"])
    # 8. auto on a 4-case copy of the dataset (plain nnU-Net raw)
    auto_data = write_nnunet_subset(data, r / "auto_data", AUTO_CASES)
    c.run("auto", "seg", ["auto", auto_data, "-o", r / "auto", "--time-budget", "0.1", *AUTO_OVERRIDES],
          {"auto": r / "auto"})
    # 9. demo, models
    c.run("demo", "seg", ["demo", "--out", r / "demo", *DEMO_OVERRIDES], {"demo": r / "demo"})
    c.run("models", "seg", ["models"])
    # 10. 2D: train -> export -> seg-run (PNG in, PNG out), and seg predict beside it
    ts2, run2 = r / "data2d" / "imagesTs", r / "runs" / "tiny2d"
    c.run("train-2d", "seg", ["train", r / "tiny2d.yaml"], {"run": run2})
    c.run("export-2d", "seg", ["export", run2, "-o", r / "bundle2d"], {"bundle": r / "bundle2d"})
    c.run("seg-run-2d", "seg-run", [r / "bundle2d", "-i", ts2, "-o", r / "pred2d_onnx"],
          {"pred": r / "pred2d_onnx"})
    c.run("predict-2d", "seg", ["predict", "-m", run2, "-i", ts2, "-o", r / "pred2d"], {"pred": r / "pred2d"})
    return c
