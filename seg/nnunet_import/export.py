"""Result folder -> bundle: networks per fold, one logit-averaging graph, ONNX, parity, atomic write."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seg.export_onnx import stage_bundle_dir, swap_into_place
from seg.inference.ensemble import FoldEnsemble
from seg.inference.onnx_graph import export_graph, parity
from seg.nnunet_import.description import describe
from seg.nnunet_import.folder import NnunetImportError, read_result_folder
from seg.nnunet_import.network import build_network, load_checkpoint, load_weights
from seg_runtime.atomic import atomic_path
from seg_runtime.bundle import save_bundle_json
from seg_runtime.hashing import file_digest

log = logging.getLogger(__name__)

OPSET = 17
TOLERANCE = 1e-3  # max abs difference of the logits, onnxruntime against torch


@dataclass
class ImportReport:
    """What ``seg import-nnunet`` made."""

    bundle_dir: Path
    folds: list[int | str]
    configuration: str
    max_abs_diff: float


class SliceNetwork(nn.Module):
    """A 2d nnU-Net network on patches one slice deep: [B, C, 1, H, W] -> [B, K, 1, H, W]."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x[:, :, 0]).unsqueeze(2)


def _channels(weights: dict[str, torch.Tensor]) -> tuple[int, int]:
    """Input and output channels of an nnU-Net network, from its weights (first conv, last seg layer)."""
    convs = [w for w in weights.values() if w.ndim in (4, 5)]
    heads = sorted((int(k.split(".")[2]), w) for k, w in weights.items()
                   if k.startswith("decoder.seg_layers.") and k.endswith(".weight"))
    if not convs or not heads:
        raise ValueError("no convolution or segmentation layer")
    return int(convs[0].shape[1]), int(heads[-1][1].shape[0])


def _networks(folder: Any) -> tuple[list[nn.Module], list[int] | None, int, int]:
    """Each fold's network with its weights, the mirror axes, and the input/output channels."""
    networks, first = [], None
    for fold, path in folder.checkpoints:
        checkpoint = load_checkpoint(path)
        configuration = (checkpoint.get("init_args") or {}).get("configuration", folder.configuration_name)
        if configuration != folder.configuration_name:
            raise NnunetImportError(f"{path}: fold {fold} was trained as {configuration!r}, not "
                                    f"{folder.configuration_name!r} (folds of one model must match)")
        try:
            channels = _channels(checkpoint["network_weights"])
        except ValueError as exc:
            raise NnunetImportError(f"{path}: not an nnU-Net network ({exc})") from None
        if first is None:
            first = (channels, checkpoint.get("inference_allowed_mirroring_axes"))
        elif channels != first[0]:
            raise NnunetImportError(f"{path}: fold {fold} has {channels[0]} input / {channels[1]} output channels, "
                                    f"fold {folder.checkpoints[0][0]} {first[0][0]} / {first[0][1]} (mismatched folds)")
        network = build_network(folder.configuration, *channels, folder.root / "plans.json")
        networks.append(load_weights(network, checkpoint["network_weights"], path))
    (in_channels, out_channels), axes = first
    return networks, None if axes is None else [int(a) for a in axes], in_channels, out_channels


def _check_parity(model: nn.Module, onnx_path: Path, shape: tuple[int, ...], out: Path) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)

    def reference(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch)).float().numpy()

    diff = parity(reference, session, x)
    if not diff <= TOLERANCE:
        raise NnunetImportError(f"{out}: onnxruntime differs from torch by {diff:.3g} (tolerance {TOLERANCE:g}); "
                                "nothing was written")
    return diff


def import_nnunet(result_folder: str | Path, out_dir: str | Path, folds: list[str] | None = None,
                  checkpoint: str = "final") -> ImportReport:
    """Import an nnU-Net v2 result folder as a bundle (see the package docstring).

    Raises:
        NnunetImportError: a missing or invalid file, an architecture outside the allowlist, a
            checkpoint needing unpickling, mismatched folds, labels that disagree with the network,
            or an ONNX graph that differs from torch. Nothing is written then.
    """
    folder = read_result_folder(result_folder, folds, checkpoint)
    networks, mirror_axes, in_channels, out_channels = _networks(folder)
    provenance = {"nnunet_result_folder": str(folder.root.resolve()), "configuration": folder.configuration_name,
                  "trainer": folder.root.name.split("__")[0], "plans": folder.root.name.split("__")[1],
                  "folds": [f for f, _ in folder.checkpoints], "checkpoint": checkpoint,
                  "checkpoint_digests": [file_digest(p)[1] for _, p in folder.checkpoints]}
    bundle = describe(folder, in_channels, out_channels, mirror_axes, provenance)
    model: nn.Module = networks[0] if len(networks) == 1 else FoldEnsemble(networks, bundle.outputs, average="logits")
    if len(bundle.patch_size) == 3 and bundle.preprocess.network_dims == 2:
        model = SliceNetwork(model)
    model.eval()
    out = Path(out_dir)
    stage = stage_bundle_dir(out)
    try:
        shape = (1, in_channels, *bundle.patch_size)
        with atomic_path(stage / bundle.model_file) as tmp:
            export_graph(model, shape, str(tmp), OPSET)
        diff = _check_parity(model, stage / bundle.model_file, shape, out)
        bundle.provenance.update(opset=OPSET, parity_max_abs_diff=diff)
        save_bundle_json(bundle, stage)
        swap_into_place(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    log.info("imported %s (%s, folds %s) into %s", folder.root, folder.configuration_name, bundle.provenance["folds"], out)
    return ImportReport(out, [f for f, _ in folder.checkpoints], folder.configuration_name, diff)
