"""Round trips through a real PACS (Orthanc, Debian's orthanc + orthanc-dicomweb): a series uploaded to
Orthanc reaches the node (Orthanc's modality store, C-GET, C-MOVE), is segmented, and its DICOM-SEG and
RTSTRUCT appear in Orthanc under the same study (REST and DICOMweb), valid in highdicom and dciodvfy,
with label maps equal to seg-run predict on the same series.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_builders import dciodvfy_errors, tilted_affine, write_series
from node_helpers import records, wait_for
from orthanc_server import Orthanc, free_port, orthanc_binary
from runtime_helpers import make_bundle_dir, oblique_affine

from seg_runtime.cli import main as seg_run
from seg_runtime.rtstruct import rtstruct_masks

pytestmark = pytest.mark.integration
hd = pytest.importorskip("highdicom")
pytest.importorskip("pynetdicom")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    binary = orthanc_binary()
    if binary is None:
        pytest.skip("Orthanc is not installed (Debian packages orthanc, orthanc-dicomweb)")
    server = Orthanc(tmp_path_factory.mktemp("orthanc"), binary)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle_dir(tmp_path_factory.mktemp("bundle") / "bundle")


def _volume(shape: tuple[int, int, int]) -> np.ndarray:
    grid = np.meshgrid(*[np.linspace(0, 1, s) for s in shape], indexing="ij")
    return np.rint(3.0 * (0.6 * grid[0] + 0.4 * grid[2]) * 10) / 10


def _series(folder: Path, modality: str) -> list[Path]:
    """An oblique MR (integer values 0..3) or a gantry-tilted CT (0.1 HU steps), in a study of its own."""
    study = pydicom.uid.generate_uid()
    if modality == "MR":
        return write_series(folder, np.rint(_volume((16, 14, 9))), oblique_affine(), modality="MR", study_uid=study)
    return write_series(folder, _volume((16, 14, 9)), tilted_affine((0.8, 0.8, 2.0), 18.0), slope=0.1,
                        study_uid=study, description="abdomen")


def _derived(orthanc: Orthanc, study_id: str, modality: str) -> bytes:
    """The one instance of the study's ``modality`` series (SEG, RTSTRUCT), as a file."""
    series = [s for s in orthanc.get(f"/studies/{study_id}/series") if s["MainDicomTags"]["Modality"] == modality]
    assert len(series) == 1, [s["MainDicomTags"] for s in orthanc.get(f"/studies/{study_id}/series")]
    (instance,) = series[0]["Instances"]
    return orthanc.request("GET", f"/instances/{instance}/file")


def _wait_for_results(orthanc: Orthanc, study_id: str) -> None:
    def arrived() -> bool:
        found = {s["MainDicomTags"]["Modality"] for s in orthanc.get(f"/studies/{study_id}/series")}
        return {"SEG", "RTSTRUCT"} <= found

    assert wait_for(arrived, timeout_s=120), orthanc.get(f"/studies/{study_id}/series")


def _check_results(orthanc: Orthanc, files: list[Path], study_id: str, bundle: Path, tmp_path: Path) -> None:
    """SEG and RTSTRUCT in the study (REST and QIDO-RS), valid, and equal to seg-run on the same series."""
    study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
    assert seg_run(["predict", str(bundle), "-i", str(files[0].parent), "-o", str(tmp_path / "batch"),
                    "--no-progress"]) == 0
    labels = np.asarray(nib.load(tmp_path / "batch" / f"{files[0].parent.name}.nii.gz").dataobj)
    seg_file, rt_file = tmp_path / "seg.dcm", tmp_path / "rt.dcm"
    seg_file.write_bytes(_derived(orthanc, study_id, "SEG"))
    rt_file.write_bytes(_derived(orthanc, study_id, "RTSTRUCT"))
    segmentation = hd.seg.segread(seg_file)
    uids = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in files]  # slice order
    frames = segmentation.get_pixels_by_source_instance(uids, combine_segments=True)
    assert np.array_equal(np.transpose(frames, (2, 1, 0)), labels)
    masks = rtstruct_masks(rt_file, files[0].parent)
    assert np.array_equal(masks["class1"], labels == 1) and np.array_equal(masks["class2"], labels == 2)
    assert dciodvfy_errors(seg_file) == [] and dciodvfy_errors(rt_file) == []
    for modality in ("SEG", "RTSTRUCT"):  # DICOMweb QIDO-RS sees them under the same study
        found = orthanc.get(f"/dicom-web/studies/{study_uid}/series?Modality={modality}", accept="application/dicom+json")
        assert len(found) == 1 and found[0]["0020000D"]["Value"] == [study_uid]


