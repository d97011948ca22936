"""An upload, from the parsed form to a job entry in the store.

Each file goes into the entry's ``input`` folder under a name the server chooses (``file.nii.gz``,
``channel1.nrrd``, ``00012.dcm``): a client's file name is used for one thing only, its suffix, and
only when it is a suffix the readers know. A zip of a DICOM series is checked before anything is
unpacked (entry count, declared unpacked size, no absolute, ``..``, symlink or encrypted members)
and unpacked member by member, each capped at its declared size. Then the case's headers are read
(:mod:`seg_runtime.probe`) and its memory estimated; only an upload that passes all of this is
committed to the store, fsynced, and answered 202.
"""

from __future__ import annotations

import stat
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import IO, Any

from ..cases import Case
from ..errors import SegError
from ..formats import FORMATS, image_suffix, output_suffix
from ..geometry import CaseError
from ..store import Staging, Store
from .jobs import CASE_ID, KIND, estimate, public
from .models import ServedModel

ZIP_SUFFIX = ".zip"


class UploadError(SegError):
    """An upload the service refuses (the message names the field or member and the problem).

    Attributes:
        status: The HTTP status it is answered with (400, 413, 415, 422).
    """

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ZipLimits:
    """Bounds on a DICOM zip, checked before anything is unpacked.

    Attributes:
        max_entries: Members at most.
        max_bytes: Unpacked bytes at most (declared, and each member capped at its declared size).
    """

    max_entries: int = 10000
    max_bytes: int = 4 * 2**30


@dataclass(frozen=True)
class UploadFile:
    """One file field of a form: the client's file name (for its suffix only) and the data."""

    filename: str
    data: IO[bytes]


def upload_suffix(filename: str, field_name: str) -> str:
    """The suffix of a client's file name, if the readers know it (or ``.zip``).

    Raises:
        UploadError: (415) Any other suffix (and the detached-data formats ``.nhdr``/``.mhd``).
    """
    base = PureWindowsPath(PurePosixPath(filename or "").name).name  # only the last component counts
    if base.lower().endswith(ZIP_SUFFIX):
        return ZIP_SUFFIX
    suffix = image_suffix(base)
    if suffix is None or suffix in (".nhdr", ".mhd"):
        raise UploadError(f"form field '{field_name}': unsupported file type {base!r} (send NIfTI .nii/.nii.gz, "
                          "NRRD .nrrd, MetaImage .mha, PNG/TIFF, or a .zip of one DICOM series)", 415)
    return suffix


def check_fields(files: Sequence[tuple[str, UploadFile]], allowed: Sequence[str]) -> dict[str, UploadFile]:
    """The file fields by name, after checking them against the model's.

    Raises:
        UploadError: (400) No file, an unknown or repeated field, ``file`` mixed with channel
            fields, or a missing channel.
    """
    found: dict[str, UploadFile] = {}
    for name, upload in files:
        if name not in allowed:
            channels = ", ".join(allowed[1:])
            raise UploadError(f"unknown form field '{name}' (send the scan as 'file', or one field per channel: "
                              f"{channels})", 400)
        if name in found:
            raise UploadError(f"form field '{name}' sent twice", 400)
        found[name] = upload
    if not found:
        raise UploadError("no file in the upload (send it as form field 'file': curl -F file=@scan.nii.gz)", 400)
    if "file" in found and len(found) > 1:
        raise UploadError("send either 'file' or one field per channel, not both", 400)
    missing = [name for name in allowed[1:] if "file" not in found and name not in found]
    if missing:
        raise UploadError(f"missing channel field(s) {', '.join(missing)} (this model takes "
                          f"{', '.join(allowed[1:])})", 400)
    return found


