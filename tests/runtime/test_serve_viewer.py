"""The web page's data: its volumes in RAS+ order with the labels on the scan; its assets ship in the package."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import make_bundle_dir, save_nifti
from serve_helpers import auth, build, client, upload, wait_done

from seg_runtime.preprocess import PreprocessSpec
from seg_runtime.serve.app import WEB_DIR

pytest.importorskip("fastapi")


def test_the_view_is_ras_with_the_labels_on_the_scan(tmp_path: Path) -> None:
    # A bright block at the patient's right, anterior, superior corner of an LAS-stored volume.
    data = np.zeros((12, 10, 8), np.float32)
    data[:3, -3:, -2:] = 3.0  # stored x runs to the patient's left: index 0..2 is the right side
    affine = np.diag([-1.5, 1.0, 2.0, 1.0])
    scan = save_nifti(tmp_path / "scan.nii.gz", data, affine)
    bundle = make_bundle_dir(tmp_path / "m", preprocess=PreprocessSpec(normalization=[{"scheme": "none"}]))
    with client(build(tmp_path, [bundle], provider="cpu")) as c:
        job = wait_done(c, upload(c, "m", scan).json()["id"])
        meta = c.get(f"/v1/jobs/{job['id']}/view", headers=auth()).json()
        raw = c.get(f"/v1/jobs/{job['id']}/view/data", headers=auth())
    assert meta["shape"] == [12, 10, 8] and meta["spacing"] == [1.5, 1.0, 2.0] and meta["order"] == "F"
    assert [c["value"] for c in meta["classes"]] == [1, 2]
    count = 12 * 10 * 8
    image = np.frombuffer(raw.content[:count], np.uint8).reshape(meta["shape"], order="F")
    labels = np.frombuffer(raw.content[count:], np.uint8).reshape(meta["shape"], order="F")
    assert image[-1, -1, -1] == 255 and image[0, 0, 0] == 0  # RAS: the right side is now at high x
    np.testing.assert_array_equal(labels == 2, image == 255)  # the threshold model: class 2 where x > 2
    stored = (tmp_path / "store" / "entries" / job["id"] / "output" / "view.bin.gz").read_bytes()
    assert gzip.decompress(stored) == raw.content  # sent as stored, gzip-encoded


def test_the_page_and_its_assets_are_served_from_the_package(tmp_path: Path) -> None:
    bundle = make_bundle_dir(tmp_path / "m")
    with client(build(tmp_path, [bundle], provider="cpu")) as c:
        page = c.get("/")
        assets = {name: c.get(f"/static/{name}") for name in ("app.js", "style.css")}
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    assert all(a.status_code == 200 for a in assets.values())
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources == ["/static/style.css", "/static/app.js", "#"]  # nothing from another host (no CDN)
    for path in WEB_DIR.iterdir():
        assert "http://" not in path.read_text() and "https://" not in path.read_text()
