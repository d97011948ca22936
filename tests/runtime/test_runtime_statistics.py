"""--statistics: per-structure voxel counts, volumes (= counts x voxel volume) and input intensities,
one JSON per case and one CSV over the run, through the stages every runner uses."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from runtime_helpers import oblique_affine, predict, save_nifti

from seg_runtime.cli import main as seg_run
from seg_runtime.preprocess import PreprocessSpec
from seg_runtime.session import OnnxBackend
from seg_runtime.statistics import CSV_COLUMNS, case_statistics, intensity, structures


def test_structures_are_the_foreground_classes_then_the_regions() -> None:
    found = structures({"background": 0, "edema": 2, "necrosis": 1, "enhancing": 4},
                       {"whole tumour": [1, 2, 4], "core": [0, 1, 4]})
    assert found == [("necrosis", "class", [1]), ("edema", "class", [2]), ("enhancing", "class", [4]),
                     ("whole tumour", "region", [1, 2, 4]), ("core", "region", [1, 4])]


def test_case_statistics_counts_volumes_and_intensities_exactly() -> None:
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array([0, 1, 2, 4], np.uint8), size=(9, 8, 7), p=[0.5, 0.2, 0.3, 0.0])
    image = rng.normal(100, 20, size=(2, 9, 8, 7)).astype(np.float32)
    spacing = (0.8, 0.9, 2.5)
    stats = case_statistics(labels, image, spacing, {"bg": 0, "a": 1, "b": 2, "c": 4}, {"ab": [1, 2]},
                            ["t1", "t2"])
    assert stats["voxel_volume_mm3"] == pytest.approx(0.8 * 0.9 * 2.5)
    by_name = {s["name"]: s for s in stats["structures"]}
    for name, members in (("a", [1]), ("b", [2]), ("c", [4]), ("ab", [1, 2])):
        mask = np.isin(labels, members)
        entry = by_name[name]
        assert entry["voxels"] == int(mask.sum())
        assert entry["volume_ml"] == pytest.approx(entry["voxels"] * 0.8 * 0.9 * 2.5 / 1000, rel=1e-12)
        if entry["voxels"] == 0:
            assert entry["intensity"] == {"t1": None, "t2": None}
            continue
        for channel, name_ in enumerate(("t1", "t2")):
            values = image[channel][mask].astype(np.float64)
            got = entry["intensity"][name_]
            assert got["mean"] == pytest.approx(values.mean(), rel=1e-12)
            assert got["std"] == pytest.approx(values.std(), rel=1e-12)
            assert got["p50"] == pytest.approx(np.median(values), rel=1e-12)
            assert got["min"] == values.min() and got["max"] == values.max()
    assert by_name["c"]["voxels"] == 0


def test_2d_cases_report_areas_and_sizes_without_an_image() -> None:
    labels = np.zeros((10, 12), np.uint8)
    labels[2:5, 3:7] = 1
    stats = case_statistics(labels, None, (0.5, 0.25, 3.0), {"bg": 0, "x": 1}, {}, ["ch0"])
    (entry,) = stats["structures"]
    assert stats["pixel_area_mm2"] == 0.125 and entry["area_mm2"] == 12 * 0.125 and "volume_ml" not in entry
    assert entry["intensity"] is None
    assert intensity(np.zeros(0, np.float32)) is None


def _ramp(shape: tuple[int, ...]) -> np.ndarray:
    grids = np.meshgrid(*[np.linspace(0, 1, s) for s in shape], indexing="ij")
    return (3.0 * (0.5 * grids[0] + 0.3 * grids[1] + 0.2 * grids[2])).astype(np.float32)


@pytest.fixture
def scans(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    save_nifti(folder / "oblique.nii.gz", _ramp((13, 11, 7)), oblique_affine((0.8, 0.9, 2.5)))
    save_nifti(folder / "plain.nii.gz", 1.1 + _ramp((9, 10, 6)) / 2, np.diag([1.5, 1.0, 3.0, 1.0]))
    return folder


def _check_against_outputs(output: Path, inputs: Path) -> int:
    """Every case's JSON matches its written label map and input; returns the number of CSV rows."""
    rows = list(csv.DictReader((output / "statistics.csv").open(newline="")))
    assert rows and list(rows[0]) == list(CSV_COLUMNS)
    for source in sorted(inputs.iterdir()):
        case = source.name.removesuffix(".nii.gz")
        stats = json.loads((output / "statistics" / f"{case}.json").read_text())
        written = nib.load(output / f"{case}.nii.gz")
        labels = np.asarray(written.dataobj)
        image = np.asarray(nib.load(source).dataobj, dtype=np.float32)
        voxel = float(np.prod(nib.affines.voxel_sizes(written.affine)))
        for entry in stats["structures"]:
            mask = np.isin(labels, entry["labels"])
            assert entry["voxels"] == int(mask.sum())
            assert entry["volume_ml"] == pytest.approx(entry["voxels"] * voxel / 1000, rel=1e-9)
            if entry["voxels"]:
                assert entry["intensity"]["ch0"]["mean"] == pytest.approx(float(image[mask].mean()), rel=1e-6)
            row = next(r for r in rows if r["case"] == case and r["structure"] == entry["name"])
            assert int(row["voxels"]) == entry["voxels"]
            assert float(row["volume_ml"]) == pytest.approx(entry["volume_ml"])
    return len(rows)


