"""What a case holds, from its headers alone: spatial shape, channels and geometry, no voxels read.

The service decides whether a job fits the memory budget before any voxel is decoded, so it needs
the shape (and spacing, for the model grid) of an upload without reading it. Each format's header
is read the way its reader reads it (:mod:`seg_runtime.readers`), and a header that claims more
voxels than its file holds fails here already, in the reader's words.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cases import Case
from .formats import FORMATS, IMAGE_SUFFIXES, image_suffix
from .geometry import CaseError, Geometry, make_geometry


@dataclass(frozen=True)
class ImageHeader:
    """An image's size as its header states it.

    Attributes:
        shape: Spatial shape as stored (no channel axis).
        channels: Channels in the file.
        itemsize: Bytes per stored value.
        geometry: Voxel-to-world mapping (RAS+), as the reader would return it.
    """

    shape: tuple[int, ...]
    channels: int
    itemsize: int
    geometry: Geometry

    @property
    def voxels(self) -> int:
        """Spatial voxels."""
        return int(np.prod(self.shape, dtype=np.int64))


def probe_image(path: str | Path) -> ImageHeader:
    """Read the header of an image file or DICOM series folder.

    Raises:
        CaseError: Not a readable image, an unsupported format, or a header claiming more voxel
            data than the file holds.
    """
    path = Path(path)
    if path.is_dir():
        return _probe_dicom(path)
    suffix = image_suffix(path)
    if suffix is None:
        raise CaseError(f"{path}: unsupported image format (known: {', '.join(IMAGE_SUFFIXES)}, DICOM folders)")
    fmt = FORMATS[suffix]
    try:
        if fmt == "nifti":
            return _probe_nifti(path)
        if fmt == "nrrd":
            return _probe_nrrd(path)
        if fmt == "mha":
            return _probe_metaimage(path)
        return _probe_raster(path, fmt)
    except CaseError:
        raise
    except Exception as exc:  # a malformed header must still name the file
        raise CaseError(f"{path}: cannot read {fmt} header ({type(exc).__name__}: {exc})") from exc


def probe_case(case: Case, spatial_dims: int, in_channels: int) -> ImageHeader:
    """The headers of a case's files, checked as :func:`seg_runtime.io.read_case` checks the data.

    Returns:
        The first file's header with ``channels`` summed over the case's files.

    Raises:
        CaseError: An unreadable header, a dimensionality the model does not take, a channel count
            other than ``in_channels``, or channel files that disagree in shape.
    """
    headers = [probe_image(p) for p in case.paths]
    if not headers:
        raise CaseError(f"case '{case.id}': no input files")
    first = headers[0]
    for path, header in zip(case.paths, headers):
        dims = len(header.shape)
        if dims != spatial_dims and not (dims == 3 and spatial_dims == 2 and header.shape[2] == 1):
            raise CaseError(f"{path}: image is {dims}D (shape {header.shape}) but the model is {spatial_dims}D")
        if header.shape != first.shape:
            raise CaseError(f"{path}: shape {header.shape} differs from {first.shape} of {case.paths[0].name}")
    count = sum(h.channels for h in headers)
    if count != in_channels:
        names = ", ".join(p.name for p in case.paths)
        raise CaseError(f"case '{case.id}' ({names}): has {count} channel(s) but the model expects {in_channels}")
    return ImageHeader(first.shape, count, max(h.itemsize for h in headers), first.geometry)


def _probe_nifti(path: Path) -> ImageHeader:
    import nibabel as nib

    from .limits import check_claimed_size

    try:
        image = nib.load(str(path))  # header only: the voxels stay on disk
    except Exception as exc:
        raise CaseError(f"{path}: cannot read NIfTI file ({type(exc).__name__}: {exc})") from exc
    shape = tuple(int(s) for s in image.shape)
    itemsize = np.dtype(image.get_data_dtype()).itemsize
    compressed = path.name.lower().endswith(".gz")
    offset = 0 if compressed else int(image.header["vox_offset"])
    check_claimed_size(path, shape, itemsize, max(path.stat().st_size - offset, 0), compressed=compressed)
    if len(shape) == 5 and shape[3] == 1:
        shape = (*shape[:3], shape[4])
    if len(shape) > 4:
        raise CaseError(f"{path}: unsupported NIfTI shape {shape} (expected 2D, 3D or 3D + channels)")
    spatial = shape[:3] if len(shape) == 4 else shape
    channels = shape[3] if len(shape) == 4 else 1
    return ImageHeader(spatial, channels, itemsize, make_geometry(image.affine, spatial, "nifti"))


def _probe_nrrd(path: Path) -> ImageHeader:
    from .readers import nrrd

    with open(path, "rb") as handle:
        blob = handle.read(1 << 16)  # the header; the voxels are not needed
    fields, _ = nrrd._parse_header(blob, path)
    try:
        sizes = [int(v) for v in fields["sizes"].split()]
        dtype = nrrd._TYPE_BY_NAME[fields["type"].strip().lower()]
    except (KeyError, ValueError) as exc:
        raise CaseError(f"{path}: missing or unsupported NRRD field {exc}") from exc
    if min(sizes, default=0) < 1:
        raise CaseError(f"{path}: bad NRRD 'sizes' field {sizes}")
    # A zero-stride stand-in of the claimed shape: the reader's own axis logic, no allocation.
    stand_in = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape=sizes, strides=[0] * len(sizes))
    array, geometry = nrrd._with_geometry(path, fields, stand_in)
    spatial = tuple(int(s) for s in geometry.shape)
    channels = int(np.prod(array.shape[len(spatial):], dtype=np.int64))
    return ImageHeader(spatial, channels, dtype.itemsize, geometry)


def _probe_metaimage(path: Path) -> ImageHeader:
    from .readers import metaimage

    with open(path, "rb") as handle:
        blob = handle.read(1 << 16)
    fields, _ = metaimage._parse_header(blob, path)
    try:
        ndim = int(fields["ndims"])
        dims = tuple(int(v) for v in fields["dimsize"].split())[:ndim]
        dtype = np.dtype(metaimage._TYPES[fields["elementtype"].upper()])
    except (KeyError, ValueError) as exc:
        raise CaseError(f"{path}: missing or unsupported MetaImage field {exc}") from exc
    if ndim not in (2, 3) or len(dims) != ndim or min(dims) < 1:
        raise CaseError(f"{path}: unsupported MetaImage dimensionality NDims={ndim}, DimSize={list(dims)}")
    channels = int(fields.get("elementnumberofchannels", "1"))
    geometry = make_geometry(metaimage._affine(fields, ndim), dims, "mha")
    return ImageHeader(dims, channels, dtype.itemsize, geometry)


def _probe_raster(path: Path, fmt: str) -> ImageHeader:
    from PIL import Image

    from .readers.raster import _GREY_MODES

    try:
        with Image.open(path) as image:  # lazy: pillow decodes on load(), not here
            width, height, mode = image.width, image.height, image.mode
    except Exception as exc:
        raise CaseError(f"{path}: cannot read {fmt.upper()} file ({type(exc).__name__}: {exc})") from exc
    channels = 1 if mode in _GREY_MODES or mode in {"1", "LA"} else 3
    itemsize = 4 if mode in {"I", "F"} else 2 if mode.startswith("I;16") else 1
    return ImageHeader((height, width), channels, itemsize, make_geometry(np.eye(4), (height, width), fmt))


def _probe_dicom(folder: Path) -> ImageHeader:
    """The series the reader would read (the same files, checks and geometry), from headers only."""
    from .readers.dicom import series_geometry, series_slices

    geometry = series_geometry(series_slices(folder))
    return ImageHeader(tuple(geometry.shape), 1, 4, geometry)