def _node(bundle: Path, store: Path, **options: Any) -> Any:
    from seg_runtime.dicom_node.node import NodeSettings
    from seg_runtime.dicom_node.peers import Allowlist
    from seg_runtime.dicom_node.setup import NodeOptions, build_node

    settings = NodeSettings(ae_title="SEG", port=0, series_timeout_s=0.5, allow=Allowlist.parse(["ORTHANC"]))
    return build_node(NodeOptions(bundle=bundle, store=store, settings=settings, retry_delay_s=0.2, **options)).start()


def _route_series_through_node(orthanc: Orthanc, node, files: list[Path]) -> str:
    """Upload a series to Orthanc, have Orthanc send it to the node (modality ``seg``), wait for the
    results to come back to its study and for the node to go idle; the node is stopped. Returns the study."""
    try:
        orthanc.add_modality("seg", "SEG", node.port)
        uploaded = orthanc.upload(files)
        orthanc.post("/modalities/seg/store", {"Resources": [uploaded[0]["ParentSeries"]], "Synchronous": True})
        _wait_for_results(orthanc, uploaded[0]["ParentStudy"])
        assert node.wait_idle(60)
    finally:
        node.stop()
    return uploaded[0]["ParentStudy"]


def test_an_oblique_mr_series_routed_by_orthanc_comes_back_as_seg_and_rtstruct_by_cstore(
    orthanc: Orthanc, bundle: Path, tmp_path: Path
) -> None:
    from seg_runtime.dicom_node.peers import Peer

    files = _series(tmp_path / "mr", "MR")
    node = _node(bundle, tmp_path / "store", send_to=[Peer(orthanc.ae_title, "127.0.0.1", orthanc.dicom_port)])
    study = _route_series_through_node(orthanc, node, files)
    _check_results(orthanc, files, study, bundle, tmp_path)
    (entry,) = node.store.entries()
    assert entry.meta["delivery"] == "sent" and entry.meta["header"]["Modality"] == "MR"


def test_a_gantry_tilted_ct_series_comes_back_by_stow_rs_with_credentials(
    orthanc: Orthanc, bundle: Path, tmp_path: Path
) -> None:
    files = _series(tmp_path / "ct", "CT")
    credentials = tmp_path / "orthanc-credentials"
    credentials.write_text(f"{orthanc.user}:{orthanc.password}\n")
    credentials.chmod(0o600)
    node = _node(bundle, tmp_path / "store", stow=orthanc.dicomweb, stow_credentials=credentials)
    study = _route_series_through_node(orthanc, node, files)
    _check_results(orthanc, files, study, bundle, tmp_path)


@pytest.mark.parametrize("method", ["get", "move"])
def test_seg_run_pull_retrieves_a_study_and_sends_the_results_back(
    orthanc: Orthanc, bundle: Path, tmp_path: Path, method: str
) -> None:
    files = _series(tmp_path / "mr", "MR")
    uploaded = orthanc.upload(files)
    port = free_port()
    orthanc.add_modality(f"pull{method}", f"SEG{method.upper()}", port)
    study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
    code = seg_run(["pull", str(bundle), "--from", f"{orthanc.ae_title}@127.0.0.1:{orthanc.dicom_port}",
                    "--study", study_uid, "--method", method, "--ae-title", f"SEG{method.upper()}", "--port", str(port),
                    "--store", str(tmp_path / "store"), "--send-to", f"{orthanc.ae_title}@127.0.0.1:{orthanc.dicom_port}",
                    "--series-timeout", "0.5"])
    assert code == 0
    (retrieve,) = records(tmp_path / "store", "pull")
    assert (retrieve["status"], retrieve["completed"], retrieve["failed"]) == ("0x0000", len(files), 0)
    assert {r["calling_ae"] for r in records(tmp_path / "store", "received")} == {orthanc.ae_title}
    _wait_for_results(orthanc, uploaded[0]["ParentStudy"])
    _check_results(orthanc, files, uploaded[0]["ParentStudy"], bundle, tmp_path)
