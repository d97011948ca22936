"""``seg-run serve`` as a real uvicorn process on loopback: load, SIGKILL and restart, SIGTERM.

Bounded: at most 24 uploads of small volumes per test, every wait has a deadline.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import oblique_affine, predict, save_nifti
from serve_helpers import TOKEN, ServerProcess, post_file, resampling_bundle, result_labels, volume, wait_job

from seg_runtime.io import read_image
from seg_runtime.session import OnnxBackend

pytestmark = pytest.mark.integration
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

CASES = 6
# uvicorn shuts down gracefully on SIGTERM, then re-raises the signal: the exit status says "terminated".
STOPPED = (0, -signal.SIGTERM)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], list[np.ndarray]]:
    """A bundle, six distinct scans, and the label map ``seg-run`` writes for each."""
    root = tmp_path_factory.mktemp("serve_cases")
    bundle = resampling_bundle(root / "brain", patch_size=[16, 16, 16])
    scans = [save_nifti(root / f"case{i}.nii.gz", volume(100 + i, (56, 50, 40)) * (1 + 0.1 * i),
                        oblique_affine()) for i in range(CASES)]
    predict(OnnxBackend(bundle, provider="cpu", threads=1), root / "case0.nii.gz", root / "warm")
    expected = []
    for scan in scans:
        out = root / f"cli_{scan.name.split('.')[0]}"
        predict(OnnxBackend(bundle, provider="cpu", threads=1), scan, out)
        expected.append(np.asarray(read_image(out / scan.name)[0]))
    assert all(not np.array_equal(expected[0], e) for e in expected[1:])  # a mixed-up result would show
    return bundle, scans, expected


def _states(store: Path) -> dict[str, str]:
    found = {}
    for entry in (store / "entries").iterdir():
        if not entry.name.startswith("."):
            found[entry.name] = json.loads((entry / "entry.json").read_text())["state"]
    return found


def test_concurrent_clients_past_the_queue_get_429_and_every_accepted_job_is_right(
        tmp_path: Path, cases: tuple[Path, list[Path], list[np.ndarray]]) -> None:
    bundle, scans, expected = cases
    server = ServerProcess(tmp_path, [bundle], tmp_path / "store", "--name", "brain", "--queue-size", "3",
                           "--workers", "1")
    accepted, refused, lock = [], [], threading.Lock()

    def client(index: int) -> None:
        for round_ in range(4):
            case = (index + round_) % CASES
            response = post_file(server.url, "brain", scans[case])
            with lock:
                if response.status_code == 202:
                    accepted.append((response.json()["id"], case))
                else:
                    refused.append((response.status_code, response.headers.get("retry-after")))

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        jobs = [(wait_job(server.url, job_id), case) for job_id, case in accepted]
        for (job, case) in jobs:
            assert job["state"] == "done", job
            np.testing.assert_array_equal(result_labels(server.url, job["id"], tmp_path), expected[case])
    finally:
        assert server.stop() in STOPPED, server.log_tail()
    assert len(accepted) + len(refused) == 24
    assert len(accepted) >= 3 and refused, (len(accepted), refused)
    assert all(status == 429 and int(after) >= 1 for status, after in refused)


def test_a_killed_server_loses_nothing_it_accepted(tmp_path: Path,
                                                   cases: tuple[Path, list[Path], list[np.ndarray]]) -> None:
    bundle, scans, expected = cases
    store = tmp_path / "store"
    server = ServerProcess(tmp_path, [bundle], store, "--name", "brain", "--queue-size", "32")
    accepted = []
    try:
        for round_ in range(2):
            for case, scan in enumerate(scans):
                response = post_file(server.url, "brain", scan)
                assert response.status_code == 202, response.text
                accepted.append((response.json()["id"], case))
            if round_ == 0:
                wait_job(server.url, accepted[0][0])  # at least one done before the kill
    finally:
        server.signal(signal.SIGKILL)
        server.process.wait(10)
    at_kill = _states(store)
    assert sorted(at_kill) == sorted(job_id for job_id, _ in accepted)  # every 202 was on disk
    assert "done" in at_kill.values() and set(at_kill.values()) - {"done"}, at_kill  # killed mid-load
    restarted = ServerProcess(tmp_path, [bundle], store, "--name", "brain", "--queue-size", "32")
    try:
        for job_id, case in accepted:
            job = wait_job(restarted.url, job_id)
            assert job["state"] == "done", job
            np.testing.assert_array_equal(result_labels(restarted.url, job_id, tmp_path), expected[case])
    finally:
        assert restarted.stop() in STOPPED, restarted.log_tail()


def test_sigterm_stops_admitting_and_finishes_what_runs(tmp_path: Path,
                                                        cases: tuple[Path, list[Path], list[np.ndarray]]) -> None:
    bundle, scans, _ = cases
    store = tmp_path / "store"
    server = ServerProcess(tmp_path, [bundle], store, "--name", "brain", "--queue-size", "32")
    ids = [post_file(server.url, "brain", scan).json()["id"] for scan in scans]
    deadline = time.monotonic() + 30
    while "running" not in _states(store).values() and "done" not in _states(store).values():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    server.signal(signal.SIGTERM)
    assert server.process.wait(60) in STOPPED, server.log_tail()
    states = _states(store)
    assert sorted(states) == sorted(ids)
    assert "running" not in states.values() and "failed" not in states.values(), states
    assert "accepted" in states.values(), states  # queued jobs were not started after the signal
    restarted = ServerProcess(tmp_path, [bundle], store, "--name", "brain")
    try:
        assert all(wait_job(restarted.url, job_id)["state"] == "done" for job_id in ids)
    finally:
        restarted.stop()


def test_ray_serve_replicas_share_the_store_and_equal_seg_run(
        tmp_path: Path, cases: tuple[Path, list[Path], list[np.ndarray]]) -> None:
    pytest.importorskip("ray.serve")
    from seg_runtime.serve.holders import Holder

    bundle, scans, expected = cases
    store = tmp_path / "store"
    server = ServerProcess(tmp_path, [bundle], store, "--name", "brain", "--engine", "ray", "--replicas", "2",
                           "--cpus-per-replica", "0.5", ready_s=240)
    try:
        answers: dict[int, object] = {}

        def send(case: int) -> None:
            answers[case] = post_file(server.url, "brain", scans[case])

        threads = [threading.Thread(target=send, args=(i,)) for i in range(CASES)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        for case, response in sorted(answers.items()):
            assert response.status_code == 202, response.text
            job = wait_job(server.url, response.json()["id"])
            assert job["state"] == "done", job
            np.testing.assert_array_equal(result_labels(server.url, job["id"], tmp_path), expected[case])
        me = Holder(store)
        replicas = [p.stem for p in (store / "holders").glob("*.lock") if p.stem != me.id]
        assert len(replicas) == 2 and all(me.alive(r) for r in replicas)  # two replicas, each holding the store
        me.close()
    finally:
        assert server.stop(timeout=150) in STOPPED, server.log_tail()


def test_tls_when_asked(tmp_path: Path, cases: tuple[Path, list[Path], list[np.ndarray]]) -> None:
    import shutil
    import subprocess

    import httpx

    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    bundle, scans, expected = cases
    server = ServerProcess(tmp_path, [bundle], tmp_path / "store", "--name", "brain", "--ssl-certfile", str(cert),
                           "--ssl-keyfile", str(key), verify=cert)
    try:
        with open(scans[0], "rb") as handle:
            response = httpx.post(f"{server.url}/v1/models/brain/jobs?wait=60", files={"file": (scans[0].name, handle)},
                                  headers={"Authorization": f"Bearer {TOKEN}"}, verify=str(cert), timeout=90)
        try:
            plain: object = httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
        except httpx.HTTPError as exc:  # plain HTTP to a TLS port gets no answer
            plain = exc
    finally:
        server.stop()
    assert response.status_code == 200
    (tmp_path / "tls.nii.gz").write_bytes(response.content)
    np.testing.assert_array_equal(np.asarray(read_image(tmp_path / "tls.nii.gz")[0]), expected[0])
    assert not isinstance(plain, httpx.Response) or plain.status_code >= 400
