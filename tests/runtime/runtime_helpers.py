"""Helpers for the runtime tests: tiny ONNX models, bundles and images on disk (no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from seg_runtime.bundle import Bundle, save_bundle_json
from seg_runtime.preprocess import PreprocessSpec

# A pointwise 1-channel, 3-class model: logits [0, x - 1, 2x - 3] → class 0 for x < 1,
# class 1 for 1 < x < 2, class 2 for x > 2.
THRESHOLD_WEIGHT = np.array([[0.0], [1.0], [2.0]], dtype=np.float32)
THRESHOLD_BIAS = np.array([0.0, -1.0, -3.0], dtype=np.float32)


def pointwise_logits(image: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Reference logits of a 1x1(x1) convolution. Shape: [C, *S] → [K, *S]."""
    return np.tensordot(weight, image, axes=([1], [0])) + bias.reshape(-1, *([1] * (image.ndim - 1)))


def threshold_labels(image: np.ndarray) -> np.ndarray:
    """Reference labels of the threshold model for a 1-channel image. Shape: [1, *S] → [*S]."""
    return np.argmax(pointwise_logits(image, THRESHOLD_WEIGHT, THRESHOLD_BIAS), axis=0)


def build_pointwise_onnx(
    path: Path, weight: np.ndarray, bias: np.ndarray, spatial_dims: int, *, fixed_batch: int | None = None
) -> Path:
    """Write a Conv(kernel 1) ONNX model from C to K channels with dynamic batch/spatial axes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    classes, channels = weight.shape
    kernel = weight.reshape(classes, channels, *([1] * spatial_dims)).astype(np.float32)
    spatial = [f"s{i}" for i in range(spatial_dims)]
    batch = fixed_batch if fixed_batch is not None else "batch"
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w", "b"], ["logits"], kernel_shape=[1] * spatial_dims)],
        "pointwise",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, channels, *spatial])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes, *spatial])],
        initializer=[
            numpy_helper.from_array(kernel, "w"),
            numpy_helper.from_array(bias.astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_bundle_dir(
    directory: Path,
    *,
    spatial_dims: int = 3,
    weight: np.ndarray = THRESHOLD_WEIGHT,
    bias: np.ndarray = THRESHOLD_BIAS,
    patch_size: list[int] | None = None,
    preprocess: PreprocessSpec | None = None,
    channel_files: list[str] | None = None,
    fixed_batch: int | None = None,
    label_values: dict[str, int] | None = None,
) -> Path:
    """Write ``model.onnx`` + ``model.json`` for a pointwise model into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    classes, channels = weight.shape
    build_pointwise_onnx(directory / "model.onnx", weight, bias, spatial_dims, fixed_batch=fixed_batch)
    bundle = Bundle(
        spatial_dims=spatial_dims,
        in_channels=channels,
        channel_names=[f"ch{i}" for i in range(channels)],
        channel_files=channel_files,
        num_classes=classes,
        labels={f"class{i}": i for i in range(classes)},
        regions={"foreground": list(range(1, classes))},
        patch_size=patch_size or [8] * spatial_dims,
        overlap=0.5,
        preprocess=preprocess or PreprocessSpec(orientation="RAS", normalization=[{"scheme": "none"}]),
        provenance={"model": "pointwise-test"},
        label_values=dict(label_values or {}),
    )
    save_bundle_json(bundle, directory)
    return directory


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    """Write a NIfTI file (sform and qform set, as most tools do)."""
    import nibabel as nib

    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))
    return path


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """A proper 3D rotation matrix (radians about x, y, z)."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_affine(spacing: tuple[float, float, float] = (0.8, 0.9, 2.5)) -> np.ndarray:
    """An oblique RAS affine with anisotropic spacing and a right-handed frame."""
    affine = np.eye(4)
    affine[:3, :3] = rotation(0.3, -0.2, 0.5) @ np.diag(spacing)
    affine[:3, 3] = [10.0, -20.0, 30.0]
    return affine


# Writers for the hand-made formats: the reader under test must recover ``volume`` and the
# RAS ``affine`` these are given.
_LPS = np.diag([-1.0, -1.0, 1.0])


def _lps_frame(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World steps of each axis (columns) and origin, in LPS+."""
    return _LPS @ affine[:3, :3], _LPS @ affine[:3, 3]


