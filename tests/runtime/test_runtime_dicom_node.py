"""seg-run listen: a real storage SCP on loopback, real associations, the store, the stages, the record.

Each fault at the network edge ends as a recorded failure with one clear line, and the node keeps
serving (a C-ECHO after each)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_builders import add_localizer, write_series
from node_helpers import StorageSCP, StowEndpoint, echo, records, send
from runtime_helpers import make_bundle_dir, oblique_affine

pytest.importorskip("pynetdicom")
pytest.importorskip("highdicom")

from seg_runtime.cli import main as seg_run  # noqa: E402
from seg_runtime.dicom_node.node import DicomNode, NodeSettings  # noqa: E402
from seg_runtime.dicom_node.peers import Allowlist, Peer, parse_route  # noqa: E402
from seg_runtime.dicom_node.setup import NodeOptions, build_node  # noqa: E402
from seg_runtime.options import PredictOptions  # noqa: E402
from seg_runtime.store import DONE, FAILED  # noqa: E402


def _volume(shape: tuple[int, int, int] = (10, 9, 6)) -> np.ndarray:
    grid = np.meshgrid(*[np.linspace(0, 1, s) for s in shape], indexing="ij")
    return np.rint(3.0 * (0.6 * grid[0] + 0.4 * grid[2]) * 10) / 10


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle_dir(tmp_path_factory.mktemp("node") / "bundle")


@pytest.fixture
def series(tmp_path: Path) -> list[Path]:
    return write_series(tmp_path / "series", _volume(), oblique_affine(), slope=0.1)


@pytest.fixture
def node_factory(tmp_path: Path, bundle: Path) -> Iterator[Callable[..., DicomNode]]:
    nodes: list[DicomNode] = []

    def make(allow: Allowlist | None = None, timeout_s: float = 0.3, **options: Any) -> DicomNode:
        options.setdefault("retry_delay_s", 0.01)
        options.setdefault("bundle", bundle)
        options.setdefault("store", tmp_path / "store")
        settings = NodeSettings(port=0, series_timeout_s=timeout_s, allow=allow or Allowlist())
        node = build_node(NodeOptions(settings=settings, **options)).start()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()


def _entries(node: DicomNode, state: str | None = None) -> list[Any]:
    return [e for e in node.store.entries(kind="series") if state is None or e.state == state]


def _case_errors(node: DicomNode) -> list[str]:
    return [line["error"] for line in records(node.store.root, "case") if line["status"] == "failed"]


def test_a_series_is_segmented_like_seg_run_and_every_object_is_recorded(
    node_factory: Callable[..., DicomNode], series: list[Path], bundle: Path, tmp_path: Path
) -> None:
    node = node_factory(predict=PredictOptions(dicom_seg=True, rtstruct=True, statistics=True, progress=False))
    assert echo(node.port)
    assert send(node.port, series) == [0] * 6
    assert node.wait_idle(60)
    (entry,) = _entries(node, DONE)
    case = entry.meta["case"]
    assert case == pydicom.dcmread(series[0]).SeriesInstanceUID
    assert sorted(entry.outputs) == sorted([f"{case}.nii.gz", f"{case}.seg.dcm", f"{case}.rtstruct.dcm",
                                            f"statistics/{case}.json"])
    assert seg_run(["predict", str(bundle), "-i", str(tmp_path / "series"), "-o", str(tmp_path / "batch"),
                    "--no-progress"]) == 0
    batch = nib.load(tmp_path / "batch" / "series.nii.gz")
    served = nib.load(entry.output_dir / f"{case}.nii.gz")
    assert np.array_equal(np.asarray(served.dataobj), np.asarray(batch.dataobj))
    assert np.allclose(served.affine, batch.affine)
    stats = json.loads((entry.output_dir / "statistics" / f"{case}.json").read_text())
    labels, voxel = np.asarray(served.dataobj), float(np.prod(nib.affines.voxel_sizes(served.affine)))
    for structure in stats["structures"]:  # --statistics on the node: volumes = counts x voxel volume
        assert structure["volume_ml"] == pytest.approx(np.isin(labels, structure["labels"]).sum() * voxel / 1000)
    received = records(node.store.root, "received")
    assert [r["status"] for r in received] == ["stored"] * 6 and {r["calling_ae"] for r in received} == {"SCU"}
    (line,) = records(node.store.root, "case")
    assert line["status"] == "ok" and line["entry"] == entry.id and line["series"] == case


def test_results_go_to_a_cstore_destination_and_the_received_data_is_dropped_then(
    node_factory: Callable[..., DicomNode], series: list[Path]
) -> None:
    destination = StorageSCP()
    try:
        node = node_factory(send_to=[Peer("DEST", "127.0.0.1", destination.port)])
        assert send(node.port, series) == [0] * 6
        assert node.wait_idle(60)
    finally:
        destination.close()
    assert sorted(ds.Modality for ds in destination.received) == ["RTSTRUCT", "SEG"]
    assert {ds.StudyInstanceUID for ds in destination.received} == {pydicom.dcmread(series[0]).StudyInstanceUID}
    (entry,) = _entries(node, DONE)
    assert entry.meta["delivery"] == "sent" and not any(entry.input_dir.iterdir())
    assert [r["status"] for r in records(node.store.root, "sent")] == ["ok", "ok"]


_CRASHING_PEER = """
import os, sys, pydicom
from pynetdicom import AE
ae = AE(ae_title="CRASH")
ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2")
assoc = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="SEG")
for path in sys.argv[2:]:
    assoc.send_c_store(pydicom.dcmread(path))
