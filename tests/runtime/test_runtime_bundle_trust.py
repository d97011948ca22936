"""Issue 26 class 1 and 2: the bundle is verified before it runs, non-finite weights never predict.

Each test is a bundle a user could really end up with (a swapped model, a model.json from another
model, a hand-edited path, NaN weights, a bundle from before hashes existed); each must end in one
line naming model.json's key or the file, exit 2, before any case is read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import THRESHOLD_BIAS, THRESHOLD_WEIGHT, build_pointwise_onnx, predict, save_nifti

from seg_runtime.bundle import load_bundle
from seg_runtime.cli import main
from seg_runtime.session import OnnxBackend


@pytest.fixture
def scans(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    save_nifti(folder / "a.nii.gz", np.full((9, 8, 7), 1.5, np.float32), np.eye(4))
    return folder


def _edit(bundle: Path, **changes: object) -> None:
    data = json.loads((bundle / "model.json").read_text())
    (bundle / "model.json").write_text(json.dumps({**data, **changes}))


def _one_line(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("seg-run: error:") and all(n in err for n in needles), err
    return err


def _run(bundle: Path, scans: Path, out: Path, *flags: str) -> int:
    return main(["predict", str(bundle), "-i", str(scans), "-o", str(out), *flags])


def test_the_bundle_records_the_sha256_of_its_model(bundle_factory: Callable[..., Path]) -> None:
    bundle = bundle_factory()
    files = load_bundle(bundle).files
    assert files == {"model.onnx": hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()}


def test_a_swapped_model_with_the_same_shapes_is_refused(
    tmp_path: Path, scans: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = bundle_factory()
    build_pointwise_onnx(bundle / "model.onnx", THRESHOLD_WEIGHT[::-1].copy(), THRESHOLD_BIAS, 3)  # other labels
    assert _run(bundle, scans, tmp_path / "out") == 2
    _one_line(capsys, "model.json", "key 'files'", "model.onnx has another SHA-256")
    assert not (tmp_path / "out" / "a.nii.gz").exists()


@pytest.mark.parametrize("name", ["../model.onnx", "/etc/passwd", "sub/../../model.onnx"])
def test_model_file_outside_the_bundle_is_refused(
    tmp_path: Path, scans: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str], name: str
) -> None:
    bundle = bundle_factory()
    (bundle.parent / "model.onnx").write_bytes((bundle / "model.onnx").read_bytes())
    _edit(bundle, model_file=name)
    assert _run(bundle, scans, tmp_path / "out") == 2
    _one_line(capsys, "key 'model_file'", "not a file inside the bundle folder")


def test_a_symbolic_link_out_of_the_bundle_is_refused(
    tmp_path: Path, scans: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = bundle_factory()
    outside = tmp_path / "elsewhere.onnx"
    (bundle / "model.onnx").rename(outside)
    (bundle / "model.onnx").symlink_to(outside)
    assert _run(bundle, scans, tmp_path / "out") == 2
    _one_line(capsys, "key 'model_file'", "not a file inside the bundle folder")


def test_external_data_outside_the_bundle_is_refused(
    tmp_path: Path, scans: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx
    from onnx.external_data_helper import set_external_data

    bundle = bundle_factory()
    model = onnx.load(str(bundle / "model.onnx"))
    with open(tmp_path / "weights.bin", "wb") as handle:  # beside the bundle, not in it
        for tensor in model.graph.initializer:
            offset = handle.tell()
            handle.write(tensor.raw_data)
            set_external_data(tensor, location="../weights.bin", offset=offset, length=len(tensor.raw_data))
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
    (bundle / "model.onnx").write_bytes(model.SerializeToString())  # onnx.save refuses such a path
    _edit(bundle, files={})
    assert _run(bundle, scans, tmp_path / "out") == 2
    _one_line(capsys, "external data outside the bundle folder", "../weights.bin")


def test_external_data_inside_the_bundle_is_hashed_and_runs(
    tmp_path: Path, scans: Path, bundle_factory: Callable[..., Path]
) -> None:
    import onnx

    from seg_runtime.bundle import save_bundle_json

    bundle = bundle_factory()
    model = onnx.load(str(bundle / "model.onnx"))
    onnx.save_model(model, str(bundle / "model.onnx"), save_as_external_data=True, location="weights.bin",
                    size_threshold=0)
    save_bundle_json(load_bundle(bundle), bundle)
    assert set(load_bundle(bundle).files) == {"model.onnx", "weights.bin"}
    assert _run(bundle, scans, tmp_path / "out") == 0
    (bundle / "weights.bin").write_bytes(b"\0" * (bundle / "weights.bin").stat().st_size)  # same size, zeros
    assert _run(bundle, scans, tmp_path / "out2") == 2


@pytest.mark.parametrize(("change", "key"), [
    ({"in_channels": 2, "channel_names": ["a", "b"]}, "in_channels"),
    ({"num_classes": 4, "labels": {"a": 0, "b": 1, "c": 2, "d": 3}, "regions": {}}, "num_classes"),
    ({"spatial_dims": 2, "patch_size": [8, 8], "preprocess": {"orientation": None, "normalization": [
        {"scheme": "none"}]}}, "spatial_dims"),
])
def test_model_json_that_disagrees_with_the_graph_is_one_line(
    tmp_path: Path, scans: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str],
    change: dict, key: str,
) -> None:
    bundle = bundle_factory()
    _edit(bundle, **change)
    assert _run(bundle, scans, tmp_path / "out") == 2
    _one_line(capsys, f"key '{key}'", "graph")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_fixed_patch_graph_checks_the_patch_size(
    tmp_path: Path, scans: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx

    bundle = bundle_factory()
    model = onnx.load(str(bundle / "model.onnx"))
    for axis, dim in enumerate(model.graph.input[0].type.tensor_type.shape.dim[2:]):
        dim.dim_value = 8 + axis
    onnx.save(model, str(bundle / "model.onnx"))
    _edit(bundle, files={})
    assert _run(bundle, scans, tmp_path / "out") == 2
    _one_line(capsys, "key 'patch_size' says 8", "input size along axis 1 is 9")


def test_a_patch_no_memory_holds_is_refused_before_any_case(
    tmp_path: Path, scans: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = bundle_factory()
    _edit(bundle, patch_size=[4096, 4096, 4096])
    assert _run(bundle, scans, tmp_path / "out") == 2
    _one_line(capsys, "key 'patch_size'", "GiB", "over the memory limit")


def test_nan_weights_are_refused_at_load(
    tmp_path: Path, scans: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = bundle_factory()
    bias = THRESHOLD_BIAS.copy()
    bias[1] = np.nan
    build_pointwise_onnx(bundle / "model.onnx", THRESHOLD_WEIGHT, bias, 3)
    _edit(bundle, files={})
    assert _run(bundle, scans, tmp_path / "out") == 2
    _one_line(capsys, "NaN or Inf weights", "b")


def test_non_finite_logits_fail_the_case_not_the_run(tmp_path: Path, bundle_factory: Callable[..., Path]) -> None:
    """Finite weights, but an input that overflows them: the case fails with a clear record, the others
    are written; no label map is ever made from NaN."""
    folder = tmp_path / "in"
    folder.mkdir()
    save_nifti(folder / "good.nii.gz", np.full((9, 8, 7), 1.5, np.float32), np.eye(4))
    save_nifti(folder / "huge.nii.gz", np.full((9, 8, 7), 3e38, np.float32), np.eye(4))
    manifest = predict(OnnxBackend(bundle_factory(), provider="cpu"), folder, tmp_path / "out")
    status = {c["id"]: c for c in manifest.cases}
    assert status["good"]["status"] == "ok" and status["huge"]["status"] == "failed"
    assert "NaN or Inf" in status["huge"]["error"]
    assert not (tmp_path / "out" / "huge.nii.gz").exists()


def test_a_bundle_without_hashes_warns_and_strict_refuses(
    tmp_path: Path, scans: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bundle = bundle_factory()
    data = json.loads((bundle / "model.json").read_text())
    del data["files"]
    (bundle / "model.json").write_text(json.dumps({**data, "schema_version": 1}))
    assert _run(bundle, scans, tmp_path / "out") == 0
    assert "lists no file hashes" in caplog.text
    capsys.readouterr()
    assert _run(bundle, scans, tmp_path / "out2", "--strict") == 2
    _one_line(capsys, "lists no file hashes", "--strict")


def test_expect_sha256_pins_the_bundle(
    tmp_path: Path, scans: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = bundle_factory()
    digest = hashlib.sha256((bundle / "model.json").read_bytes()).hexdigest()
    assert _run(bundle, scans, tmp_path / "out", "--expect-sha256", digest) == 0
    assert f"sha256 {digest}" in capsys.readouterr().out
    assert _run(bundle, scans, tmp_path / "out2", "--expect-sha256", "0" * 64) == 2
    _one_line(capsys, f"SHA-256 is {digest}", "not the expected")