def test_seg_run_statistics_match_the_written_label_maps(
    tmp_path: Path, scans: Path, bundle_factory: Callable[..., Path]
) -> None:
    bundle = bundle_factory(preprocess=PreprocessSpec(target_spacing=[1.0, 1.0, 1.0],
                                                      normalization=[{"scheme": "none"}]))
    out = tmp_path / "out"
    assert seg_run(["predict", str(bundle), "-i", str(scans), "-o", str(out), "--statistics",
                    "--provider", "cpu", "--no-progress"]) == 0
    # 2 cases x (class1, class2, the 'foreground' region) x 1 channel
    assert _check_against_outputs(out, scans) == 2 * 3


def test_a_rerun_adds_statistics_from_the_label_maps_and_lists_skipped_ones(
    tmp_path: Path, scans: Path, bundle_factory: Callable[..., Path]
) -> None:
    backend = OnnxBackend(bundle_factory(), provider="cpu")
    out = tmp_path / "out"
    assert predict(backend, scans, out).summary["ok"] == 2
    assert not (out / "statistics.csv").exists()
    # The label maps are current: the statistics are made from them, nothing is predicted again.
    added = predict(backend, scans, out, statistics=True)
    assert added.summary == {"ok": 0, "skipped": 2, "failed": 0} and added.completed == 2
    assert _check_against_outputs(out, scans) == 6
    again = predict(backend, scans, out, statistics=True)
    assert again.summary == {"ok": 0, "skipped": 2, "failed": 0}
    assert _check_against_outputs(out, scans) == 6  # the skipped cases are in the run's CSV too
    assert predict(backend, scans, out, statistics=True, shard=(1, 2), overwrite=True).summary["ok"] == 1
    assert len(list(csv.DictReader((out / "statistics.shard-1-of-2.csv").open()))) == 3


def test_the_kept_input_counts_in_the_memory_check(
    tmp_path: Path, bundle_factory: Callable[..., Path]
) -> None:
    backend = OnnxBackend(bundle_factory(), provider="cpu")
    (tmp_path / "in").mkdir()
    save_nifti(tmp_path / "in" / "case.nii.gz", _ramp((20, 20, 20)), np.eye(4))
    # A limit between what the case needs alone and with its input kept (32 kB more) for --statistics.
    from seg_runtime.geometry import make_geometry
    from seg_runtime.options import PredictOptions
    from seg_runtime.stages import CasePipeline

    geometry = make_geometry(np.eye(4), (20, 20, 20), "nifti")
    alone, kept = (CasePipeline.resolve(backend.bundle, PredictOptions(statistics=flag)).peak_bytes((20, 20, 20),
                   geometry) for flag in (False, True))
    assert kept == alone + 20**3 * 4
    limit = (alone + kept) / 2 / 2**30
    assert predict(backend, tmp_path / "in", tmp_path / "a", max_memory_gb=limit).summary["ok"] == 1
    manifest = predict(backend, tmp_path / "in", tmp_path / "b", max_memory_gb=limit, statistics=True)
    (failure,) = manifest.failures()
    assert "with the input kept for --statistics" in failure["error"] and "over the memory limit" in failure["error"]