def _vec(v: np.ndarray) -> str:
    return "(" + ",".join(repr(float(x)) for x in v) + ")"


def save_nrrd(path: Path, volume: np.ndarray, affine: np.ndarray, *, encoding: str = "raw") -> Path:
    """Write a 3D NRRD (LPS space) with attached data, raw or gzip."""
    import gzip

    steps, origin = _lps_frame(affine)
    dtype = {np.dtype(np.int16): "short", np.dtype(np.float32): "float", np.dtype(np.uint8): "uchar"}[
        volume.dtype
    ]
    header = "\n".join(
        [
            "NRRD0004",
            "# written by hand for a test",
            f"type: {dtype}",
            "dimension: 3",
            "space: left-posterior-superior",
            "sizes: " + " ".join(str(s) for s in volume.shape),
            "space directions: " + " ".join(_vec(steps[:, i]) for i in range(3)),
            "kinds: domain domain domain",
            "endian: little",
            f"encoding: {encoding}",
            f"space origin: {_vec(origin)}",
            "note:=free text with: colons",
        ]
    )
    payload = volume.astype(volume.dtype.newbyteorder("<")).tobytes(order="F")
    if encoding == "gzip":
        payload = gzip.compress(payload)
    path.write_bytes(header.encode() + b"\n\n" + payload)
    return path


def save_metaimage(path: Path, volume: np.ndarray, affine: np.ndarray, *, compressed: bool = False) -> Path:
    """Write a 3D MetaImage (``.mha`` attached, or ``.mhd`` + ``.raw``) in ITK's LPS convention."""
    import zlib

    steps, origin = _lps_frame(affine)
    spacing = np.linalg.norm(steps, axis=0)
    directions = steps / spacing
    element = {np.dtype(np.int16): "MET_SHORT", np.dtype(np.float32): "MET_FLOAT"}[volume.dtype]
    payload = volume.astype(volume.dtype.newbyteorder("<")).tobytes(order="F")
    if compressed:
        payload = zlib.compress(payload)
    attached = path.suffix == ".mha"
    data_file = "LOCAL" if attached else path.with_suffix(".raw").name
    lines = [
        "ObjectType = Image",
        "NDims = 3",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        f"CompressedData = {'True' if compressed else 'False'}",
        # Axis i's direction is elements 3i..3i+2 (ITK's reading of TransformMatrix).
        "TransformMatrix = " + " ".join(repr(float(v)) for v in directions.T.ravel()),
        "Offset = " + " ".join(repr(float(v)) for v in origin),
        "AnatomicalOrientation = RAI",
        "ElementSpacing = " + " ".join(repr(float(v)) for v in spacing),
        "DimSize = " + " ".join(str(s) for s in volume.shape),
        f"ElementType = {element}",
        f"ElementDataFile = {data_file}",
    ]
    header = ("\n".join(lines) + "\n").encode()
    if attached:
        path.write_bytes(header + payload)
    else:
        path.write_bytes(header)
        path.with_suffix(".raw").write_bytes(payload)
    return path


def save_dicom_series(
    folder: Path,
    volume: np.ndarray,
    affine: np.ndarray,
    *,
    series_uid: str | None = None,
    slope: float = 2.0,
    intercept: float = -100.0,
    name_offset: int = 0,
) -> Path:
    """Write a CT series (one file per slice, shuffled file order, names without extension and not in
    slice order) for a right-handed affine; see :func:`dicom_builders.write_series`.

    ``volume`` holds the rescaled values; files store ``(volume - intercept) / slope`` as int16.
    """
    from dicom_builders import write_series

    write_series(folder, volume, affine, series_uid=series_uid, slope=slope, intercept=intercept,
                 name=lambda k: f"IM{k * 7 % 11 + name_offset:04d}")
    return folder


def predict(backend: Any, input_path: Path, output_dir: Path, **options: Any) -> Any:
    """``seg_runtime.predict.predict_folder`` with options as keywords (``progress`` off by default);
    ``engine="ray"`` runs on a local Ray Data runner."""
    from seg_runtime.options import PredictOptions
    from seg_runtime.predict import predict_folder

    options.setdefault("progress", False)
    runner = None
    if options.pop("engine", "local") == "ray":
        from seg_runtime.runners.ray_data import RayRunner

        runner = RayRunner(progress=False)
    return predict_folder(input_path, output_dir, backend, PredictOptions(**options), runner)