def accept_upload(store: Store, model: ServedModel, files: Sequence[tuple[str, UploadFile]], owner: str,
                  memory_limit: int, zip_limits: ZipLimits, file_limit: int, holder: str = "") -> Any:
    """Check an upload, store it as an accepted job, and return its entry (durable on return).

    Args:
        store: The job store.
        model: The model the job is for.
        files: ``(field name, file)`` pairs of the form.
        owner: The caller's owner id.
        memory_limit: The server's memory budget in bytes (a job estimated above it is refused).
        zip_limits: Bounds on a DICOM zip.
        file_limit: Bytes per stored file at most.
        holder: The id of the process that will run the job (see :mod:`.holders`).

    Raises:
        UploadError: A bad form or zip. CaseError: an unreadable header, a case the model does not
        take, a job over the memory budget. StoreFull: the store's quota.
    """
    fields = check_fields(files, model.fields)
    meta = {"model": model.name, "owner": owner, "holder": holder}
    with store.stage(KIND, meta) as staging:
        case, source = _store_files(staging, fields, model, zip_limits, file_limit)
        try:
            reserve = estimate(case, model, memory_limit)
        except CaseError as exc:
            raise CaseError(public(str(exc), staging.input_dir)) from None
        names = [] if case.kind == "dicom" else [p.name for p in case.paths]
        staging.entry.meta.update(case={"kind": case.kind, "files": names, "output_ext": case.output_ext},
                                  input_format=source, reserve=reserve)
    return staging.entry


def _store_files(staging: Staging, fields: Mapping[str, UploadFile], model: ServedModel, zip_limits: ZipLimits,
                 file_limit: int) -> tuple[Case, str]:
    """Write the fields into the staging entry; the case they form (paths in the staging folder)."""
    dims = model.bundle.spatial_dims
    if "file" in fields:
        suffix = upload_suffix(fields["file"].filename, "file")
        if suffix == ZIP_SUFFIX:
            unpack_dicom_zip(fields["file"].data, staging, zip_limits)
            return Case(CASE_ID, [staging.input_dir], "dicom", output_suffix("dicom", dims)), "dicom"
        path = staging.add_file(f"file{suffix}", fields["file"].data, limit=file_limit)
        return Case(CASE_ID, [path], "file", output_suffix(FORMATS[suffix], dims)), FORMATS[suffix]
    paths, suffixes = [], []
    for index, name in enumerate(model.bundle.channel_names):
        suffix = upload_suffix(fields[name].filename, name)
        if suffix == ZIP_SUFFIX:
            raise UploadError("a DICOM zip goes in field 'file' (multi-channel DICOM is not served)", 400)
        paths.append(staging.add_file(f"channel{index}{suffix}", fields[name].data, limit=file_limit))
        suffixes.append(suffix)
    return Case(CASE_ID, paths, "folder", output_suffix(FORMATS[suffixes[0]], dims)), FORMATS[suffixes[0]]


def check_zip(archive: zipfile.ZipFile, limits: ZipLimits) -> list[zipfile.ZipInfo]:
    """The file members of a zip, after every check that needs no unpacking.

    Raises:
        UploadError: Too many members (413), too many unpacked bytes declared (413), or an
            absolute, ``..``, symlink or encrypted member (422).
    """
    members = archive.infolist()
    if len(members) > limits.max_entries:
        raise UploadError(f"zip has {len(members)} entries, over the limit of {limits.max_entries}", 413)
    total = 0
    for info in members:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or PureWindowsPath(name).drive or ".." in parts:
            raise UploadError(f"zip member {name!r} has an absolute or '..' path (refused)")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UploadError(f"zip member {name!r} is a symbolic link (refused)")
        if info.flag_bits & 0x1:
            raise UploadError(f"zip member {name!r} is encrypted (refused)")
        total += info.file_size
    if total > limits.max_bytes:
        raise UploadError(f"zip unpacks to {total} bytes, over the limit of {limits.max_bytes} bytes", 413)
    return [info for info in members if not info.is_dir()]


def unpack_dicom_zip(data: IO[bytes], staging: Staging, limits: ZipLimits) -> int:
    """Check a zip, then unpack its members as ``00000.dcm``, ``00001.dcm``, ... (member names unused).

    Returns:
        How many files were unpacked.

    Raises:
        UploadError: Not a zip, an empty one, or any check of :func:`check_zip`; a member inflating
            past its declared size stops the unpacking.
    """
    try:
        archive = zipfile.ZipFile(data)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UploadError(f"upload is not a readable zip ({exc})") from None
    with archive:
        members = check_zip(archive, limits)
        if not members:
            raise UploadError("zip holds no files (send one DICOM series)")
        for index, info in enumerate(members):
            try:
                with archive.open(info) as source:
                    staging.add_file(f"{index:05d}.dcm", source, limit=info.file_size)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError) as exc:
                raise UploadError(f"zip member {info.filename!r} cannot be unpacked ({exc})") from None
    return len(members)
