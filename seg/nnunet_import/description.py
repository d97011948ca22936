"""``model.json`` for an imported nnU-Net model: labels, regions and the nnunet parts' settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seg.nnunet_import.folder import NnunetImportError, ResultFolder
from seg_runtime.bundle import Bundle, BundleError
from seg_runtime.naming import dataset_channel_names
from seg_runtime.nnunet import NnunetSpec, Resampling
from seg_runtime.outputs import region_paint_labels

OUTSIDE_LOGIT = 1e4  # logits outside the non-zero crop: background certain (softmax 1, sigmoids 0)
_RESAMPLING_FN = "resample_data_or_seg_to_shape"
_NORMALIZATION = {"ZScoreNormalization": "zscore", "CTNormalization": "ct", "NoNormalization": "none",
                  "RescaleTo01Normalization": "rescale_to_0_1", "RGBTo01Normalization": "rgb_to_0_1"}
PP_FUNCTION = "remove_all_but_largest_component_from_segmentation"


def label_layout(dataset: dict[str, Any], where: Path) -> tuple[dict[str, int], dict[str, list[int]], list[int] | None]:
    """Class labels, regions and the region paint order of ``dataset.json``.

    Returns:
        ``labels`` (name -> value), ``regions`` (name -> values; empty without regions) and
        ``regions_class_order`` (None without regions).
    """
    raw = dataset.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise NnunetImportError(f"{where}: no 'labels' object")
    entries = {k: v for k, v in raw.items() if k != "ignore"}
    if not any(isinstance(v, list) for v in entries.values()):
        values = sorted(entries.values()) if all(isinstance(v, int) for v in entries.values()) else None
        if values != list(range(len(entries))):
            raise NnunetImportError(f"{where}: labels must be the integers 0..{len(entries) - 1}, got {raw}")
        return {str(k): int(v) for k, v in entries.items()}, {}, None
    order = dataset.get("regions_class_order")
    regions = {str(k): sorted({v} if isinstance(v, int) else set(v)) for k, v in entries.items()
               if (v if isinstance(v, list) else [v]) != [0] and set(v if isinstance(v, list) else [v]) != {0}}
    if not isinstance(order, list) or len(order) != len(regions):
        raise NnunetImportError(f"{where}: region labels need a regions_class_order with one label per region")
    if region_paint_labels(regions) != order:
        raise NnunetImportError(f"{where}: regions_class_order {order} is not the order seg-runtime paints the "
                                f"regions in ({region_paint_labels(regions)}); list regions from largest to smallest")
    labels = {"background": 0, **{name: int(label) for name, label in zip(regions, order)}}
    return labels, regions, list(order)


def _resampling(configuration: dict[str, Any], kind: str, where: Path) -> Resampling:
    name, kwargs = configuration.get(f"resampling_fn_{kind}"), configuration.get(f"resampling_fn_{kind}_kwargs", {})
    if name != _RESAMPLING_FN or not isinstance(kwargs, dict):
        raise NnunetImportError(f"{where}: resampling_fn_{kind} {name!r} is not supported (only {_RESAMPLING_FN})")
    try:
        return Resampling(order=kwargs.get("order", 3), order_z=kwargs.get("order_z", 0),
                          force_separate_z=kwargs.get("force_separate_z"),
                          anisotropy_threshold=kwargs.get("separate_z_anisotropy_threshold", 3.0))
    except ValueError as exc:
        raise NnunetImportError(f"{where}: resampling_fn_{kind}_kwargs: {exc}") from None


def _normalization(folder: ResultFolder, in_channels: int, where: Path) -> list[dict[str, Any]]:
    config = folder.configuration
    schemes, masks = config.get("normalization_schemes", []), config.get("use_mask_for_norm", [])
    stats = folder.plans.get("foreground_intensity_properties_per_channel", {})
    if len(schemes) != in_channels or len(masks) != in_channels:
        raise NnunetImportError(f"{where}: normalization_schemes/use_mask_for_norm need {in_channels} entries")
    entries = []
    for channel, (scheme, mask) in enumerate(zip(schemes, masks)):
        if scheme not in _NORMALIZATION:
            raise NnunetImportError(f"{where}: normalization scheme {scheme!r} is not supported "
                                    f"(supported: {', '.join(_NORMALIZATION)})")
        entry: dict[str, Any] = {"scheme": _NORMALIZATION[scheme]}
        if scheme == "ZScoreNormalization":
            entry["use_mask"] = bool(mask)
        if scheme == "CTNormalization":
            props = stats.get(str(channel), {})
            try:
                entry.update(mean=float(props["mean"]), std=float(props["std"]),
                             lower=float(props["percentile_00_5"]), upper=float(props["percentile_99_5"]))
            except (KeyError, TypeError, ValueError):
                raise NnunetImportError(f"{where}: CT normalisation of channel {channel} needs "
                                        "foreground_intensity_properties_per_channel") from None
        entries.append(entry)
    return entries


def postprocessing_steps(choice: dict[str, Any] | None) -> list[list[int]]:
    """nnU-Net's chosen keep-largest steps as label sets (regions flattened to their labels)."""
    if choice is None:
        return []
    where = choice.get("_file", "postprocessing.json")
    functions, kwargs = choice.get("postprocessing_fns", []), choice.get("postprocessing_kwargs", [])
    if not isinstance(functions, list) or not isinstance(kwargs, list) or len(functions) != len(kwargs):
        raise NnunetImportError(f"{where}: expected postprocessing_fns and postprocessing_kwargs lists")
    steps = []
    for function, arguments in zip(functions, kwargs):
        if function != PP_FUNCTION or not isinstance(arguments, dict):
            raise NnunetImportError(f"{where}: post-processing step {function!r} is not supported (only {PP_FUNCTION})")
        value = arguments.get("labels_or_regions")
        flat = value if isinstance(value, list) else [value]
        labels = sorted({int(v) for item in flat for v in (item if isinstance(item, list) else [item])})
        steps.append(labels)
    return steps


