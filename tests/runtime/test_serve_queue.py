"""The bounded queue, the server-wide memory budget, and restarting on a store with unfinished jobs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import save_nifti
from serve_helpers import TOKEN, auth, build, client, resampling_bundle, upload, volume, wait_done

from seg_runtime.serve.admission import JobQueue, MemoryBudget, QueuedJob

pytest.importorskip("fastapi")


class _Recorder:
    """Runs 'jobs' that hold for a while and records how many ran at once."""

    def __init__(self, hold: float = 0.15, until: int | None = None) -> None:
        self.hold, self.until, self.now, self.most, self.done, self.started = hold, until, 0, 0, [], []
        self.lock = threading.Lock()

    def __call__(self, job_id: str) -> None:
        with self.lock:
            self.started.append(job_id)
            self.now += 1
            self.most = max(self.most, self.now)
        deadline = time.monotonic() + self.hold
        # With ``until``, hold on until that many ran at once (or the hold ends): a slow machine
        # must not make two jobs that may overlap run one after the other by chance.
        while time.monotonic() < deadline and not (self.until and self.most >= self.until):
            time.sleep(0.01)
        with self.lock:
            self.now -= 1
            self.done.append(job_id)


def _drain(queue: JobQueue, recorder: _Recorder, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(recorder.done) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    queue.close(timeout=5)


@pytest.mark.parametrize(("reserve", "most"), [(60, 1), (40, 2)])
def test_running_jobs_never_reserve_more_than_the_budget(reserve: int, most: int) -> None:
    budget, recorder = MemoryBudget(100), _Recorder(hold=0.15 if most == 1 else 10.0, until=None if most == 1 else 2)
    queue = JobQueue(capacity=8, workers=3, budget=budget, run=recorder)
    for index in range(4):
        assert queue.submit(QueuedJob(f"job{index}", reserve))
    queue.start()
    _drain(queue, recorder, 4)
    assert sorted(recorder.done) == [f"job{i}" for i in range(4)]
    assert recorder.most == most  # 60 + 60 > 100: one at a time; 40 + 40 fits, a third would not
    assert budget.reserved == 0


def test_jobs_start_first_come_first_served() -> None:
    recorder = _Recorder(hold=0.1)
    queue = JobQueue(capacity=8, workers=2, budget=MemoryBudget(100), run=recorder)
    for name, reserve in (("small1", 10), ("big", 95), ("small2", 10)):
        queue.submit(QueuedJob(name, reserve))
    queue.start()
    _drain(queue, recorder, 3)
    # small2 would fit beside small1, but the big job waiting at the head is never overtaken.
    assert recorder.started == ["small1", "big", "small2"]


def test_a_full_queue_refuses_and_a_draining_one_starts_nothing() -> None:
    recorder = _Recorder(hold=0.3)
    queue = JobQueue(capacity=2, workers=1, budget=MemoryBudget(100), run=recorder)
    assert queue.submit(QueuedJob("a", 10)) and queue.submit(QueuedJob("b", 10))
    assert not queue.submit(QueuedJob("c", 10))
    assert queue.submit(QueuedJob("recovered", 10), force=True)
    queue.start()
    deadline = time.monotonic() + 10
    while not recorder.started and time.monotonic() < deadline:  # "a" is running
        time.sleep(0.01)
    queue.drain()  # SIGTERM: "a" finishes, "b" and "recovered" wait in the store for the next start
    queue.close(timeout=5)
    assert recorder.done == ["a"] and queue.depth == 2
    assert not queue.submit(QueuedJob("d", 10))


def test_429_with_retry_after_when_the_queue_is_full(tmp_path: Path) -> None:
    bundle = resampling_bundle(tmp_path / "brain")
    scans = [save_nifti(tmp_path / f"s{i}.nii.gz", volume(i), np.eye(4)) for i in range(3)]
    service = build(tmp_path, [bundle], provider="cpu", queue_size=2, workers=1)
    gate, run = threading.Event(), service.queue._run
    service.queue._run = lambda job_id: (gate.wait(30), run(job_id))  # the worker holds its first job
    with client(service) as c:
        first, second, third = (upload(c, "brain", path) for path in scans)
        gate.set()
        jobs = [wait_done(c, r.json()["id"]) for r in (first, second)]
        deadline, metrics = time.monotonic() + 10, ""
        while 'outcome="done"} 2.0' not in metrics and time.monotonic() < deadline:  # recorded just after
            metrics = c.get("/metrics", headers=auth()).text
    assert [first.status_code, second.status_code, third.status_code] == [202, 202, 429]
    assert int(third.headers["retry-after"]) >= 1 and "queue is full" in third.json()["detail"]
    assert [j["state"] for j in jobs] == ["done", "done"]
    assert 'seg_uploads_total{outcome="busy"} 1.0' in metrics
    assert 'seg_job_seconds_count{model="brain",outcome="done"} 2.0' in metrics


def test_a_restarted_server_finishes_every_accepted_job(tmp_path: Path) -> None:
    """Jobs accepted (one mid-run when the server died) are all done by the next server on the store."""
    from seg_runtime.serve.jobs import KIND
    from seg_runtime.serve.uploads import UploadFile, ZipLimits, accept_upload

    bundle = resampling_bundle(tmp_path / "brain")
    first = build(tmp_path, [bundle], provider="cpu")  # never started: a server killed before its workers ran
    model, owner = first.models["brain"], "0" * 32
    ids = []
    for index in range(3):
        path = save_nifti(tmp_path / f"s{index}.nii.gz", volume(10 + index), np.eye(4))
        with open(path, "rb") as handle:
            entry = accept_upload(first.store, model, [("file", UploadFile(path.name, handle))], owner,
                                  2**30, ZipLimits(), 2**30)
        ids.append(entry.id)
    first.store.claim(ids[0])  # it was running when the server died
    from seg_runtime.serve.security import owner_id

    for entry_id in ids:  # hand them to the test token (the owner is the hash of the token)
        first.store.update(entry_id, meta={"owner": owner_id(TOKEN)})
    with client(build(tmp_path, [bundle], provider="cpu")) as c:
        jobs = [wait_done(c, entry_id) for entry_id in ids]
    assert [j["state"] for j in jobs] == ["done"] * 3
    assert all(e.kind == KIND for e in first.store.entries())


def test_a_holder_is_alive_until_its_process_dies(tmp_path: Path) -> None:
    import subprocess
    import sys

    from seg_runtime.serve.holders import Holder

    me = Holder(tmp_path)
    code = ("import sys, time; from pathlib import Path; from seg_runtime.serve.holders import Holder; "
            f"h = Holder(Path({str(tmp_path)!r})); print(h.id, flush=True); time.sleep(60)")
    other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        other_id = other.stdout.readline().strip()
        assert me.alive(other_id) and me.alive(me.id)
    finally:
        other.kill()
        other.wait(10)
    assert not me.alive(other_id)  # the kernel dropped the dead process's lock
    assert not (tmp_path / "holders" / f"{other_id}.lock").exists()
    assert not me.alive("../../etc/passwd") and not me.alive(None)
    me.close()


def test_finished_jobs_expire_and_failures_are_counted_by_reason(tmp_path: Path) -> None:
    bundle = resampling_bundle(tmp_path / "brain")
    bad = volume(20)
    bad[0, 0, 0] = np.inf
    scan = save_nifti(tmp_path / "inf.nii.gz", bad, np.eye(4))
    with client(build(tmp_path, [bundle], provider="cpu", keep_hours=3 / 3600)) as c:
        job = wait_done(c, upload(c, "brain", scan).json()["id"])
        metrics = c.get("/metrics", headers=auth()).text
        deadline = time.monotonic() + 30
        while c.get(f"/v1/jobs/{job['id']}", headers=auth()).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        gone = c.get(f"/v1/jobs/{job['id']}", headers=auth())
    assert job["state"] == "failed" and "NaN or Inf" in job["error"]
    assert 'seg_failures_total{reason="bad_values"} 1.0' in metrics
    assert gone.status_code == 404 and not (tmp_path / "store" / "entries" / job["id"]).exists()


def test_ray_serve_scaling_options() -> None:
    from seg_runtime.serve.ray_serve import RayServeOptions, RayServeUnavailable

    assert RayServeOptions(replicas=3).scaling() == {"num_replicas": 3}
    auto = RayServeOptions(min_replicas=0, max_replicas=4).scaling()["autoscaling_config"]
    assert auto["min_replicas"] == 0 and auto["max_replicas"] == 4 and auto["initial_replicas"] == 1
    with pytest.raises(RayServeUnavailable, match="--min-replicas needs --max-replicas"):
        RayServeOptions(min_replicas=2).scaling()
    with pytest.raises(RayServeUnavailable, match="need 0 <= --min-replicas <= --max-replicas"):
        RayServeOptions(min_replicas=5, max_replicas=2).scaling()


def test_exactly_one_process_takes_over_a_dead_holders_job(tmp_path: Path) -> None:
    from seg_runtime.serve.holders import Holder

    first, second = Holder(tmp_path), Holder(tmp_path)
    assert first.take_over("job1", "dead-host-1-abc") and first.take_over("job1", "dead-host-1-abc")
    assert not second.take_over("job1", "dead-host-1-abc")  # the first one has it
    assert second.take_over("job2", "dead-host-1-abc") and second.take_over("job1", "another-dead-holder")
    first.sweep({"job2"})
    assert sorted(p.name for p in (tmp_path / "holders").glob("*.taken")) == ["job2.dead-host-1-abc.taken"]
