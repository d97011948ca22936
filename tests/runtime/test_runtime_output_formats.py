"""Issue 14 item 7: label maps come back in the input's format with the input's geometry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import oblique_affine, save_metaimage, save_nifti, save_nrrd, threshold_labels

from seg_runtime.cli import main
from seg_runtime.formats import image_suffix, output_suffix
from seg_runtime.io import read_image
from seg_runtime.preprocess import PreprocessSpec

_SHAPE = (9, 8, 7)


def _volume() -> np.ndarray:
    grids = np.meshgrid(*[np.linspace(0, 1, s) for s in _SHAPE], indexing="ij")
    return (3.0 * (0.5 * grids[0] + 0.3 * grids[1] + 0.2 * grids[2])).astype(np.float32)


def _write_inputs(src: Path) -> dict[str, Path]:
    src.mkdir()
    affine = oblique_affine()
    volume = _volume()
    return {
        "nrrd": save_nrrd(src / "a.nrrd", volume, affine, encoding="gzip"),
        "mha": save_metaimage(src / "b.mha", volume, affine),
        "mhd": save_metaimage(src / "c.mhd", volume, affine),
        "nifti": save_nifti(src / "d.nii.gz", volume, affine),
        "upper": save_nrrd(src / "e.NRRD", volume, affine),
    }


def _check_round_trip(source: Path, output: Path) -> None:
    """The output, read back with the runtime's readers, has the input's grid and the right labels."""
    image, geometry = read_image(source)
    labels, out_geometry = read_image(output)
    assert out_geometry.shape == geometry.shape
    np.testing.assert_allclose(out_geometry.affine, geometry.affine, atol=1e-6)  # spacing, origin, direction
    np.testing.assert_allclose(out_geometry.spacing, geometry.spacing, atol=1e-6)
    np.testing.assert_array_equal(labels, threshold_labels(np.asarray(image, np.float32)[None]))


@pytest.mark.parametrize(("fmt", "expected"), [("auto", None), ("nrrd", ".nrrd"), ("mha", ".mha"),
                                               ("nii.gz", ".nii.gz")])
def test_outputs_keep_the_input_format_and_geometry(
    tmp_path: Path, bundle_factory: Callable[..., Path], fmt: str, expected: str | None
) -> None:
    # No reorientation and no resampling: the output grid is exactly the input grid.
    bundle = bundle_factory(preprocess=PreprocessSpec(orientation=None, normalization=[{"scheme": "none"}]))
    inputs = _write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    code = main([str(bundle), "-i", str(tmp_path / "in"), "-o", str(out), "--provider", "cpu",
                 "--output-format", fmt])
    assert code == 0
    auto = {"nrrd": ".nrrd", "mha": ".mha", "mhd": ".mha", "nifti": ".nii.gz", "upper": ".nrrd"}
    for kind, source in inputs.items():
        suffix = expected or auto[kind]
        stem = source.name.split(".")[0]
        written = out / f"{stem}{suffix}"
        assert written.is_file(), sorted(p.name for p in out.iterdir())
        assert image_suffix(written) == suffix
        _check_round_trip(source, written)


def test_reoriented_and_resampled_case_still_round_trips(
    tmp_path: Path, bundle_factory: Callable[..., Path]
) -> None:
    spec = PreprocessSpec(orientation="RAS", target_spacing=[1.0, 1.0, 1.0], normalization=[{"scheme": "none"}])
    bundle = bundle_factory(preprocess=spec)
    src = tmp_path / "in"
    src.mkdir()
    source = save_metaimage(src / "scan.mha", _volume(), oblique_affine())
    assert main([str(bundle), "-i", str(src), "-o", str(tmp_path / "out"), "--provider", "cpu"]) == 0
    labels, geometry = read_image(tmp_path / "out" / "scan.mha")
    _, expected = read_image(source)
    assert geometry.shape == expected.shape and labels.dtype == np.uint8
    np.testing.assert_allclose(geometry.affine, expected.affine, atol=1e-6)


def test_output_suffix_rules() -> None:
    assert output_suffix("dicom", 3) == ".nii.gz"
    assert output_suffix("tiff", 2) == ".png" and output_suffix("png", 3) == ".nii.gz"
    with pytest.raises(ValueError, match="2D models only"):
        output_suffix("nifti", 3, "png")


def test_png_output_for_a_3d_model_is_a_usage_error(
    tmp_path: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _write_inputs(tmp_path / "in")
    code = main([str(bundle_factory()), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                 "--provider", "cpu", "--output-format", "png"])
    assert code == 2
    err = capsys.readouterr().err
    assert "2D models only" in err and "Traceback" not in err
