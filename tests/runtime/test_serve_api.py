"""``seg-run serve``'s API on FastAPI's TestClient: served results equal ``seg-run``'s, voxel for voxel."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from runtime_helpers import oblique_affine, predict, save_dicom_series, save_nifti, save_nrrd
from serve_helpers import auth, build, client, resampling_bundle, upload, volume, wait_done, zip_folder

from seg_runtime.formats import image_suffix
from seg_runtime.io import read_image
from seg_runtime.session import OnnxBackend

pytest.importorskip("fastapi")


def _seg_run(bundle: Path, scan: Path, out: Path) -> Path:
    """The label file ``seg-run predict`` writes for ``scan`` (a file, a case folder or a DICOM folder)."""
    manifest = predict(OnnxBackend(bundle, provider="cpu"), scan, out)
    assert manifest.summary == {"ok": 1, "skipped": 0, "failed": 0}
    (label,) = [p for p in out.iterdir() if image_suffix(p)]
    return label


def _served(tmp: Path, response_bytes: bytes, suffix: str) -> tuple[np.ndarray, np.ndarray]:
    path = tmp / f"served{suffix}"
    path.write_bytes(response_bytes)
    labels, geometry = read_image(path)
    return np.asarray(labels), geometry.affine


def test_a_served_nifti_equals_seg_run(tmp_path: Path) -> None:
    bundle = resampling_bundle(tmp_path / "brain")
    scan = save_nifti(tmp_path / "scan.nii.gz", volume(0), oblique_affine())
    expected = _seg_run(bundle, scan, tmp_path / "cli")
    with client(build(tmp_path, [bundle], provider="cpu")) as c:
        response = upload(c, "brain", scan)
        assert response.status_code == 202, response.text
        assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
        job = wait_done(c, response.json()["id"])
        assert job["state"] == "done", job
        result = c.get(f"/v1/jobs/{job['id']}/result", headers=auth())
    assert result.status_code == 200
    labels, affine = _served(tmp_path, result.content, ".nii.gz")
    reference = nib.load(str(expected))
    np.testing.assert_array_equal(labels, np.asarray(reference.dataobj))
    np.testing.assert_allclose(affine, reference.affine, atol=1e-5)
    assert np.unique(labels).size >= 2  # not a trivial map


def test_nrrd_in_gives_nrrd_out_and_formats_convert(tmp_path: Path) -> None:
    bundle = resampling_bundle(tmp_path / "brain")
    scan = save_nrrd(tmp_path / "scan.nrrd", volume(1).astype(np.float32), np.diag([0.9, 1.1, 1.7, 1.0]))
    expected, expected_geometry = read_image(_seg_run(bundle, scan, tmp_path / "cli"))
    with client(build(tmp_path, [bundle], provider="cpu")) as c:
        job = wait_done(c, upload(c, "brain", scan).json()["id"])
        assert job["result"]["formats"] == ["nrrd", "nii.gz", "mha", "json"]
        native = c.get(f"/v1/jobs/{job['id']}/result", headers=auth())
        other = c.get(f"/v1/jobs/{job['id']}/result?format=mha", headers=auth())
        wrong = c.get(f"/v1/jobs/{job['id']}/result?format=png", headers=auth())
    assert 'filename="' in native.headers["content-disposition"] and ".nrrd" in native.headers["content-disposition"]
    for response, suffix in ((native, ".nrrd"), (other, ".mha")):
        labels, affine = _served(tmp_path, response.content, suffix)
        np.testing.assert_array_equal(labels, expected)
        np.testing.assert_allclose(affine, expected_geometry.affine, atol=1e-5)
    assert wrong.status_code == 422 and "choose from nrrd, nii.gz, mha" in wrong.json()["detail"]


def test_one_field_per_channel(tmp_path: Path, bundle_factory: Callable[..., Path]) -> None:
    weight = np.array([[0.0, 0.0], [1.0, 0.5], [2.0, -1.0]], np.float32)
    bundle = bundle_factory("two", weight=weight, bias=np.array([0.0, -1.0, -3.0], np.float32))
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    first = save_nifti(tmp_path / "case_0000.nii.gz", volume(2), affine)
    second = save_nifti(tmp_path / "case_0001.nii.gz", volume(3), affine)
    folder = tmp_path / "case"  # the same two files as one case folder of nnU-Net channel files
    folder.mkdir()
    for path in (first, second):
        (folder / path.name).write_bytes(path.read_bytes())
    expected, _ = read_image(_seg_run(bundle, folder, tmp_path / "cli"))
    with client(build(tmp_path, [bundle], provider="cpu")) as c:
        with open(first, "rb") as a, open(second, "rb") as b:
            response = c.post("/v1/models/two/jobs", headers=auth(),
                              files={"ch0": ("t1.nii.gz", a), "ch1": ("t2.nii.gz", b)})
        assert response.status_code == 202, response.text
        job = wait_done(c, response.json()["id"])
        labels, _ = _served(tmp_path, c.get(f"/v1/jobs/{job['id']}/result", headers=auth()).content, ".nii.gz")
        missing = upload(c, "two", first, field="ch0")
    np.testing.assert_array_equal(labels, expected)
    assert missing.status_code == 400 and missing.json()["detail"] == (
        "missing channel field(s) ch1 (this model takes ch0, ch1)")


def test_a_dicom_zip_gives_dicom_seg_and_the_seg_run_label_map(tmp_path: Path) -> None:
    pytest.importorskip("highdicom")
    import pydicom

    bundle = resampling_bundle(tmp_path / "ct", weight=np.array([[0.0], [0.01], [0.02]], np.float32),
                               bias=np.array([0.0, -1.0, -3.0], np.float32))
    series = save_dicom_series(tmp_path / "series", volume(4, (16, 12, 6)) * 60, oblique_affine((0.8, 0.9, 2.5)))
    expected, _ = read_image(_seg_run(bundle, series, tmp_path / "cli"))
    (tmp_path / "series.zip").write_bytes(zip_folder(series))
    with client(build(tmp_path, [bundle], provider="cpu")) as c:
        job = wait_done(c, upload(c, "ct", tmp_path / "series.zip").json()["id"])
        assert job["state"] == "done", job
        assert job["input"] == {"kind": "dicom", "format": "dicom"}
        assert job["result"]["formats"][:2] == ["seg", "nii.gz"]
        seg = c.get(f"/v1/jobs/{job['id']}/result", headers=auth())
        nifti = c.get(f"/v1/jobs/{job['id']}/result?format=nii.gz", headers=auth())
    assert seg.headers["content-type"] == "application/dicom"
    (tmp_path / "served.seg.dcm").write_bytes(seg.content)
    assert pydicom.dcmread(tmp_path / "served.seg.dcm").Modality == "SEG"
    labels, _ = _served(tmp_path, nifti.content, ".nii.gz")
    np.testing.assert_array_equal(labels, expected)


def test_models_are_listed_with_their_model_json(tmp_path: Path) -> None:
    brain, ct = resampling_bundle(tmp_path / "b1"), resampling_bundle(tmp_path / "b2")
    with client(build(tmp_path, [brain, ct], ["brain", "ct"], provider="cpu")) as c:
        listed = c.get("/v1/models", headers=auth()).json()
        one = c.get("/v1/models/ct", headers=auth())
        unknown = c.post("/v1/models/liver/jobs", headers=auth(), files={"file": ("a.nii.gz", b"x")})
        ready = c.get("/readyz").json()
    assert [m["name"] for m in listed] == ["brain", "ct"]
    assert listed[0]["model_json"]["patch_size"] == [8, 8, 8] and listed[0]["fields"] == ["file", "ch0"]
    assert [c["name"] for c in listed[0]["classes"]] == ["class1", "class2"]
    assert one.json()["name"] == "ct"
    assert unknown.status_code == 404 and "liver" in unknown.json()["detail"]
    assert ready == {"status": "ready", "models": ["brain", "ct"]}


def test_wait_answers_with_the_label_map_or_the_one_line_error(tmp_path: Path) -> None:
    bundle = resampling_bundle(tmp_path / "brain")
    scan = save_nifti(tmp_path / "scan.nii.gz", volume(5), np.eye(4))
    bad = volume(6)
    bad[3, 3, 3] = np.nan
    nan_scan = save_nifti(tmp_path / "nan.nii.gz", bad, np.eye(4))
    with client(build(tmp_path, [bundle], provider="cpu")) as c:
        good = upload(c, "brain", scan, query="?wait=60")
        failed = upload(c, "brain", nan_scan, query="?wait=60")
        job = c.get(f"/v1/jobs/{failed.headers['x-job-id']}", headers=auth()).json()
    assert good.status_code == 200 and good.headers["x-job-id"]
    labels, _ = _served(tmp_path, good.content, ".nii.gz")
    assert labels.shape == (20, 18, 14)
    assert failed.status_code == 422
    assert failed.json()["detail"] == "file.nii.gz: contains NaN or Inf values (1 voxels)"  # no server path
    assert job["state"] == "failed" and job["error"] == failed.json()["detail"]


def test_unreadable_uploads_are_4xx_naming_the_problem(tmp_path: Path) -> None:
    bundle = resampling_bundle(tmp_path / "brain")
    (tmp_path / "junk.nii.gz").write_bytes(b"\x1f\x8bnot an image" * 20)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "flat.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with client(build(tmp_path, [bundle], provider="cpu")) as c:
        junk = upload(c, "brain", tmp_path / "junk.nii.gz")
        text = upload(c, "brain", tmp_path / "notes.txt")
        nothing = c.post("/v1/models/brain/jobs", headers=auth(), data={"note": "x"})
        stored = list((tmp_path / "store" / "entries").iterdir())
    assert junk.status_code == 422 and junk.json()["detail"].startswith("file.nii.gz: cannot read NIfTI file")
    assert text.status_code == 415 and "unsupported file type 'notes.txt'" in text.json()["detail"]
    assert nothing.status_code == 400 and "no file in the upload" in nothing.json()["detail"]
    assert stored == []  # a refused upload leaves nothing in the store


def test_a_job_over_the_memory_budget_is_refused_before_it_is_stored(tmp_path: Path) -> None:
    bundle = resampling_bundle(tmp_path / "brain")
    scan = save_nifti(tmp_path / "big.nii.gz", np.zeros((200, 200, 150), np.float32), np.eye(4))
    with client(build(tmp_path, [bundle], provider="cpu", max_memory_gb=0.05)) as c:
        response = upload(c, "brain", scan)
    assert response.status_code == 413
    assert response.json()["detail"].startswith("file.nii.gz: this job (input, model grid and restored scores)")
    assert "over the memory limit of 0.05 GiB" in response.json()["detail"]


def test_delete_removes_the_job_and_its_files(tmp_path: Path) -> None:
    bundle = resampling_bundle(tmp_path / "brain")
    scan = save_nifti(tmp_path / "scan.nii.gz", volume(7), np.eye(4))
    with client(build(tmp_path, [bundle], provider="cpu")) as c:
        job = wait_done(c, upload(c, "brain", scan).json()["id"])
        folder = tmp_path / "store" / "entries" / job["id"]
        assert folder.is_dir() and c.get("/v1/jobs", headers=auth()).json()[0]["id"] == job["id"]
        deleted = c.delete(f"/v1/jobs/{job['id']}", headers=auth())
        again = c.get(f"/v1/jobs/{job['id']}", headers=auth())
    assert deleted.status_code == 204 and not folder.exists() and again.status_code == 404


def test_statistics_give_volumes_equal_to_voxel_counts_times_voxel_volume(tmp_path: Path) -> None:
    bundle = resampling_bundle(tmp_path / "brain")
    scan = save_nifti(tmp_path / "scan.nii.gz", volume(8), np.diag([0.9, 1.1, 2.5, 1.0]))
    with client(build(tmp_path, [bundle], provider="cpu")) as c:
        job = wait_done(c, upload(c, "brain", scan).json()["id"])
        stats = c.get(f"/v1/jobs/{job['id']}/result?format=json", headers=auth())
        labels, _ = _served(tmp_path, c.get(f"/v1/jobs/{job['id']}/result", headers=auth()).content, ".nii.gz")
    assert job["result"]["formats"][-1] == "json" and stats.headers["content-type"] == "application/json"
    by_name = {s["name"]: s for s in stats.json()["structures"]}
    for name, value in (("class1", 1), ("class2", 2)):
        assert by_name[name]["voxels"] == int((labels == value).sum())
        assert by_name[name]["volume_ml"] == pytest.approx(by_name[name]["voxels"] * 0.9 * 1.1 * 2.5 / 1000)
    assert by_name["foreground"]["voxels"] == int((labels > 0).sum())
    assert by_name["class1"]["intensity"]["ch0"]["min"] >= 1.0 - 1e-6 or by_name["class1"]["voxels"] == 0


TORCH_FREE = r"""
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "monai", "seg"}:
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Blocker())
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from serve_helpers import auth, build, client, upload, wait_done
import seg_runtime.serve.ray_serve, seg_runtime.serve.server  # the whole package imports without torch
tmp = Path(sys.argv[1])
with client(build(tmp, [tmp / "brain"], provider="cpu")) as c:
    job = wait_done(c, upload(c, "brain", tmp / "scan.nii.gz").json()["id"])
