"""The built-in demo data: 2D and 3D multi-class phantoms written as a real nnU-Net v2 raw dataset.

The demo goes through the same discovery, checks and loaders as user data, so the phantoms are
written to disk rather than handed over as arrays:

    root/dataset.json             nnU-Net v2 style, plus "seg_synthetic" (the generator parameters)
    root/imagesTr/{id}_0000.ext   one MRI-like channel
    root/labelsTr/{id}.ext        0 background, 1 lesion, 2 organ
    root/imagesTs/{id}_0000.ext   held-out cases ...
    root/labelsTs/{id}.ext        ... with labels, so the demo can score its predictions

3D cases are NIfTI volumes of about 48 x 48 x 32 voxels at 1 x 1 x 2 mm with a rotated, offset and
flipped (non-RAS) affine, so resampling and reorientation are exercised for real. 2D cases are
8-bit PNG images of about 96 x 96 pixels. Each case holds an ellipsoidal "organ" and 1-3 spherical
"lesions" (the first always inside the organ) inside a body region, with texture, Gaussian noise
and a smooth multiplicative bias field; outside the body the image is exactly 0 (skull-stripped
style). Class intensities overlap under the noise but a tiny U-Net learns them in a minute or two.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image
from scipy import ndimage

from seg_runtime.atomic import atomic_write_json
from seg_runtime.errors import DataError
from seg_runtime.naming import DATASET_JSON, channel_file_name, read_dataset_json

logger = logging.getLogger(__name__)

LABELS: dict[str, int] = {"background": 0, "lesion": 1, "organ": 2}
GENERATOR_VERSION = 2  # bump when the phantoms change, so old datasets on disk are regenerated

_SPACING_3D = (1.0, 1.0, 2.0)
_BASE_SHAPE = {3: (48, 48, 32), 2: (96, 96)}
_SHAPE_JITTER = {3: (4, 4, 2), 2: (8, 8)}
_FILE_ENDING = {3: ".nii.gz", 2: ".png"}
# Mean intensities (arbitrary MRI-like units) and noise: close enough to overlap under noise.
_TISSUE, _ORGAN, _LESION, _NOISE = 100.0, 150.0, 215.0, 18.0
_PNG_SCALE = 255.0 / 320.0  # maps the intensity range into uint8 without clipping organ or lesion


@dataclass(frozen=True)
class Phantom:
    """One generated case.

    Attributes:
        image: float32 intensities. Shape: [*spatial].
        label: uint8 class indices (see LABELS). Shape: [*spatial].
        affine: 4 x 4 voxel-to-world matrix (3D), None for 2D.
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray | None


def generator_params(spatial_dims: int, num_train: int, num_test: int, seed: int) -> dict[str, Any]:
    """The parameters that fully determine a synthetic dataset (stored in dataset.json)."""
    return {
        "version": GENERATOR_VERSION,
        "spatial_dims": int(spatial_dims),
        "num_train": int(num_train),
        "num_test": int(num_test),
        "seed": int(seed),
    }