def describe(folder: ResultFolder, in_channels: int, out_channels: int, mirror_axes: list[int] | None,
             provenance: dict[str, Any]) -> Bundle:
    """The bundle description of ``folder`` (its ``model.json``)."""
    where, plans_json = folder.root / "dataset.json", folder.root / "plans.json"
    labels, regions, order = label_layout(folder.dataset, where)
    expected = len(regions) if regions else len(labels)
    if out_channels != expected:
        raise NnunetImportError(f"{where}: its labels need {expected} network outputs but the checkpoint's "
                                f"network has {out_channels}")
    names = dataset_channel_names(folder.dataset)
    if len(names) != in_channels:
        raise NnunetImportError(f"{where}: channel_names lists {len(names)} channel(s) but the network takes {in_channels}")
    patch = [int(p) for p in folder.configuration.get("patch_size", [])]
    if len(patch) not in (2, 3):
        raise NnunetImportError(f"{plans_json}: configuration {folder.configuration_name!r} has no 2D/3D patch_size")
    fill = [-OUTSIDE_LOGIT] * out_channels if regions else [OUTSIDE_LOGIT] + [-OUTSIDE_LOGIT] * (out_channels - 1)
    spec = NnunetSpec(network_dims=len(patch), transpose_forward=list(folder.plans.get("transpose_forward", [0, 1, 2])),
                      target_spacing=list(folder.configuration.get("spacing", [])),
                      normalization=_normalization(folder, in_channels, plans_json),
                      resample_data=_resampling(folder.configuration, "data", plans_json),
                      resample_logits=_resampling(folder.configuration, "probabilities", plans_json), crop_fill=fill)
    shift = 1 if len(patch) == 2 else 0
    try:
        return Bundle(
            spatial_dims=3, in_channels=in_channels, channel_names=[names[str(i)] for i in range(in_channels)],
            channel_files=None, num_classes=max([*labels.values(), *[v for r in regions.values() for v in r]]) + 1,
            labels=labels, regions=regions, patch_size=[1] * shift + patch, overlap=0.5, preprocess=spec, tta=True,
            outputs="regions" if regions else "classes", provenance=provenance,
            pipeline={"preprocess": "nnunet", "blend": "nnunet", "postprocess": "nnunet"},
            mirror_axes=None if mirror_axes is None else [a + shift for a in mirror_axes],
            postprocess={"keep_largest": postprocessing_steps(folder.postprocessing)},
        )
    except (BundleError, ValueError) as exc:
        raise NnunetImportError(f"{folder.root}: cannot describe the model ({exc})") from None
