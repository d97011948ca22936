"""The deploy bundle schema: ``model.json`` next to ``model.onnx`` (this module owns it).

Schema versions: 1 (the first), 2 (adds ``pipeline``: the named parts that prepare a case, blend
Schema versions: 1 (the first), 2 (adds ``pipeline``: the named parts that prepare a case, blend
the patches and clean the labels, see :mod:`seg_runtime.parts`; and ``files``: the SHA-256 of every
file the bundle reads, checked at load by :func:`verify_bundle`), 3 (adds ``mirror_axes``: the axes
mirrored when mirroring is on, null for all; ``postprocess``: the settings of a post-processing
part other than ``seg``, e.g. nnU-Net's ``keep_largest`` label sets; and ``label_values``: the value
each class has in the dataset's label files, written into label maps by default). Every version up to
:data:`SCHEMA_VERSION` is read; a bundle that names no ``pipeline`` (all of version 1) runs today's
parts, one without ``files`` loads with a warning (refused under ``--strict``), one without
``mirror_axes`` mirrors every spatial axis. Writing always writes the current version.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from . import json_types as jt
from .atomic import atomic_write_text
from .bundle_files import bundle_digest, file_hashes, file_problems
from .consistency import description_problems
from .errors import SegError
from .nnunet.parts import NnunetPostprocessor, keep_steps
from .outputs import OUTPUT_KINDS, output_channels, region_paint_labels
from .parts import DEFAULT_PIPELINE, PREPROCESSORS, Blend, SegPostprocessor, check_pipeline
from .postprocess import structure_members

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 3
BUNDLE_JSON = "model.json"


class BundleError(SegError, ValueError):
    """``model.json`` is missing, unreadable or invalid; the message names the key or file."""


@dataclass
class Bundle:
    """Everything a torch-free machine needs to turn scans into label maps.

    Attributes:
        spatial_dims: 2 or 3.
        in_channels: Number of input channels.
        channel_names: Human-readable channel names, one per channel.
        channel_files: File names inside a case folder, in channel order (e.g.
            ``["Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"]``), or None.
        num_classes: Output classes including background.
        labels: Class name → output channel index (the value written to label maps).
        regions: Region name → the class indices it unites (e.g. "whole tumour").
        patch_size: Sliding-window patch size, one per spatial axis.
        overlap: Sliding-window overlap fraction in [0, 1).
        preprocess: The settings of the preprocessing part ``pipeline["preprocess"]`` names (for
            ``seg``, a :class:`PreprocessSpec`: orientation, spacing and normalisation).
        keep_largest: Class or region names reduced to their largest connected component in
            the written label maps (see :mod:`seg_runtime.postprocess`); empty: none.
        remove_small: Class or region name -> smallest component volume kept (mm³; pixels for
            images without spacing), applied after ``keep_largest``; empty: none.
        tta: Mirroring test-time augmentation by default (the setting the model was validated
            with; ``--tta`` / ``--no-tta`` override it); False in bundles that predate it.
        outputs: ``"classes"`` (softmax over ``num_classes`` channels) or ``"regions"`` (one
            sigmoid channel per region, painted into labels; see :mod:`seg_runtime.outputs`).
        input_name: ONNX input name. Shape: [B, C, *P].
        output_name: ONNX output name (logits). Shape: [B, K, *P], K = :attr:`output_channels`.
        model_file: ONNX file name inside the bundle folder.
        provenance: Free-form (seg version, config hash, run dir, model name, created).
        label_values: Class name -> the value it has in the dataset's label files (ISBI's
            ``{"interior": 255, "membrane": 0}``), written into label maps unless class indices are
            asked for; empty when the files hold the class indices themselves.
        label_codes: Optional per-label DICOM codes and colour for DICOM-SEG (see
            :mod:`seg_runtime.label_codes`); empty in bundles that predate it.
        pipeline: The parts by kind (``preprocess``, ``blend``, ``postprocess``; see
            :mod:`seg_runtime.parts`); missing kinds get the defaults.
        files: Path inside the bundle folder -> SHA-256 of every file the bundle reads (the model
            file and its external data); empty in bundles that predate it.
        mirror_axes: The spatial axes mirrored when mirroring is on (the axes the model was
            trained to be mirrored along); None: every spatial axis.
        postprocess: Settings of the post-processing part when it is not ``seg`` (whose settings
            are ``keep_largest`` and ``remove_small``); for ``nnunet``: ``{"keep_largest": [[labels]]}``.
    """

    spatial_dims: int
    in_channels: int
    channel_names: list[str]
    channel_files: list[str] | None
    num_classes: int
    labels: dict[str, int]
    regions: dict[str, list[int]]
    patch_size: list[int]
    overlap: float
    preprocess: Any
    keep_largest: list[str] = field(default_factory=list)
    remove_small: dict[str, float] = field(default_factory=dict)
    tta: bool = False
    outputs: str = "classes"
    input_name: str = "image"
    output_name: str = "logits"
    model_file: str = "model.onnx"
    provenance: dict[str, Any] = field(default_factory=dict)
    label_codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    label_values: dict[str, int] = field(default_factory=dict)
    pipeline: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PIPELINE))
    files: dict[str, str] = field(default_factory=dict)
    mirror_axes: list[int] | None = None
    postprocess: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            self.pipeline = check_pipeline(self.pipeline)
        except ValueError as exc:
            key, _, message = str(exc).partition(": ")
            raise BundleError(f"key '{key}': {message}") from None
        try:
            self._check()
        except BundleError:
            raise
        except ValueError as exc:  # the parts' messages already name their key
            key, _, message = str(exc).partition(": ")
            raise BundleError(f"key '{key}': {message}") from exc

    def _check(self) -> None:
        """Cross-field consistency; each message names the key."""
        _expect(self.spatial_dims in (2, 3), "spatial_dims", f"must be 2 or 3, got {self.spatial_dims}")
        _expect(self.in_channels >= 1, "in_channels", f"must be >= 1, got {self.in_channels}")
        _expect(len(self.channel_names) == self.in_channels, "channel_names", f"needs {self.in_channels} names")
        if self.channel_files is not None:
            _expect(len(self.channel_files) == self.in_channels, "channel_files", f"needs {self.in_channels} names")
        _expect(self.num_classes >= 2, "num_classes", f"must be >= 2 (incl. background), got {self.num_classes}")
        for name, index in self.labels.items():
            _expect(0 <= index < self.num_classes, "labels", f"'{name}': {index} not in 0..{self.num_classes - 1}")
        for name, members in self.regions.items():
            _expect(all(0 <= i < self.num_classes for i in members), "regions", f"'{name}': {members} out of range")
        _expect(len(self.patch_size) == self.spatial_dims, "patch_size", f"needs {self.spatial_dims} values")
        _expect(all(p >= 1 for p in self.patch_size), "patch_size", f"values must be >= 1, got {self.patch_size}")
        _expect(0.0 <= self.overlap < 1.0, "overlap", f"must be in [0, 1), got {self.overlap}")
        part = PREPROCESSORS[self.pipeline["preprocess"]]
        _expect(isinstance(self.preprocess, part.spec_type), "preprocess",
                f"settings of part {part.name!r} expected, got {type(self.preprocess).__name__}")
        self.preprocessor.check(self.spatial_dims, self.in_channels)
        _expect(bool(self.model_file), "model_file", "must be a file name")
        if self.mirror_axes is not None:
            _expect(len(set(self.mirror_axes)) == len(self.mirror_axes)
                    and all(0 <= a < self.spatial_dims for a in self.mirror_axes), "mirror_axes",
                    f"expected distinct spatial axes in 0..{self.spatial_dims - 1}, got {self.mirror_axes}")
        if self.pipeline["postprocess"] == "nnunet":
            keep_steps(self.postprocess, self.num_classes)
        else:
            _expect(not self.postprocess, "postprocess", "settings only for a post-processing part other than seg")
        if self.label_values:
            values = list(self.label_values.values())
            _expect(set(self.label_values) == set(self.labels), "label_values",
                    f"needs one value per class of labels ({', '.join(self.labels)})")
            _expect(len(set(values)) == len(values) and all(0 <= v <= 65535 for v in values), "label_values",
                    f"values must be distinct and within 0..65535, got {values}")
        _expect(self.outputs in OUTPUT_KINDS, "outputs", f"must be one of {', '.join(OUTPUT_KINDS)}")
        for key, message in description_problems(
            in_channels=self.in_channels,
            normalization_entries=len(getattr(self.preprocess, "normalization", [None])),
            labels=self.labels, regions=self.regions, keep_largest=self.keep_largest,
            remove_small=self.remove_small, outputs=self.outputs, label_codes=self.label_codes,
        ):
            _expect(False, key, message)

    @property
    def preprocessor(self) -> Any:
        """The preprocessing part (:mod:`seg_runtime.parts`) with this bundle's settings."""
        return PREPROCESSORS[self.pipeline["preprocess"]](self.preprocess)

    @property
    def blend(self) -> Blend:
        """The blending part: in which space patches, mirrorings and folds are averaged."""
        return Blend(self.pipeline["blend"], regions=self.outputs == "regions")

    @property
    def tta_axes(self) -> tuple[int, ...]:
        """The spatial axes mirrored when mirroring is on."""
        return tuple(range(self.spatial_dims)) if self.mirror_axes is None else tuple(self.mirror_axes)

    def postprocessor(self, keep_largest: list[str] | None = None) -> SegPostprocessor | NnunetPostprocessor:
        """The post-processing part; ``keep_largest`` (``--keep-largest``) replaces the bundle's list,
        and an empty list turns every step off (remove-small included)."""
        if self.pipeline["postprocess"] == "nnunet":
            return self._nnunet_postprocessor(keep_largest)
        keep = self.keep_largest if keep_largest is None else list(keep_largest)
        small = self.remove_small if keep_largest is None or keep_largest else {}
        for name in keep:
            try:
                structure_members(name, self.labels, self.regions)
            except ValueError as exc:
                raise BundleError(f"keep_largest: {exc}") from None
        return SegPostprocessor(tuple(keep), dict(small), dict(self.labels), dict(self.regions))

    def _nnunet_postprocessor(self, keep_largest: list[str] | None) -> NnunetPostprocessor:
        """nnU-Net's label sets, or those the ``keep_largest`` names stand for."""
        if keep_largest is None:
            return NnunetPostprocessor(keep_steps(self.postprocess, self.num_classes))
        steps = []
        for name in keep_largest:
            try:
                steps.append(tuple(structure_members(name, self.labels, self.regions)))
            except ValueError as exc:
                raise BundleError(f"keep_largest: {exc}") from None
        return NnunetPostprocessor(tuple(steps))

    @property
    def output_channels(self) -> int:
        """Channels of the model's output: ``num_classes``, or the number of regions."""
        return output_channels(self.outputs, self.num_classes, self.regions)

    @property
    def paint_labels(self) -> list[int] | None:
        """For region outputs, the label each region channel paints (in order); else None."""
        return region_paint_labels(self.regions) if self.outputs == "regions" else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, with ``schema_version`` first."""
        data: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for item in fields(self):
            value = getattr(self, item.name)
            data[item.name] = value.to_dict() if hasattr(value, "to_dict") else value
        return json.loads(json.dumps(data))  # deep copy with JSON types only

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Bundle:
        """Validate and build a bundle from a ``model.json`` dict.

        Raises:
            BundleError: Missing/too-new schema_version, missing keys or wrong types; the
                message names the key.
        """
        if not isinstance(data, dict):
            raise BundleError(f"expected a JSON object, got {type(data).__name__}")
        version = _get(data, "schema_version", jt.is_int, "an integer")
        _expect(
            1 <= version <= SCHEMA_VERSION,
            "schema_version",
            f"{version} is not supported by this seg-runtime (supports <= {SCHEMA_VERSION}); upgrade seg-runtime",
        )
        known = {item.name for item in fields(cls)} | {"schema_version"}
        unknown = sorted(set(data) - known)
        if unknown:
            logger.warning("model.json: ignoring unknown key(s) %s", unknown)
        in_channels = _get(data, "in_channels", jt.is_int, "an integer")
        num_classes = _get(data, "num_classes", jt.is_int, "an integer")
        pipeline = _pipeline(data)
        return cls(
            spatial_dims=_get(data, "spatial_dims", jt.is_int, "an integer"),
            in_channels=in_channels,
            channel_names=_get(
                data,
                "channel_names",
                jt.is_str_list,
                "a list of strings",
                default=[f"channel_{i}" for i in range(in_channels)],
            ),
            channel_files=_get(
                data, "channel_files", jt.is_str_list_or_none, "a list of strings or null", default=None
            ),
            num_classes=num_classes,
            labels=_get(data, "labels", jt.is_str_int_dict, "an object of name: integer"),
            regions=_get(data, "regions", jt.is_str_int_list_dict, "an object of name: [integers]", default={}),
            patch_size=_get(data, "patch_size", jt.is_int_list, "a list of integers"),
            overlap=float(_get(data, "overlap", jt.is_number, "a number", default=0.5)),
            preprocess=_preprocess(data, pipeline["preprocess"]),
            keep_largest=_get(data, "keep_largest", jt.is_str_list, "a list of strings", default=[]),
            remove_small={k: float(v) for k, v in _get(data, "remove_small", jt.is_str_number_dict,
                                                        "an object of name: number", default={}).items()},
            tta=_get(data, "tta", lambda v: isinstance(v, bool), "true or false", default=False),
            outputs=_get(data, "outputs", jt.is_str, "a string", default="classes"),
            input_name=_get(data, "input_name", jt.is_str, "a string", default="image"),
            output_name=_get(data, "output_name", jt.is_str, "a string", default="logits"),
            model_file=_get(data, "model_file", jt.is_str, "a string", default="model.onnx"),
            provenance=_get(data, "provenance", lambda v: isinstance(v, dict), "an object", default={}),
            label_codes=_get(data, "label_codes", lambda v: isinstance(v, dict), "an object", default={}),
            label_values=_get(data, "label_values", jt.is_str_int_dict, "an object of class name: file value",
                              default={}),
            pipeline=pipeline,
            files=_get(data, "files", jt.is_str_str_dict, "an object of path: SHA-256", default={}),
            mirror_axes=_get(data, "mirror_axes", lambda v: v is None or jt.is_int_list(v), "a list of integers or null",
                             default=None),
            postprocess=_get(data, "postprocess", lambda v: isinstance(v, dict), "an object", default={}),
        )


def save_bundle_json(bundle: Bundle, directory: str | os.PathLike[str]) -> Path:
    """Write ``model.json`` into ``directory`` atomically; returns its path.

    When the model file is in ``directory``, ``files`` is set to the SHA-256 of it and of every
    external data file it names (:func:`seg_runtime.bundle_files.file_hashes`), so the bundle
    proves its files agree; write the model file first.
    """
    path = Path(directory) / BUNDLE_JSON
    if (Path(directory) / bundle.model_file).is_file():
        bundle = dataclasses.replace(bundle, files=file_hashes(Path(directory), bundle.model_file))
    atomic_write_text(path, json.dumps(bundle.to_dict(), indent=2) + "\n")
    return path


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Load ``model.json`` from a bundle folder (or the JSON file itself).

    Raises:
        BundleError: The file is missing, not JSON, or invalid; the message names the file.
    """
    path = Path(path)
    json_path = path / BUNDLE_JSON if path.is_dir() or not path.suffix else path
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleError(f"{json_path}: not found (is {path} a seg bundle folder?)") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{json_path}: cannot read ({exc})") from exc
    try:
        return Bundle.from_dict(data)
    except BundleError as exc:
        raise BundleError(f"{json_path}: {exc}") from exc