print(job["state"], sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "monai", "seg"}))
"""


def test_the_service_runs_without_torch(tmp_path: Path) -> None:
    import subprocess
    import sys

    resampling_bundle(tmp_path / "brain")
    save_nifti(tmp_path / "scan.nii.gz", volume(9), np.eye(4))
    result = subprocess.run([sys.executable, "-c", TORCH_FREE, str(tmp_path), str(Path(__file__).parent)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "done []"


def test_a_served_png_equals_seg_run_and_has_a_view(tmp_path: Path, bundle_factory: Callable[..., Path]) -> None:
    from PIL import Image

    from seg_runtime.preprocess import PreprocessSpec

    bundle = bundle_factory("slices", spatial_dims=2, weight=np.array([[0.0], [0.02], [0.04]], np.float32),
                            bias=np.array([0.0, -1.0, -5.0], np.float32),
                            preprocess=PreprocessSpec(normalization=[{"scheme": "none"}]))
    scan = tmp_path / "slice.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (19, 23), dtype=np.uint8)).save(scan)
    expected, _ = read_image(_seg_run(bundle, scan, tmp_path / "cli"))
    with client(build(tmp_path, [bundle], provider="cpu")) as c:
        job = wait_done(c, upload(c, "slices", scan).json()["id"])
        result = c.get(f"/v1/jobs/{job['id']}/result", headers=auth())
        view = c.get(f"/v1/jobs/{job['id']}/view", headers=auth()).json()
        stats = c.get(f"/v1/jobs/{job['id']}/result?format=json", headers=auth()).json()
    assert job["result"]["formats"] == ["png", "nii.gz", "nrrd", "mha", "json"]
    assert result.headers["content-type"] == "image/png"
    labels, _ = _served(tmp_path, result.content, ".png")
    np.testing.assert_array_equal(labels, expected)
    assert len(np.unique(labels)) == 3
    assert view["shape"] == [23, 19, 1]  # columns run along x, rows along y, one slice
    assert stats["structures"][0]["area_mm2"] == float((labels == 1).sum())


def test_a_zip_of_two_series_is_refused_at_upload(tmp_path: Path) -> None:
    from serve_helpers import zip_bytes

    bundle = resampling_bundle(tmp_path / "ct")
    one = save_dicom_series(tmp_path / "a", volume(11, (8, 8, 3)), np.eye(4))
    two = save_dicom_series(tmp_path / "b", volume(12, (8, 8, 3)), np.eye(4), name_offset=100)
    members = {f"x/{p.parent.name}{p.name}": p.read_bytes() for folder in (one, two) for p in folder.iterdir()}
    with client(build(tmp_path, [bundle], provider="cpu")) as c:
        response = c.post("/v1/models/ct/jobs", headers=auth(), files={"file": ("two.zip", zip_bytes(members))})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("the uploaded DICOM series: mixed DICOM series (2 SeriesInstanceUIDs")