os._exit(0)  # no A-RELEASE, no A-ABORT: the process dies with its connection open
"""


@pytest.mark.parametrize("how", ["abort", "crash"])
def test_a_peer_that_disconnects_mid_series_is_a_recorded_failure_with_the_data_kept(
    node_factory: Callable[..., DicomNode], series: list[Path], how: str
) -> None:
    import subprocess
    import sys

    node = node_factory()
    if how == "abort":
        assert send(node.port, series, abort_after=3) == [0, 0, 0]
    else:
        subprocess.run([sys.executable, "-c", _CRASHING_PEER, str(node.port), *map(str, series[:3])], check=True,
                       timeout=60)
    assert node.wait_idle(60)
    (entry,) = _entries(node, FAILED)
    assert "the peer disconnected mid-series after 3 instance(s); not processed (send the series again)" in entry.error
    assert len(list(entry.input_dir.iterdir())) == 3 and _case_errors(node) == [entry.error]
    assert echo(node.port)  # still serving


def test_callers_not_on_the_allowlist_are_refused_and_recorded(
    node_factory: Callable[..., DicomNode], series: list[Path]
) -> None:
    node = node_factory(allow=Allowlist.parse(["PACS"]))
    assert send(node.port, series[:1], calling="INTRUDER") is None
    assert send(node.port, series, calling="PACS") == [0] * 6
    assert node.wait_idle(60) and len(_entries(node, DONE)) == 1
    (refused,) = records(node.store.root, "association")
    assert refused["status"] == "refused" and refused["reason"] == "calling AE title 'INTRUDER' is not on the allowlist"
    elsewhere = node_factory(allow=Allowlist.parse([], ["10.0.0.0/8"]))
    assert send(elsewhere.port, series[:1], calling="PACS") is None
    assert "address 127.0.0.1 is not on the allowlist" in [r["reason"] for r in records(elsewhere.store.root,
                                                                                         "association")]


def test_duplicates_are_acknowledged_once_and_a_changed_duplicate_refuses_the_series(
    node_factory: Callable[..., DicomNode], series: list[Path]
) -> None:
    node = node_factory()
    assert send(node.port, [*series, series[2]]) == [0] * 7
    assert node.wait_idle(60)
    (done,) = _entries(node, DONE)
    assert done.meta["instances"] == 6
    assert [r["status"] for r in records(node.store.root, "received")].count("duplicate") == 1
    changed = pydicom.dcmread(series[1])
    changed.PixelData = bytes(len(changed.PixelData))
    uid = changed.SeriesInstanceUID = pydicom.uid.generate_uid()
    others = [pydicom.dcmread(p) for p in series[:3]]
    for ds in others:
        ds.SeriesInstanceUID = uid
    assert send(node.port, [*others, changed]) == [0, 0, 0, 0xC002]
    assert node.wait_idle(60)
    assert any("received twice with different content" in e for e in _case_errors(node))


def test_mixed_series_in_one_association_become_separate_cases(
    node_factory: Callable[..., DicomNode], series: list[Path], tmp_path: Path
) -> None:
    other = write_series(tmp_path / "other", _volume((8, 8, 5)), np.eye(4), modality="MR")
    node = node_factory()
    interleaved = [item for pair in zip(series, other) for item in pair] + series[5:]
    assert send(node.port, interleaved) == [0] * 11
    assert node.wait_idle(60)
    assert sorted(e.meta["instances"] for e in _entries(node, DONE)) == [5, 6]
    assert len(records(node.store.root, "case")) == 2


def test_an_unsupported_transfer_syntax_is_refused_at_negotiation_and_recorded(
    node_factory: Callable[..., DicomNode], series: list[Path]
) -> None:
    node = node_factory()
    jpeg2000 = "1.2.840.10008.1.2.4.91"
    statuses = send(node.port, [], syntaxes=[jpeg2000])
    assert statuses == []
    refused = [r for r in records(node.store.root, "association") if r["status"] == "context refused"]
    assert refused and all("1.2.840.10008.1.2.4.91 not supported" in r["reason"] for r in refused)
    assert echo(node.port)


def test_a_series_larger_than_max_memory_fails_in_one_line(
    node_factory: Callable[..., DicomNode], series: list[Path]
) -> None:
    node = node_factory(predict=PredictOptions(dicom_seg=True, rtstruct=True, max_memory_gb=1000 / 2**30,
                                               progress=False))
    assert send(node.port, series) == [0] * 6
    assert node.wait_idle(60)
    (error,) = _case_errors(node)
    assert "the DICOM series of shape (10, 9, 6) needs" in error and "over the memory limit" in error
    assert echo(node.port)


def test_an_unreachable_destination_is_retried_then_recorded_failed_with_the_data_kept(
    node_factory: Callable[..., DicomNode], series: list[Path]
) -> None:
    closed = StorageSCP()
    closed.close()  # nothing listens on this port now
    node = node_factory(send_to=[Peer("DEST", "127.0.0.1", closed.port)], retries=2)
    assert send(node.port, series) == [0] * 6
    assert node.wait_idle(60)
    (entry,) = _entries(node, FAILED)
    assert entry.error.startswith("delivery failed after 3 attempt(s): C-STORE DEST@127.0.0.1:")
    assert "unreachable" in entry.error and entry.error.endswith("(received data kept)")
    assert len(list(entry.input_dir.iterdir())) == 6 and entry.outputs  # results and data kept
    sent = records(node.store.root, "sent")
    assert {(r["status"], r["attempts"]) for r in sent} == {("failed", 3)}


def test_stow_failed_instances_are_read_retried_and_recorded(
    node_factory: Callable[..., DicomNode], series: list[Path], tmp_path: Path
) -> None:
    endpoint = StowEndpoint(status=409, failed_reason=0xA700)
    credentials = tmp_path / "credentials"
    credentials.write_text("seg:s3cret\n")
    try:
        node = node_factory(stow=endpoint.url, stow_credentials=credentials, retries=1)
        assert send(node.port, series) == [0] * 6
        assert node.wait_idle(60)
    finally:
        endpoint.close()
    (entry,) = _entries(node, FAILED)
    assert "STOW-RS http://127.0.0.1:" in entry.error
    assert "HTTP 409, FailedSOPSequence: 1.2.3.4.5 (reason 0xA700)" in entry.error
    assert len(endpoint.requests) == 2 and endpoint.requests[0]["path"] == "/dicom-web/studies"
    assert endpoint.requests[0]["auth"] == "Basic c2VnOnMzY3JldA=="  # seg:s3cret
    assert 'type="application/dicom"' in endpoint.requests[0]["type"]


def test_instances_disagreeing_on_identity_refuse_the_series(
    node_factory: Callable[..., DicomNode], series: list[Path]
) -> None:
    node = node_factory()
    datasets = [pydicom.dcmread(p) for p in series]
    datasets[4].PatientID = "SOMEONE-ELSE"
    assert send(node.port, datasets) == [0, 0, 0, 0, 0xC001, 0]
    assert node.wait_idle(60)
    (error,) = _case_errors(node)
    assert "refused: instances disagree: PatientID 'SOMEONE-ELSE' differs from the series' 'P1'" in error


def test_late_instances_start_a_new_recorded_run(node_factory: Callable[..., DicomNode], series: list[Path]) -> None:
    node = node_factory()
    assert send(node.port, series[:5]) == [0] * 5
    assert node.wait_idle(60)
    assert send(node.port, series[5:]) == [0]
    assert node.wait_idle(60)
    cases = sorted(e.meta["case"] for e in _entries(node))
    uid = pydicom.dcmread(series[0]).SeriesInstanceUID
    assert cases == [uid, f"{uid}-2"]
    (late,) = [r for r in records(node.store.root, "series") if r["status"] == "late"]
    assert late["case"] == f"{uid}-2" and "a new run" in late["reason"]


def test_localizers_are_skipped_with_a_record_and_invalid_uids_refused(
    node_factory: Callable[..., DicomNode], series: list[Path]
) -> None:
    localizer = add_localizer(series[0].parent, series[0])
    bad = pydicom.dcmread(series[1])
    bad.SOPInstanceUID = "../../../../etc/passwd"
    node = node_factory()
    assert send(node.port, [*series, localizer, bad]) == [0] * 7 + [0xC000]
    assert node.wait_idle(60)
    (entry,) = _entries(node, DONE)
    assert entry.meta["instances"] == 6
    statuses = {r["status"]: r for r in records(node.store.root, "received")}
    assert "a localizer" in statuses["skipped"]["reason"]
    assert statuses["refused"]["reason"] == "not a valid UID: SOPInstanceUID"
    assert not list(node.store.root.rglob("passwd*"))


def test_the_quota_refuses_instances_with_out_of_resources(
    node_factory: Callable[..., DicomNode], series: list[Path]
) -> None:
    size = series[0].stat().st_size
    node = node_factory(quota_gb=(2.5 * size) / 2**30)
    assert send(node.port, series) == [0, 0] + [0xA700] * 4
    assert "is full" in [r for r in records(node.store.root, "received") if r["status"] == "refused"][0]["reason"]
    assert node.wait_idle(60)
    (error,) = _case_errors(node)  # an incomplete series is never predicted
    assert "refused: incomplete: an instance could not be stored (store " in error and "is full" in error
    assert echo(node.port)


def test_routes_send_series_to_bundles_by_modality(
    node_factory: Callable[..., DicomNode], series: list[Path], tmp_path: Path
) -> None:
    mr_bundle = make_bundle_dir(tmp_path / "mr_bundle")
    mr = write_series(tmp_path / "mr", _volume((8, 8, 5)), np.eye(4), modality="MR")
    node = node_factory(bundle=None, routes=[parse_route(f"Modality=MR:{mr_bundle}")])
    assert send(node.port, [*mr, *series]) == [0] * 11
    assert node.wait_idle(60)
    by_status = {line["status"]: line for line in records(node.store.root, "case")}
    assert by_status["ok"]["bundle"] == str(mr_bundle)
    assert "no route matches (Modality='CT', SeriesDescription='')" in by_status["failed"]["error"]


def _start_listen(bundle: Path, store: Path, timeout_s: float) -> tuple[Any, int]:
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "seg_runtime", "listen", str(bundle), "--store", str(store),
                                "--port", "0", "--series-timeout", str(timeout_s)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()  # "seg-run listen: SEG on 127.0.0.1:PORT, store ..."
    assert line.startswith("seg-run listen: SEG on 127.0.0.1:"), line
    return process, int(line.split(":")[2].split(",")[0])


def test_a_killed_node_resumes_its_pending_series_after_a_restart(
    bundle: Path, series: list[Path], tmp_path: Path
) -> None:
    import signal

    from node_helpers import wait_for

    from seg_runtime.store import Store

    store = tmp_path / "store"
    first, port = _start_listen(bundle, store, timeout_s=600)
    assert send(port, series) == [0] * 6  # acknowledged: fsynced in the store
    first.send_signal(signal.SIGKILL)
    first.wait()
    second, port = _start_listen(bundle, store, timeout_s=0.3)
    try:
        assert wait_for(lambda: [e.state for e in Store(store).entries()] == [DONE], timeout_s=60)
        assert echo(port)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0
    (entry,) = Store(store).entries()
    assert entry.meta["instances"] == 6 and entry.outputs
    assert [r["status"] for r in records(store, "case")] == ["ok"]
    assert json.loads((store / "predictions.json").read_text())["summary"]["ok"] == 1
