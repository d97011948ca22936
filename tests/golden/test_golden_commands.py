"""Golden outputs of every user command of ``seg`` and ``seg-run``: a refactor is held to today's behaviour.

One module-scoped fixture (:func:`tests.golden.chain.run_chain`) runs the whole chain once, in-process,
on tiny synthetic data: ``seg train`` (3D), ``seg predict`` (+ rerun, ``--summary``), ``seg evaluate``
(with ``--model`` and without), ``seg export``, ``seg-run`` (+ rerun, ``--summary``, ``--preview
--save-probabilities --output-format nrrd``), ``seg train --folds all`` with the fold ensemble through
``seg predict``, ``seg export`` and ``seg-run``, ``seg plan`` (dataset folder and config), ``seg auto``,
``seg demo``, ``seg models``, and a 2D train -> export -> seg-run / seg predict. Each test compares
one golden entry, ``tests/golden/data/<entry>.json``; the rules (skeletons of printed text, numbers
with tolerance, masked clocks, hashes and paths, label maps by shape, dtype and class histogram) are
in :mod:`tests.golden.golden`. Four tests check properties instead of goldens: every label map keeps
its input's grid and affine, ``seg predict`` and ``seg-run`` agree on >= 99.9 % of the voxels, saved
probabilities sum to one with the written labels as their argmax, and no command leaves a temporary
file behind.

The end-of-run summaries that ``seg predict`` and ``seg-run`` print (and ``--summary``) are kept apart,
in the entries ``seg-predict-summary`` and ``seg-run-summary``, so a deliberate change of that format
regenerates them alone. Regenerate goldens (then review ``git diff tests/golden/data``)::

    SEG_UPDATE_GOLDEN=1 pytest tests/golden                                        # every entry
    SEG_UPDATE_GOLDEN=seg-run-summary,seg-predict-summary pytest tests/golden      # just these

Entries: see ``ENTRIES``. The chain runs in under a minute on a 2-core CPU, with one torch thread
(the goldens were made so; two threads give the same goldens within the tolerances).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from .chain import Chain, run_chain
from .golden import DATA, check_golden, requested_entries
from .snapshot import list_files, read_labels, summarise

ENTRIES = ("seg-train", "seg-predict", "seg-predict-summary", "seg-evaluate", "seg-export", "seg-run",
           "seg-run-summary", "seg-train-cv", "seg-predict-cv", "seg-export-cv", "seg-plan",
           "seg-plan-config", "seg-auto", "seg-demo", "seg-models", "seg-2d")
AGREEMENT = 0.999  # seg predict (torch / in-memory ONNX) vs seg-run (the exported bundle), per case
SUFFIXES = (".nii.gz", ".nrrd", ".png")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    # One torch thread: on a shared 2-core machine two threads wait on each other (seen 6x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield run_chain(tmp_path_factory.mktemp("golden"))
    finally:
        torch.set_num_threads(threads)


def _succeeded(chain: Chain, *names: str) -> None:
    """Fail with the traceback when a step raised (its exit status is part of the goldens)."""
    for name in names:
        step = chain[name]
        if step.error:
            pytest.fail(f"{name} ({' '.join(step.argv)}) raised:\n{step.error}", pytrace=False)


def _rc_and(chain: Chain, name: str, **snapshots: Any) -> dict[str, Any]:
    return {"rc": chain[name].rc, **snapshots}


def test_seg_train(chain: Chain) -> None:
    _succeeded(chain, "train")
    run = chain["train"].snapshots["run"]
    # val_every == epochs: validated once, at the end, so the best checkpoint is the last one.
    assert run["content"]["best.pt"]["epoch"] == run["content"]["last.pt"]["epoch"] == 2
    data = chain.root / "data"
    check_golden("seg-train", {"printed": chain.printed("train", scores=True), "run": run,
                               "data": {"files": list_files(data, chain.norm),
                                        "dataset.json": summarise(data / "dataset.json", chain.norm)}})


def test_seg_predict(chain: Chain) -> None:
    _succeeded(chain, "predict", "predict-rerun", "predict-summary")
    check_golden("seg-predict", {
        "rc": {n: chain[n].rc for n in ("predict", "predict-rerun", "predict-summary")},
        "after predict": chain["predict"].snapshots["pred"],
        "after rerun": chain["predict-rerun"].snapshots["pred"],
        "after --summary": chain["predict-summary"].snapshots["pred"],
    })


def test_seg_predict_summary(chain: Chain) -> None:
    """What ``seg predict`` prints at the end of a run and for ``--summary`` (its own entry: see above)."""
    names = ("predict", "predict-rerun", "predict-summary", "predict-cv", "predict-2d")
    _succeeded(chain, *names)
    check_golden("seg-predict-summary", {n: chain.printed(n) for n in names})


def test_seg_evaluate(chain: Chain) -> None:
    _succeeded(chain, "evaluate", "evaluate-refs")
    written = chain["evaluate"].snapshots["pred"]["content"]
    check_golden("seg-evaluate", {
        "with --model": {"printed": chain.printed("evaluate", scores=True),
                         "written": {k: written[k] for k in ("evaluation.csv", "evaluation.json")}},
        "labels from the references": {"printed": chain.printed("evaluate-refs", scores=True),
                                       "out": chain["evaluate-refs"].snapshots["out"]},
    })


def test_seg_export(chain: Chain) -> None:
    _succeeded(chain, "export")
    bundle = json.loads((chain.root / "bundle" / "model.json").read_text())
    record = json.loads((chain.root / "pred" / "predictions.jsonl").read_text().splitlines()[0])
    # The bundle's config hash is the run's (masked in the goldens: it covers absolute paths).
    assert bundle["provenance"]["config_hash"] == record["model"]["config_hash"]
    check_golden("seg-export", {"printed": chain.printed("export", scores=True),
                                "bundle": chain["export"].snapshots["bundle"]})


def test_seg_run(chain: Chain) -> None:
    names = ("seg-run", "seg-run-rerun", "seg-run-summary", "seg-run-extra", "seg-run-cv")
    _succeeded(chain, *names)
    check_golden("seg-run", {
        "rc": {n: chain[n].rc for n in names},
        "after seg-run": chain["seg-run"].snapshots["pred"],
        "after rerun": chain["seg-run-rerun"].snapshots["pred"],
        "after --summary": chain["seg-run-summary"].snapshots["pred"],
        "--preview --save-probabilities --output-format nrrd": chain["seg-run-extra"].snapshots["pred"],
        "fold ensemble bundle": chain["seg-run-cv"].snapshots["pred"],
    })


def test_seg_run_summary(chain: Chain) -> None:
    """What ``seg-run`` prints at the end of a run and for ``--summary`` (its own entry: see above)."""
    names = ("seg-run", "seg-run-rerun", "seg-run-summary", "seg-run-extra", "seg-run-cv", "seg-run-2d")
    _succeeded(chain, *names)
    check_golden("seg-run-summary", {n: chain.printed(n) for n in names})


def test_seg_train_cross_validation(chain: Chain) -> None:
    _succeeded(chain, "train-cv")
    cv = chain["train-cv"].snapshots["cv"]
    post = cv["content"]["postprocessing.json"]
    assert cv["content"]["config.yaml"]["yaml"]["infer"]["keep_largest"] == post["keep_largest"]
    check_golden("seg-train-cv", {"printed": chain.printed("train-cv", scores=True), "cv": cv})


def test_seg_predict_fold_ensemble(chain: Chain) -> None:
    _succeeded(chain, "predict-cv")
    check_golden("seg-predict-cv", _rc_and(chain, "predict-cv", pred=chain["predict-cv"].snapshots["pred"]))


def test_seg_export_fold_ensemble(chain: Chain) -> None:
    _succeeded(chain, "export-cv")
    check_golden("seg-export-cv", {"printed": chain.printed("export-cv", scores=True),
                                   "bundle": chain["export-cv"].snapshots["bundle"]})


def test_seg_plan(chain: Chain) -> None:
    _succeeded(chain, "plan", "plan-config")
    check_golden("seg-plan", {"printed": chain.printed("plan"),
                              "planned.yaml": summarise(chain.root / "planned.yaml", chain.norm)})
    check_golden("seg-plan-config", {"printed": chain.printed("plan-config")})


def test_seg_auto(chain: Chain) -> None:
    _succeeded(chain, "auto")
    check_golden("seg-auto", {"printed": chain.printed("auto", scores=True),
                              "auto": chain["auto"].snapshots["auto"]})


def test_seg_demo_and_models(chain: Chain) -> None:
    _succeeded(chain, "demo", "models")
    check_golden("seg-demo", {"printed": chain.printed("demo", scores=True),
                              "demo": chain["demo"].snapshots["demo"]})
    check_golden("seg-models", {"printed": chain.printed("models")})


def test_2d_train_export_seg_run(chain: Chain) -> None:
    names = ("train-2d", "export-2d", "seg-run-2d", "predict-2d")
    _succeeded(chain, *names)
    check_golden("seg-2d", {
        "train": {"printed": chain.printed("train-2d", scores=True),
                  "run": chain["train-2d"].snapshots["run"]},
        "export": {"printed": chain.printed("export-2d", scores=True),
                   "bundle": chain["export-2d"].snapshots["bundle"]},
        "seg-run": _rc_and(chain, "seg-run-2d", pred=chain["seg-run-2d"].snapshots["pred"]),
        "predict": _rc_and(chain, "predict-2d", pred=chain["predict-2d"].snapshots["pred"]),
    })


def _case_id(path: Path) -> str:
    name = path.name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _label_maps(folder: Path) -> dict[str, Path]:
    """Predicted label maps in a folder by case id (probabilities and previews left out)."""
    return {_case_id(p): p for p in sorted(folder.iterdir())
            if p.is_file() and p.name.endswith(SUFFIXES) and "_probabilities" not in p.name}


def _input_of(case: str, folder: Path) -> Path:
    (match,) = [p for p in folder.iterdir() if p.name.startswith(f"{case}_0000.")]
    return match


def test_label_maps_keep_their_input_geometry(chain: Chain) -> None:
    """Every written label map (and probability map) has its input's grid and voxel-to-world affine."""
    r = chain.root
    ts, ts2 = r / "data" / "imagesTs", r / "data2d" / "imagesTs"
    folders = {r / n: ts for n in ("pred", "pred_onnx", "pred_extra", "pred_cv", "pred_cv_onnx")}
    folders.update({r / n: ts2 for n in ("pred2d", "pred2d_onnx")})
    folders.update({r / "demo" / n: r / "demo" / "data" / "imagesTs" for n in ("pred_torch", "pred_onnx")})
    for fold in [*r.glob("runs/cv3d/fold_*"), *r.glob("auto/cv/fold_*")]:
        folders[fold / "validation"] = fold / "validation_input"
    checked = 0
    for out, inputs in folders.items():
        maps = _label_maps(out)
        assert maps, f"no label maps in {out}"
        probabilities = sorted(out.glob("*_probabilities.nii.gz"))
        cases = [*maps.items(), *((p.name[: -len("_probabilities.nii.gz")], p) for p in probabilities)]
        for case, path in cases:
            image, affine = read_labels(_input_of(case, inputs))
            labels, out_affine = read_labels(path)
            assert labels.shape[: image.ndim] == image.shape, f"{path}: grid {labels.shape} != {image.shape}"
            np.testing.assert_allclose(out_affine, affine, atol=1e-4, err_msg=f"{path}: affine != input's")
            checked += 1
    assert checked >= 40


