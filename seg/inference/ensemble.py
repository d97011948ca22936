"""Fold ensembles: the k models of a cross-validation folder as one network.

``seg predict -m CV_FOLDER`` and ``seg export CV_FOLDER`` load every fold's checkpoint (or the
``--folds`` picked, :func:`seg.inference.loading.load_backend`) into :class:`FoldEnsemble`, whose output is the log of the folds' mean
probability (softmax for class outputs, sigmoid for region outputs). The sliding window applies
its usual softmax / sigmoid to it and gets back exactly that mean, so the whole predict path —
Gaussian blending, mirroring, inverse geometry, post-processing, Ray, and the ONNX bundle that
``seg-run`` runs — works on an ensemble unchanged, and a bundle holds the ensemble as one graph.

The CV folder is the one ``seg train CONFIG --folds ...`` writes: ``cv.json`` names each fold's
checkpoint, and ``postprocessing.json`` (when every fold was scored) the keep-largest choice that
the ensemble applies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seg.errors import SegError
from seg.inference.backend import TorchBackend
from seg.inference.bundle_meta import bundle_from_config

log = logging.getLogger(__name__)

CV_MANIFEST = "cv.json"
POSTPROCESSING = "postprocessing.json"
_EPS = 1e-6  # probabilities are clamped to [eps, 1 - eps] before the log (finite outputs)


class EnsembleError(SegError, ValueError):
    """A CV folder that cannot form an ensemble (missing folds, folds that disagree)."""


def is_cv_folder(path: str | Path) -> bool:
    """Whether ``path`` is a cross-validation folder (it holds ``cv.json``)."""
    return (Path(path) / CV_MANIFEST).is_file()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EnsembleError(f"{path}: cannot read ({exc})") from None
    if not isinstance(data, dict):
        raise EnsembleError(f"{path}: expected a JSON object")
    return data


def fold_checkpoints(cv_dir: str | Path, folds: Sequence[int] | None = None) -> list[tuple[int, Path]]:
    """The ``(fold, checkpoint)`` pairs of a CV folder, all folds or those asked for.

    Raises:
        EnsembleError: a fold that ``cv.json`` does not list, or whose checkpoint is missing.
    """
    cv_dir = Path(cv_dir)
    runs = _read_json(cv_dir / CV_MANIFEST).get("runs", {})
    listed = sorted(int(k) for k in runs)
    wanted = listed if folds is None else list(dict.fromkeys(int(f) for f in folds))
    if not wanted:
        raise EnsembleError(f"{cv_dir / CV_MANIFEST}: lists no trained fold")
    pairs = []
    for fold in wanted:
        if fold not in listed:
            raise EnsembleError(f"{cv_dir}: no fold {fold} (folds here: {', '.join(map(str, listed)) or 'none'})")
        checkpoint = cv_dir / runs[str(fold)]["checkpoint"]
        if not checkpoint.is_file():
            raise EnsembleError(f"{checkpoint}: fold {fold} has no checkpoint yet (train it with --folds {fold})")
        pairs.append((fold, checkpoint))
    return pairs


class FoldEnsemble(nn.Module):
    """The members' mean probability, returned as logits whose activation gives that mean back; or,
    with ``average="logits"``, the members' mean logits (nnU-Net's fold ensemble: since the Gaussian
    blending and the mirroring are linear in the logits, averaging per patch is exact).

    Args:
        members: The fold models (eval mode, training heads dropped), same input and output.
        outputs: ``classes`` (softmax over dim 1) or ``regions`` (independent sigmoids).
        average: ``probabilities`` (seg's ensembles) or ``logits``.

    Shape: [B, C, *P] -> [B, K, *P]
    """

    def __init__(self, members: Sequence[nn.Module], outputs: str = "classes", average: str = "probabilities") -> None:
        super().__init__()
        if average not in ("probabilities", "logits"):
            raise ValueError(f"average must be 'probabilities' or 'logits', got {average!r}")
        self.members = nn.ModuleList(members)
        self.regions = outputs == "regions"
        self.average = average

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.average == "logits":
            return torch.stack([member(x).float() for member in self.members]).mean(dim=0)
        total = None
        for member in self.members:
            logits = member(x).float()
            p = torch.sigmoid(logits) if self.regions else torch.softmax(logits, dim=1)
            total = p if total is None else total + p
        mean = (total / len(self.members)).clamp(_EPS, 1.0 - _EPS)
        if self.regions:
            return torch.log(mean) - torch.log1p(-mean)  # logit: sigmoid(logit(p)) == p
        return torch.log(mean)  # softmax(log p) == p, since p sums to 1 over classes


def _inference_view(bundle: Any) -> Any:
    """What must agree between folds for their probabilities to be averaged voxel by voxel."""
    return dataclasses.replace(bundle, provenance={}, keep_largest=[], remove_small={}, tta=False)


def chosen_postprocessing(cv_dir: Path) -> dict[str, Any] | None:
    """The CV folder's ``postprocessing.json`` (once every fold was scored), else None."""
    chosen = Path(cv_dir) / POSTPROCESSING
    return _read_json(chosen) if chosen.is_file() else None


def ensemble_backend(cv_dir: Path, pairs: list[tuple[int, Path]], members: list[TorchBackend],
                     rebuild: Callable[[str], TorchBackend] | None = None) -> TorchBackend:
    """The folds of ``cv_dir`` (loaded as ``members``, in ``pairs`` order) as one backend.

    Its config is the first fold's, with ``infer.keep_largest`` / ``remove_small`` set to the CV
    folder's chosen post-processing when there is one, and ``infer.tta`` to the mirroring it was
    chosen with; the bundle's provenance lists the folds and their hashes.

    Raises:
        EnsembleError: folds whose inputs, labels, patch or preprocessing differ.
    """
    first = members[0]
    for (fold, path), member in zip(pairs[1:], members[1:]):
        if _inference_view(member.bundle) != _inference_view(first.bundle):
            raise EnsembleError(f"{path}: fold {fold} differs from fold {pairs[0][0]} in its inputs, labels, "
                                "patch or preprocessing; an ensemble needs folds of one config")
    cfg = first.cfg.model_copy(deep=True)
    choice = chosen_postprocessing(cv_dir)
    if choice is not None:
        cfg.infer.keep_largest = list(choice.get("keep_largest", []))
        cfg.infer.remove_small = dict(choice.get("remove_small", {}))
        cfg.infer.tta = bool(choice.get("tta", cfg.infer.tta))  # as validated: the choice was made on it
    folds = [fold for fold, _ in pairs]
    bundle = bundle_from_config(cfg, {"checkpoint": str(cv_dir)})
    bundle.provenance.update(ensemble_folds=folds, fold_config_hashes=[m.info["config_hash"] for m in members],
                             checkpoint=str(cv_dir))
    model = FoldEnsemble([m.model for m in members], cfg.model.outputs)
    log.info("fold ensemble of %s: folds %s", cv_dir, folds)
    digest = hashlib.sha256("\n".join(m.digest for m in members).encode()).hexdigest()
    return TorchBackend(model, cfg, bundle, first.device, cv_dir, {"config_hash": first.info["config_hash"]},
                        rebuild=rebuild, digest=digest)