def verify_bundle(folder: str | os.PathLike[str], bundle: Bundle, *, strict: bool = False,
                  expect_sha256: str | None = None) -> str:
    """Check a bundle's files before anything of it runs; returns the bundle's digest.

    The digest is the SHA-256 of ``model.json`` (which holds every other file's hash): a deployment
    pins it with ``expect_sha256``. Every path ``model.json`` names must stay inside the folder, every
    listed file must have its recorded SHA-256, and the weights must be finite. A bundle written before
    ``files`` existed loads with a warning, or not at all when ``strict``.

    Raises:
        BundleError: one line naming the file and the problem.
    """
    folder = Path(folder)
    json_path = folder / BUNDLE_JSON
    digest = bundle_digest(folder)
    if expect_sha256 and digest != expect_sha256.strip().lower():
        raise BundleError(f"{json_path}: the bundle's SHA-256 is {digest}, not the expected {expect_sha256}")
    if not bundle.files:
        message = (f"{json_path} lists no file hashes (written before they existed): {bundle.model_file} "
                   "cannot be verified; export the bundle again")
        if strict:
            raise BundleError(f"{message} (refused under --strict)")
        logger.warning(message)
    problems = file_problems(folder, bundle.model_file, bundle.files)
    if problems:
        key, problem = problems[0]
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise BundleError(f"{json_path}: key '{key}': {problem}{more}")
    return digest


def _expect(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise BundleError(f"key '{key}': {message}")


_MISSING = object()


def _get(data: dict[str, Any], key: str, check: Any, expected: str, default: Any = _MISSING) -> Any:
    """Fetch ``data[key]``, checking its type; a missing key is an error unless defaulted."""
    if key not in data:
        if default is _MISSING:
            raise BundleError(f"missing required key '{key}'")
        return default
    value = data[key]
    if not check(value):
        raise BundleError(f"key '{key}': expected {expected}, got {json.dumps(value)[:80]}")
    return value


def _pipeline(data: dict[str, Any]) -> dict[str, str]:
    chosen = _get(data, "pipeline", lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
                  "an object of kind: part name", default={})
    try:
        return check_pipeline(chosen)
    except ValueError as exc:
        key, _, message = str(exc).partition(": ")
        raise BundleError(f"key '{key}': {message}") from None


def _preprocess(data: dict[str, Any], part: str) -> Any:
    settings = _get(data, "preprocess", lambda v: isinstance(v, dict), "an object")
    try:
        return PREPROCESSORS[part].parse(settings)
    except ValueError as exc:
        key, _, message = str(exc).partition(": ")
        raise BundleError(f"key '{key}': {message}") from exc
