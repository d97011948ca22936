"""The store of accepted work (service jobs, DICOM node series): durability across kills, the quota,
expiry, and ids and names that can never escape the store."""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from seg_runtime.store import (
    ACCEPTED,
    DONE,
    FAILED,
    RECEIVING,
    RUNNING,
    Store,
    StoreError,
    StoreFull,
    check_id,
    check_name,
)

EXPORT = Path(__file__).resolve().parents[2] / "export"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_staged_job_is_committed_with_its_files_and_folders_0700(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    with store.stage("job", {"model": "demo"}) as staging:
        staging.add_file("image.nii.gz", b"abc" * 1000)
        staging.add_file("second.nrrd", io.BytesIO(b"x" * (3 << 20)))  # streamed in chunks
    entry = store.get(staging.entry.id)
    assert entry.state == ACCEPTED and entry.meta == {"model": "demo"} and entry.kind == "job"
    assert sorted(p.name for p in entry.input_dir.iterdir()) == ["image.nii.gz", "second.nrrd"]
    assert (entry.input_dir / "second.nrrd").stat().st_size == 3 << 20
    for folder in (store.root, store.entries_dir, entry.path, entry.input_dir, entry.output_dir):
        assert _mode(folder) == 0o700, folder
    assert store.used_bytes == 3000 + (3 << 20)
    assert not [p for p in store.entries_dir.iterdir() if p.name.startswith(".")]


def test_a_failed_upload_leaves_nothing_behind(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    with pytest.raises(RuntimeError), store.stage("job") as staging:
        staging.add_file("a.nii.gz", b"1234")
        raise RuntimeError("client went away")
    assert list(store.entries()) == [] and list(store.entries_dir.iterdir()) == []
    assert store.used_bytes == 0


def test_states_follow_the_allowed_transitions_and_done_needs_its_files(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    entry = store.create("series", {"series": "1.2.3"})
    assert entry.state == RECEIVING
    store.add_file(entry.id, "1.2.3.4.dcm", b"dicom")
    with pytest.raises(StoreError, match="cannot go from receiving to running"):
        store.update(entry.id, RUNNING)
    store.update(entry.id, ACCEPTED)
    assert store.claim(entry.id).state == RUNNING
    assert store.claim(entry.id) is None  # a second worker does not get it
    with pytest.raises(OSError):
        store.finish(entry.id, ["labels.nii.gz"])  # no such output: never reported done
    assert store.get(entry.id).state == RUNNING
    store.output_path(entry.id, "labels.nii.gz").write_bytes(b"labels")
    store.output_path(entry.id, "statistics/case.json").write_bytes(b"{}")  # one folder level is allowed
    for bad in ("a/b/c.json", "../x.json", "statistics/../../x"):
        with pytest.raises(StoreError):
            store.output_path(entry.id, bad)
    done = store.finish(entry.id, ["labels.nii.gz", "statistics/case.json"], record={"status": "ok"})
    assert done.state == DONE and done.outputs["labels.nii.gz"]["bytes"] == 6 and done.record == {"status": "ok"}
    assert done.attempts == 1 and done.finished is not None
    with pytest.raises(StoreError, match="cannot go from done to running"):
        store.update(entry.id, RUNNING)


_KILLED_WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from seg_runtime.store import Store

    store = Store(sys.argv[1])
    acked = store.create("job", {"n": 1}, state="accepted")
    print("ACK", acked.id, flush=True)           # what a front door would now acknowledge
    running = store.create("job", {"n": 2}, state="accepted")
    store.claim(running.id)
    print("RUNNING", running.id, flush=True)

    class Slow:
        def read(self, n):
            time.sleep(0.05)
            return b"x" * 1000

    with store.stage("job", {"n": 3}) as staging:
        print("STAGING", flush=True)
        staging.add_file("big.nii.gz", Slow())       # never ends: killed mid-upload
""")


def test_a_killed_process_loses_nothing_acknowledged_and_shows_nothing_half_written(tmp_path: Path) -> None:
    root = tmp_path / "store"
    process = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(root), str(EXPORT)],
                               stdout=subprocess.PIPE, text=True)
    lines = {}
    for line in process.stdout:
        key, _, value = line.strip().partition(" ")
        lines[key] = value
        if key == "STAGING":
            break
    time.sleep(0.3)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    store = Store(root)
    todo = store.recover()
    assert [e.id for e in todo] == [lines["ACK"], lines["RUNNING"]]
    assert store.get(lines["RUNNING"]).attempts == 1  # it ran once and runs again
    assert all(e.meta["n"] in (1, 2) for e in store.entries())  # the half-staged upload is no entry
    assert len([p for p in store.entries_dir.iterdir() if p.name.startswith(".tmp-")]) == 1  # swept when stale


def test_recover_reruns_a_done_entry_whose_output_was_altered_or_lost(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    entries = []
    for name in ("kept", "altered", "lost"):
        entry = store.create("job", {"name": name}, state=ACCEPTED)
        store.add_file(entry.id, "in.nii.gz", b"input")
        store.claim(entry.id)
        store.output_path(entry.id, "out.nii.gz").write_bytes(b"output")
        entries.append(store.finish(entry.id, ["out.nii.gz"]))
    (entries[1].output_dir / "out.nii.gz").write_bytes(b"outpuT")
    (entries[2].output_dir / "out.nii.gz").unlink()
    gone = store.create("job", state=ACCEPTED)
    store.claim(gone.id)
    store.output_path(gone.id, "out.nii.gz").write_bytes(b"o")
    store.finish(gone.id, ["out.nii.gz"])
    (gone.output_dir / "out.nii.gz").unlink()  # and no inputs to run it again from
    rerun = Store(store.root).recover()
    assert sorted(e.meta["name"] for e in rerun) == ["altered", "lost"]
    assert store.get(entries[0].id).state == DONE
    assert store.get(gone.id).state == FAILED and "inputs are gone" in store.get(gone.id).error


def test_recover_leaves_the_work_of_a_live_process_alone(tmp_path: Path) -> None:
    """Processes sharing a store (service replicas): one that restarts takes over only the dead one's work."""
    store = Store(tmp_path / "store")
    live, dead = (store.create("job", {"holder": name}, state=ACCEPTED) for name in ("live", "dead"))
    waiting = store.create("job", {"holder": "live"}, state=ACCEPTED)
    store.claim(live.id)
    store.claim(dead.id)
    rerun = Store(store.root).recover(held=lambda entry: entry.meta["holder"] == "live")
    assert [e.id for e in rerun] == [dead.id]
    assert store.get(live.id).state == RUNNING and store.get(waiting.id).state == ACCEPTED


def test_the_quota_refuses_before_writing_and_counts_after_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "store", quota_bytes=10_000)
    entry = store.create("series")
    store.add_file(entry.id, "a.dcm", b"x" * 6000)
    with pytest.raises(StoreFull, match="full"):
        store.add_file(entry.id, "b.dcm", b"x" * 6000)
    assert not (entry.input_dir / "b.dcm").exists() and store.used_bytes == 6000
    with pytest.raises(StoreFull), store.stage("job") as staging:
        staging.add_file("big", io.BytesIO(b"y" * 5000))
    assert store.used_bytes == 6000 and len(list(store.entries())) == 1
    again = Store(store.root, quota_bytes=10_000)
    assert again.used_bytes == 6000
    with pytest.raises(StoreFull):
        again.add_file(entry.id, "c.dcm", b"z" * 4001)
    again.drop_inputs(entry.id)
    assert again.used_bytes == 0 and not any(entry.input_dir.iterdir())
    again.add_file(entry.id, "c.dcm", b"z" * 100)
    (again.output_path(entry.id, "statistics/x.json")).write_bytes(b"{}")
    again.clear_outputs(entry.id)  # files written by a pipeline (not counted yet) are removed too
    assert not any(entry.output_dir.iterdir()) and again.used_bytes == 100
    again.delete(entry.id)
    assert again.used_bytes == 0
    again.add_file(again.create("series").id, "c.dcm", b"z" * 9000)


def test_a_per_file_limit_stops_a_stream(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    with pytest.raises(StoreError, match="more than 100 bytes"), store.stage("job") as staging:
        staging.add_file("upload", io.BytesIO(b"q" * 101), limit=100)
    assert store.used_bytes == 0


def test_finished_entries_expire_after_keep_hours_and_pending_ones_never(tmp_path: Path) -> None:
    store = Store(tmp_path / "store", keep_hours=2)
    done = store.create("job", state=ACCEPTED)
    store.claim(done.id)
    store.finish(done.id, [])
    failed = store.fail(store.create("job", state=ACCEPTED).id, "bad input")
    pending = store.create("series")
    assert store.expire() == []
    later = time.time() + 2 * 3600 + 1
    assert sorted(store.expire(now=later)) == sorted([done.id, failed.id])
    assert [e.id for e in store.entries()] == [pending.id]


@pytest.mark.parametrize("bad", ["", "../../etc", "a/b/c/d/e/f", ".hidden-id", "short", "x" * 65, "id with space",
                                 "1.2.840.10008"])
def test_bad_ids_are_refused_before_they_touch_a_path(tmp_path: Path, bad: str) -> None:
    store = Store(tmp_path / "store")
    with pytest.raises(StoreError, match="not a valid entry id"):
        store.get(bad)
    with pytest.raises(StoreError):
        check_id(bad)


def test_unknown_ids_and_unsafe_names_are_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    with pytest.raises(StoreError, match="no entry"):
        store.get(store.new_id())
    entry = store.create("job")
    for name in ("../x", "a/b", ".dcm", "..", "a..b", "/etc/passwd", "x" * 129, ""):
        with pytest.raises(StoreError, match="not a safe file name"):
            store.add_file(entry.id, name, b"1")
    assert check_name("1.2.840.113619.2.55.3.604688119.971.1.dcm")
    assert store.new_id() != store.new_id() and check_id(store.new_id())