def make_synthetic_dataset(
    root: Path, spatial_dims: int = 3, num_train: int = 8, num_test: int = 3, seed: int = 0
) -> Path:
    """Write (or reuse) a deterministic synthetic dataset in nnU-Net v2 raw layout.

    Idempotent: when ``root/dataset.json`` already records the same generator parameters and every
    case file is present, nothing is rewritten. dataset.json is written last, so an interrupted run
    is regenerated on the next call.

    Args:
        root: dataset folder (created if needed).
        spatial_dims: 3 for NIfTI volumes, 2 for PNG images.
        num_train: cases in imagesTr/labelsTr.
        num_test: cases in imagesTs/labelsTs.
        seed: the same seed gives identical arrays.

    Returns:
        ``root``.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if num_train < 1 or num_test < 0:
        raise ValueError(f"need num_train >= 1 and num_test >= 0, got {num_train} and {num_test}")
    root = Path(root)
    params = generator_params(spatial_dims, num_train, num_test, seed)
    ending = _FILE_ENDING[spatial_dims]
    cases = _case_plan(num_train, num_test)
    if _is_complete(root, params, cases, ending):
        logger.debug("synthetic dataset at %s is up to date", root)
        return root
    logger.info(
        "writing synthetic %dD dataset (%d train, %d test) to %s", spatial_dims, num_train, num_test, root
    )
    for case_id, subset, index in cases:
        phantom = make_phantom(spatial_dims, np.random.default_rng([seed, index]))
        images, labels = root / f"images{subset}", root / f"labels{subset}"
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        _write_case(phantom, images / channel_file_name(case_id, 0, ending), labels / f"{case_id}{ending}")
    atomic_write_json(root / DATASET_JSON, _dataset_json(params, ending))
    return root


def _case_plan(num_train: int, num_test: int) -> list[tuple[str, str, int]]:
    """(case id, "Tr" | "Ts", generator index): test cases never share an id or a seed with training."""
    plan = [(f"synth_{i:03d}", "Tr", i) for i in range(num_train)]
    plan += [(f"synth_{num_train + i:03d}", "Ts", num_train + i) for i in range(num_test)]
    return plan


def _is_complete(root: Path, params: dict[str, Any], cases: list[tuple[str, str, int]], ending: str) -> bool:
    if not (root / DATASET_JSON).is_file():
        return False
    try:
        recorded = read_dataset_json(root).get("seg_synthetic")
    except DataError:
        return False
    if recorded != params:
        return False
    return all(
        (root / f"images{sub}" / channel_file_name(cid, 0, ending)).is_file()
        and (root / f"labels{sub}" / f"{cid}{ending}").is_file()
        for cid, sub, _ in cases
    )


def _dataset_json(params: dict[str, Any], ending: str) -> dict[str, Any]:
    dims = params["spatial_dims"]
    return {
        "name": f"SegSynthetic{dims}D",
        "description": "seg built-in demo phantoms: an ellipsoidal organ and 1-3 lesions in a body region",
        "channel_names": {"0": "MRI"},
        "labels": dict(LABELS),
        "numTraining": params["num_train"],
        "numTest": params["num_test"],
        "file_ending": ending,
        "seg_synthetic": params,
    }


def _write_case(phantom: Phantom, image_path: Path, label_path: Path) -> None:
    if phantom.affine is None:
        pixels = np.clip(np.rint(phantom.image * _PNG_SCALE), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(image_path)
        Image.fromarray(phantom.label, mode="L").save(label_path)
        return
    for array, path in ((phantom.image, image_path), (phantom.label, label_path)):
        img = nib.Nifti1Image(array, phantom.affine)
        img.set_qform(phantom.affine, code=1)  # scanner-style: both qform and sform carry the geometry
        img.set_sform(phantom.affine, code=1)
        img.header.set_xyzt_units("mm", "sec")
        nib.save(img, path)


# --------------------------------------------------------------------------------------------------
# Phantoms


def make_phantom(spatial_dims: int, rng: np.random.Generator) -> Phantom:
    """Generate one case: body, organ, lesions, texture, bias field and noise.

    Args:
        spatial_dims: 2 or 3.
        rng: the only source of randomness (same state, same phantom).

    Returns:
        A :class:`Phantom`; image Shape: [*spatial] with spatial about 48 x 48 x 32 (3D) or 96 x 96 (2D).
    """
    base, jitter = np.array(_BASE_SHAPE[spatial_dims]), np.array(_SHAPE_JITTER[spatial_dims])
    shape = tuple(int(s) for s in base + rng.integers(-jitter, jitter + 1))
    spacing = np.array(_SPACING_3D if spatial_dims == 3 else (1.0, 1.0))
    coords = _centred_coords(shape, spacing)  # mm, voxel-aligned, origin at the centre of the field of view
    extent = np.array(shape) * spacing

    body = _ellipsoid(
        coords, np.zeros(spatial_dims), extent * rng.uniform(0.44, 0.49, spatial_dims), np.eye(spatial_dims)
    )
    organ_centre = extent * rng.uniform(-0.08, 0.08, spatial_dims)
    organ_axes = extent * rng.uniform(0.22, 0.3, spatial_dims)
    organ_rot = _random_rotation(spatial_dims, rng, max_deg=40.0)
    organ = _ellipsoid(coords, organ_centre, organ_axes, organ_rot) & body
    lesions = _lesions(coords, body, organ_centre, organ_axes, organ_rot, rng)

    label = np.zeros(shape, dtype=np.uint8)
    label[organ] = LABELS["organ"]
    label[lesions] = LABELS["lesion"]
    image = _intensities(label, body, spacing, coords, extent, rng)
    affine = _random_affine(shape, spacing, rng) if spatial_dims == 3 else None
    return Phantom(image=image, label=label, affine=affine)


def _centred_coords(shape: tuple[int, ...], spacing: np.ndarray) -> np.ndarray:
    """Physical coordinates of voxel centres. Shape: [D, *spatial]."""
    axes = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing, strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def _ellipsoid(coords: np.ndarray, centre: np.ndarray, axes: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """Boolean mask of a rotated ellipsoid (ellipse in 2D). Shape: [*spatial]."""
    d = coords - centre.reshape(-1, *([1] * (coords.ndim - 1)))
    local = np.tensordot(rot.T, d, axes=1)  # into the ellipsoid's own frame
    return np.sum((local / axes.reshape(-1, *([1] * (coords.ndim - 1)))) ** 2, axis=0) <= 1.0


def _random_rotation(spatial_dims: int, rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A rotation matrix; in 3D composed about z then x so every case is tilted a little differently."""
    a = np.deg2rad(rng.uniform(-max_deg, max_deg))
    c, s = np.cos(a), np.sin(a)
    if spatial_dims == 2:
        return np.array([[c, -s], [s, c]])
    b = np.deg2rad(rng.uniform(-max_deg / 3, max_deg / 3))
    cb, sb = np.cos(b), np.sin(b)
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cb, -sb], [0.0, sb, cb]])
    return rz @ rx


