"""The service's security baseline, item by item: tokens, Host/Origin, hostile zips, guessed ids, the quota."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import save_nifti
from serve_helpers import (
    OTHER_TOKEN,
    auth,
    build,
    client,
    resampling_bundle,
    settings,
    upload,
    volume,
    wait_done,
    zip_bytes,
)

from seg_runtime.serve.settings import ServeError

pytest.importorskip("fastapi")


@pytest.fixture
def served(tmp_path: Path):  # noqa: ANN201 - a TestClient
    bundle = resampling_bundle(tmp_path / "brain")
    with client(build(tmp_path, [bundle], provider="cpu", quota_gb=0.001, max_body_mb=0.5,
                      zip_max_entries=5, zip_max_mb=0.1)) as c:
        yield c


@pytest.fixture
def scan(tmp_path: Path) -> Path:
    return save_nifti(tmp_path / "scan.nii.gz", volume(0), np.eye(4))


def test_a_missing_or_wrong_token_is_401(served, scan: Path) -> None:  # noqa: ANN001
    missing = served.get("/v1/models")
    wrong = served.get("/v1/models", headers=auth("not-the-token-0123456789"))
    basic = served.get("/v1/models", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    upload_wrong = upload(served, "brain", scan, token="not-the-token-0123456789")
    metrics = served.get("/metrics")
    for response in (missing, wrong, basic, upload_wrong, metrics):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
    assert served.get("/healthz").status_code == 200  # liveness needs no token, and says nothing
    assert served.get("/v1/models", headers=auth()).status_code == 200


def test_jobs_are_visible_only_to_the_token_that_made_them(served, scan: Path) -> None:  # noqa: ANN001
    job = wait_done(served, upload(served, "brain", scan).json()["id"])
    for path in (f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/result", f"/v1/jobs/{job['id']}/view"):
        assert served.get(path, headers=auth(OTHER_TOKEN)).status_code == 404
    assert served.delete(f"/v1/jobs/{job['id']}", headers=auth(OTHER_TOKEN)).status_code == 404
    assert served.get("/v1/jobs", headers=auth(OTHER_TOKEN)).json() == []
    guessed = served.get("/v1/jobs/AAAAAAAAAAAAAAAAAAAAAAAA", headers=auth())
    traversal = served.get("/v1/jobs/..%2F..%2Fetc", headers=auth())
    assert guessed.status_code == 404 and traversal.status_code == 404
    assert len(job["id"]) >= 22  # 144 random bits
    assert served.get(f"/v1/jobs/{job['id']}", headers=auth()).status_code == 200


def test_a_foreign_host_or_origin_is_refused(served) -> None:  # noqa: ANN001
    rebinding = served.get("/v1/models", headers={**auth(), "Host": "attacker.example:8000"})
    cross_site = served.get("/v1/models", headers={**auth(), "Origin": "https://attacker.example"})
    null_origin = served.get("/v1/models", headers={**auth(), "Origin": "null"})
    same_origin = served.get("/v1/models", headers={**auth(), "Origin": "http://127.0.0.1:8000"})
    localhost = served.get("/", headers={"Host": "localhost:8000"})
    assert rebinding.status_code == 400 and "attacker.example" in rebinding.json()["detail"]
    assert cross_site.status_code == 403 and null_origin.status_code == 403
    assert same_origin.status_code == 200 and localhost.status_code == 200


def test_an_allowed_origin_may_call_the_api(tmp_path: Path) -> None:
    bundle = resampling_bundle(tmp_path / "brain")
    with client(build(tmp_path, [bundle], provider="cpu", allow_origins=("https://viewer.example",),
                      allow_hosts=("seg.example",)), base_url="http://seg.example:8000") as c:
        assert c.get("/v1/models", headers={**auth(), "Origin": "https://viewer.example"}).status_code == 200
        assert c.get("/v1/models", headers={**auth(), "Origin": "https://other.example"}).status_code == 403


def test_a_body_over_the_cap_is_413(served) -> None:  # noqa: ANN001
    big = served.post("/v1/models/brain/jobs", headers=auth(), files={"file": ("a.nii.gz", b"\0" * 600_000)})

    def chunks():  # noqa: ANN202 - no Content-Length: the cap counts what arrives
        yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.nii.gz"\r\n\r\n'
        for _ in range(10):
            yield b"\0" * 100_000

    streamed = served.post("/v1/models/brain/jobs", content=chunks(),
                           headers={**auth(), "Content-Type": "multipart/form-data; boundary=xyz"})
    assert big.status_code == 413 and "over the limit of 524288 bytes" in big.json()["detail"]
    assert streamed.status_code == 413


@pytest.mark.parametrize(("members", "symlinks", "status", "message"), [
    ({"/etc/cron.d/x": b"x"}, (), 422, "absolute or '..' path"),
    ({"series/../../x.dcm": b"x"}, (), 422, "absolute or '..' path"),
    ({"C:/x.dcm": b"x"}, (), 422, "absolute or '..' path"),
    ({"series/link": b"/etc/passwd"}, ("series/link",), 422, "symbolic link"),
    ({f"s/{i}.dcm": b"x" for i in range(6)}, (), 413, "6 entries, over the limit of 5"),
    ({"s/bomb.dcm": b"\0" * 200_000}, (), 413, "unpacks to 200000 bytes"),
])
def test_a_hostile_zip_is_refused_before_it_is_unpacked(served, tmp_path: Path, members: dict, symlinks: tuple,
                                                        status: int, message: str) -> None:  # noqa: ANN001
    response = served.post("/v1/models/brain/jobs", headers=auth(),
                           files={"file": ("series.zip", zip_bytes(members, symlinks=symlinks))})
    assert response.status_code == status and message in response.json()["detail"], response.json()
    assert list((tmp_path / "store" / "entries").iterdir()) == []
    assert not (tmp_path / "etc").exists()


def test_a_zip_member_lying_about_its_size_is_stopped(served, tmp_path: Path) -> None:  # noqa: ANN001
    data = bytearray(zip_bytes({"s/a.dcm": b"A" * 5000}))
    # Shrink the declared size in the central directory and the local header: 5000 -> 50.
    for offset in (data.find(b"PK\x03\x04") + 22, data.find(b"PK\x01\x02") + 24):
        data[offset:offset + 4] = (50).to_bytes(4, "little")
    response = served.post("/v1/models/brain/jobs", headers=auth(), files={"file": ("s.zip", bytes(data))})
    assert response.status_code == 422, response.json()
    assert list((tmp_path / "store" / "entries").iterdir()) == []


def test_client_file_names_are_never_paths(served, scan: Path, tmp_path: Path) -> None:  # noqa: ANN001
    response = upload(served, "brain", scan, filename="../../../escaped.nii.gz")
    assert response.status_code == 202
    job_dir = tmp_path / "store" / "entries" / response.json()["id"]
    assert sorted(p.name for p in (job_dir / "input").iterdir()) == ["file.nii.gz"]
    assert not list(tmp_path.rglob("escaped*"))


def test_the_store_is_private_and_bounded_by_its_quota(served, tmp_path: Path) -> None:  # noqa: ANN001
    store = tmp_path / "store"
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o700
    noise = np.random.default_rng(1).normal(size=(60, 60, 90)).astype(np.float32)
    scans = [save_nifti(tmp_path / f"{i}.nii.gz", noise[:, :, 30 * i:30 * i + 30], np.eye(4)) for i in range(3)]
    answers = [upload(served, "brain", path) for path in scans]  # ~0.4 MB each, the quota is 1 GiB / 1000
    assert [a.status_code for a in answers] == [202, 202, 507], [a.json() for a in answers]
    assert "is full" in answers[2].json()["detail"]
    entries = sorted(p.name for p in (store / "entries").iterdir() if not p.name.startswith("."))
    assert entries == sorted(a.json()["id"] for a in answers[:2])
    assert stat.S_IMODE(os.stat(store / "entries" / entries[0]).st_mode) == 0o700


def test_settings_refuse_an_exposed_server(tmp_path: Path) -> None:
    with pytest.raises(ServeError, match="--no-auth is allowed on loopback only"):
        settings(tmp_path, host="0.0.0.0", no_auth=True).check()
    with pytest.raises(ServeError, match="TLS is required off loopback"):
        settings(tmp_path, host="0.0.0.0").check()
    with pytest.raises(ServeError, match="a --token-file is required"):
        settings(tmp_path, token_file=None).check()
    (tmp_path / "short.txt").write_text("abc\n")
    with pytest.raises(ServeError, match=r"token\(s\) \[1\] are shorter than 16"):
        build(tmp_path, [resampling_bundle(tmp_path / "b")], token_file=tmp_path / "short.txt")
    settings(tmp_path, host="::1", no_auth=True).check()  # loopback: allowed, with a warning
    settings(tmp_path, host="0.0.0.0", ssl_certfile=Path("c.pem"), ssl_keyfile=Path("k.pem")).check()


def test_seg_run_serve_refuses_bad_settings_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from seg_runtime.cli import main

    bundle = resampling_bundle(tmp_path / "brain")
    assert main(["serve", str(tmp_path / "missing"), "--no-auth", "--store", str(tmp_path / "s")]) == 2
    assert main(["serve", str(bundle), "--store", str(tmp_path / "s")]) == 2
    assert main(["serve", str(bundle), str(bundle), "--no-auth", "--store", str(tmp_path / "s")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("seg-run: error:")]
    assert errors == [
        f"seg-run: error: {tmp_path / 'missing' / 'model.json'}: not found (is {tmp_path / 'missing'} a seg bundle "
        "folder?)",
        "seg-run: error: a --token-file is required (one token per line; --no-auth on loopback only)",
        "seg-run: error: model name(s) brain used twice (give each bundle its own --name)",
    ]
