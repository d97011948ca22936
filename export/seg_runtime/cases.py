"""Which files form a case: single files, nnU-Net channel files, case folders, DICOM folders."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SegError
from .formats import image_format, image_suffix, output_suffix, strip_image_suffix
from .naming import split_channel_stem
from .readers.dicom import is_dicom_file


class NoCasesError(SegError, ValueError):
    """An input folder holds nothing that looks like a case."""


@dataclass
class Case:
    """One prediction unit.

    Attributes:
        id: Case identifier (output file stem).
        paths: Channel files in channel order; for DICOM the series folder.
        kind: ``file``, ``nnunet``, ``folder`` or ``dicom``.
        output_ext: The label map's suffix: the input's format by default (``.nii.gz``,
            ``.nrrd``, ``.mha``; ``.png`` for PNG/TIFF inputs of 2D models; DICOM -> ``.nii.gz``),
            see :func:`apply_output_format`.
        identity: The input's identity when the run planned it (:mod:`seg_runtime.identity`),
            recorded with the case's outcome.
    """

    id: str
    paths: list[Path] = field(default_factory=list)
    kind: str = "file"
    output_ext: str = ".nii.gz"
    identity: str = ""


def _stem(path: Path) -> str:
    """File name without its image suffix."""
    return strip_image_suffix(path)


def _output_ext(path: Path, spatial_dims: int) -> str:
    return output_suffix(image_format(path) or "nifti", spatial_dims)


def apply_output_format(cases: list[Case], output_format: str, spatial_dims: int) -> list[Case]:
    """Set every case's ``output_ext`` for ``--output-format`` (``auto`` keeps the input's format).

    Raises:
        ValueError: An unknown format, or ``png`` for a 3D model.
    """
    suffix = output_suffix("nifti", spatial_dims, output_format)  # validates the choice up front
    if output_format != "auto":
        for case in cases:
            case.output_ext = suffix
    return cases


def discover_cases(
    input_path: str | os.PathLike[str],
    *,
    spatial_dims: int,
    in_channels: int,
    channel_files: list[str] | None = None,
    exclude: Iterable[str | os.PathLike[str]] = (),
) -> tuple[list[Case], list[tuple[str, str]]]:
    """Find the cases in a file or folder.

    Rules: a single image file (or a DICOM folder, or a case folder holding ``channel_files``)
    is one case; in a folder, nnU-Net channel files ``CASE_0000.ext, CASE_0001.ext`` are grouped
    by CASE (required for multi-channel models), other image files are single-file cases, a
    subfolder with DICOM files is a DICOM case and a subfolder holding ``channel_files`` is a
    case folder. Hidden entries are ignored.

    Args:
        input_path: A file or folder.
        spatial_dims: The model's spatial dims (2 or 3); decides the output extension.
        in_channels: The model's channel count.
        channel_files: File names forming a case folder, in channel order.
        exclude: Paths to skip (e.g. the output folder inside the input folder).

    Returns:
        Cases sorted by id, and ``(name, problem)`` for entries that look like cases but
        cannot be one (missing channel files, empty folders, duplicate ids).

    Raises:
        FileNotFoundError: ``input_path`` does not exist.
    """
    root = Path(input_path)
    if not root.exists():
        raise FileNotFoundError(f"input not found: {root}")
    if root.is_file():
        return [_single_file_case(root, spatial_dims)], []
    folder_case = _folder_case(root, channel_files, spatial_dims)
    if folder_case is not None:
        return [folder_case], []
    top_files = [p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")]
    # A folder of DICOM slices (and no other images) is itself one series.
    if not any(image_suffix(p) for p in top_files) and any(is_dicom_file(p) for p in top_files):
        return [Case(root.name, [root], "dicom", ".nii.gz")], []
    excluded = {Path(p).resolve() for p in exclude}
    files, folders, problems = _classify(p for p in sorted(root.iterdir()) if not p.name.startswith("."))
    folders = [p for p in folders if p.resolve() not in excluded]
    cases, file_problems = _file_cases(files, spatial_dims, in_channels)
    problems += file_problems
    for folder in folders:
        case, problem = _subfolder_case(folder, channel_files, spatial_dims)
        if case is not None:
            cases.append(case)
        else:
            problems.append((folder.name, problem))
    return _dedupe(cases, problems)


def _classify(entries: Iterable[Path]) -> tuple[list[Path], list[Path], list[tuple[str, str]]]:
    """Split folder entries into files and folders; the ones no case can be made of become problems.

    A symbolic link loop, a dangling link, an entry that cannot be read, or a special file with an
    image name (a pipe would block a reader) is recorded, never a crash and never silently dropped.
    """
    files, folders, problems = [], [], []
    for path in entries:
        try:
            mode = path.stat().st_mode  # follows links
        except FileNotFoundError:
            if path.is_symlink():
                problems.append((path.name, f"{path}: dangling symbolic link (its target "
                                 f"{os.readlink(path)} does not exist)"))
            continue  # removed while listed
        except OSError as exc:
            reason = "symbolic link loop" if exc.errno == errno.ELOOP else f"cannot read it ({exc.strerror or exc})"
            problems.append((path.name, f"{path}: {reason}"))
            continue
        if stat.S_ISREG(mode):
            files.append(path)
        elif stat.S_ISDIR(mode):
            folders.append(path)
        elif image_suffix(path):
            problems.append((path.name, f"{path}: not a regular file (a pipe, socket or device)"))
    return files, folders, problems


def _single_file_case(path: Path, spatial_dims: int) -> Case:
    split = split_channel_stem(_stem(path))
    case_id = split[0] if split and split[1] == 0 else _stem(path)
    return Case(case_id, [path], "file", _output_ext(path, spatial_dims))


def _folder_case(folder: Path, channel_files: list[str] | None, spatial_dims: int) -> Case | None:
    """A case folder holding every channel file, else None."""
    if not channel_files or not all((folder / name).is_file() for name in channel_files):
        return None
    paths = [folder / name for name in channel_files]
    return Case(folder.name, paths, "folder", _output_ext(paths[0], spatial_dims))


def _subfolder_case(
    folder: Path, channel_files: list[str] | None, spatial_dims: int
) -> tuple[Case | None, str]:
    """Classify a subfolder as a case folder or DICOM case, or say why it is neither."""
    case = _folder_case(folder, channel_files, spatial_dims)
    if case is not None:
        return case, ""
    try:
        files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    except OSError as exc:
        return None, f"{folder}: cannot read the folder ({exc.strerror or exc})"
    if channel_files:
        present = [name for name in channel_files if (folder / name).is_file()]
        if present:
            missing = [name for name in channel_files if name not in present]
            return None, f"case folder is missing channel file(s): {', '.join(missing)}"
    if any(is_dicom_file(p) for p in files):
        return Case(folder.name, [folder], "dicom", ".nii.gz"), ""
    if not files:
        return (
            None,
            f"empty folder {folder} (expected a DICOM series{' or case files' if channel_files else ''})",
        )
    expected = f"DICOM files or the channel files {channel_files}" if channel_files else "DICOM files"
    return None, f"folder {folder} holds no {expected}"


def _file_cases(
    files: list[Path], spatial_dims: int, in_channels: int
) -> tuple[list[Case], list[tuple[str, str]]]:
    """Group the image files of a flat folder into cases."""
    groups: dict[str, dict[int, Path]] = {}
    singles: list[Path] = []
    for path in files:
        if image_suffix(path) is None:
            continue
        split = split_channel_stem(_stem(path))
        if split:
            groups.setdefault(split[0], {})[split[1]] = path
        else:
            singles.append(path)
    cases = [Case(_stem(p), [p], "file", _output_ext(p, spatial_dims)) for p in singles]
    problems: list[tuple[str, str]] = []
    for case_id, channels in groups.items():
        if in_channels == 1 and 0 not in channels:
            # Names like case_0001 without a _0000 are numbered cases, not channels.
            cases += [Case(_stem(p), [p], "file", _output_ext(p, spatial_dims)) for p in channels.values()]
            continue
        files = ", ".join(channels[c].name for c in sorted(channels))
        if in_channels == 1 and len(channels) > 1:
            # CASE_0000 + CASE_0001...: a channel-split case for a model with more channels; running
            # each file as its own one-channel case would give confident nonsense.
            problems.append((case_id, f"{files}: channel files of {len(channels)} channels but the model "
                             "takes 1 channel (rename the files if they are separate cases)"))
            continue
        expected = set(range(in_channels))
        if set(channels) != expected:
            missing = sorted(expected - set(channels))
            extra = sorted(set(channels) - expected)
            detail = [f"missing channel file(s) {', '.join(f'_{c:04d}' for c in missing)}"] if missing else []
            detail += [f"unexpected channel file(s) {', '.join(f'_{c:04d}' for c in extra)}"] if extra else []
            problems.append((case_id, f"{files}: {'; '.join(detail)} (the model takes {in_channels} channel(s))"))
            continue
        paths = [channels[c] for c in range(in_channels)]
        cases.append(Case(case_id, paths, "nnunet", _output_ext(paths[0], spatial_dims)))
    return cases, problems


def _dedupe(cases: list[Case], problems: list[tuple[str, str]]) -> tuple[list[Case], list[tuple[str, str]]]:
    """Sort by id; a second case with an id already taken becomes a problem."""
    seen: dict[str, Case] = {}
    for case in sorted(cases, key=lambda c: (c.id, str(c.paths[0]))):
        if case.id in seen:  # recorded under the file's own name: the case id stays the kept case's
            problems.append((case.paths[0].name, f"{case.paths[0]}: duplicate case id {case.id!r} (already "
                             f"{seen[case.id].paths[0].name}); rename one of them"))
        else:
            seen[case.id] = case
    return list(seen.values()), sorted(problems)