def _lesions(
    coords: np.ndarray,
    body: np.ndarray,
    organ_centre: np.ndarray,
    organ_axes: np.ndarray,
    organ_rot: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """1-3 spheres; the first always inside the organ so every case holds both foreground classes."""
    dims = coords.shape[0]
    mask = np.zeros(coords.shape[1:], dtype=bool)
    for k in range(int(rng.integers(1, 4))):
        radius = rng.uniform(5.0, 8.0)  # mm: a few voxels even at the demo's 1.5 mm spacing
        inside = k == 0 or rng.random() < 0.5
        if inside:
            u = rng.normal(size=dims)
            u *= rng.uniform(0.0, 0.45) / np.linalg.norm(u)
            centre = organ_centre + organ_rot @ (u * organ_axes)
        else:
            # Any body voxel outside the organ: sampling voxels keeps the lesion in the field of view.
            candidates = np.argwhere(body & ~_ellipsoid(coords, organ_centre, organ_axes + radius, organ_rot))
            if len(candidates) == 0:
                continue
            voxel = candidates[rng.integers(len(candidates))]
            centre = coords[(slice(None), *voxel)]
        sphere = _ellipsoid(coords, centre, np.full(dims, radius), np.eye(dims))
        mask |= sphere & body
    return mask


def _intensities(
    label: np.ndarray,
    body: np.ndarray,
    spacing: np.ndarray,
    coords: np.ndarray,
    extent: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """MRI-like image from the label map: class means, texture, blur, bias field, noise, zero outside."""
    gain = rng.uniform(0.8, 1.25)  # scanner gain differs per case: normalisation has to handle it
    means = np.array([_TISSUE, _LESION, _ORGAN]) * rng.uniform(0.92, 1.08, 3)
    clean = np.where(body, means[label], 0.0)
    texture = ndimage.gaussian_filter(rng.standard_normal(label.shape), sigma=1.5 / spacing)  # 1.5 mm grain
    texture *= 8.0 / max(float(texture.std()), 1e-6)
    clean = ndimage.gaussian_filter(clean + texture * body, sigma=0.7 / spacing)  # partial volume
    u = coords / (extent / 2.0).reshape(-1, *([1] * label.ndim))  # in [-1, 1]
    lin = rng.uniform(-0.15, 0.15, u.shape[0]).reshape(-1, *([1] * label.ndim))
    quad = rng.uniform(-0.1, 0.1, u.shape[0]).reshape(-1, *([1] * label.ndim))
    bias = np.exp(np.sum(lin * u + quad * u**2, axis=0))
    image = gain * (clean * bias + rng.normal(0.0, _NOISE, label.shape))
    return np.where(body, np.maximum(image, 0.0), 0.0).astype(np.float32)


def _random_affine(shape: tuple[int, ...], spacing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Voxel-to-world: flipped first axis (not RAS), spacing, a tilt and an offset. Shape: [4, 4]."""
    flip = np.diag([-1.0, 1.0, 1.0])
    rot = _random_rotation(3, rng, max_deg=25.0)
    linear = rot @ flip @ np.diag(spacing)
    centre_voxel = (np.array(shape) - 1) / 2.0
    world_centre = rng.uniform(-30.0, 30.0, 3)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = world_centre - linear @ centre_voxel
    return affine
