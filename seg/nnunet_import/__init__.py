"""``seg import-nnunet``: a trained nnU-Net v2 model as a seg bundle that ``seg-run`` runs without torch.

The network is rebuilt from ``plans.json`` (:mod:`.network`), each fold's weights loaded without
unpickling, the folds joined into one graph that averages their logits (nnU-Net's fold ensemble)
and exported to ONNX with a parity check; ``model.json`` selects the nnunet pipeline parts
(:mod:`seg_runtime.nnunet`): nnU-Net's cropping, normalisation, resampling, Gaussian, mirroring and
post-processing. The bundle is written in a temporary sibling folder and renamed into place only
after every check passed.
"""

from __future__ import annotations

from seg.nnunet_import.export import ImportReport, import_nnunet
from seg.nnunet_import.folder import NnunetImportError

__all__ = ["ImportReport", "NnunetImportError", "import_nnunet"]