@pytest.mark.parametrize(("torch_dir", "onnx_dir"), [
    ("pred", "pred_onnx"), ("pred_cv", "pred_cv_onnx"), ("pred2d", "pred2d_onnx"),
    ("demo/pred_torch", "demo/pred_onnx"), ("pred_onnx", "pred_extra"),
])
def test_seg_predict_and_seg_run_agree(chain: Chain, torch_dir: str, onnx_dir: str) -> None:
    """The same model through ``seg predict`` and through its exported bundle: the same labels, per case."""
    a, b = _label_maps(chain.root / torch_dir), _label_maps(chain.root / onnx_dir)
    assert a and set(a) == set(b)
    for case in a:
        x, y = read_labels(a[case])[0], read_labels(b[case])[0]
        assert x.shape == y.shape
        agreement = float(np.mean(x == y))
        assert agreement >= AGREEMENT, f"{case}: {torch_dir} vs {onnx_dir}: {agreement:.4%} of voxels agree"


def test_saved_probabilities_match_the_labels(chain: Chain) -> None:
    """``--save-probabilities``: per voxel the classes sum to one and their argmax is the written label."""
    out = chain.root / "pred_extra"
    for case, path in _label_maps(out).items():
        probabilities = read_labels(out / f"{case}_probabilities.nii.gz")[0]
        labels = read_labels(path)[0]
        assert float(np.mean(np.argmax(probabilities, axis=-1) == labels)) >= 0.99


def test_no_temporary_files_left_behind(chain: Chain) -> None:
    """Atomic writes (checkpoints, bundles, label maps, configs) leave no hidden temporary file or folder."""
    leftovers = [p for p in chain.root.rglob("*") if ".cache" not in p.relative_to(chain.root).parts
                 and (p.name.startswith(".") or p.name.endswith((".tmp", ".part")))]
    assert not leftovers


def test_golden_files_are_the_known_entries(chain: Chain) -> None:
    """No stale golden file, and no misspelt name in SEG_UPDATE_GOLDEN (it would update nothing)."""
    unknown = requested_entries() - set(ENTRIES)
    assert not unknown, f"unknown entries in SEG_UPDATE_GOLDEN: {sorted(unknown)}"
    assert sorted(p.stem for p in DATA.glob("*.json")) == sorted(ENTRIES)
