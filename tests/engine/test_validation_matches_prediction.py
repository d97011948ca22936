"""Training validation scores what ``seg predict`` would output: the same preprocessing and the same
sliding window on the model grid, so a validation Dice is the Dice of a prediction (without mirroring)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from seg.config import Config
from seg.data.datalist import build_datalist
from seg.data.transforms import LoadPreprocessd
from seg.engine.validate import predict_case
from seg.inference.backend import TorchBackend
from seg.inference.bundle_meta import bundle_from_config
from seg.models import create_model, prepare_export
from seg_runtime.cases import Case
from seg_runtime.options import PredictOptions
from seg_runtime.stages import CasePipeline, infer_case, load_case


@pytest.mark.parametrize("dims", [3, 2])
def test_validation_labels_equal_the_prediction_stages(tiny3d: Config, tiny2d: Config, dims: int) -> None:
    cfg = tiny3d if dims == 3 else tiny2d
    item = build_datalist(cfg.data)[0]
    torch.manual_seed(0)
    model = prepare_export(create_model(cfg))
    with torch.no_grad():  # a bias towards class 1 so the argmax is not one class everywhere
        model.head.bias.copy_(torch.tensor([0.0, 0.05, -0.05]))
    device = torch.device("cpu")
    backend = TorchBackend(model, cfg, bundle_from_config(cfg), device, "in memory")
    pipeline = CasePipeline.resolve(backend.bundle, PredictOptions(tta=False, progress=False),
                                    backend.default_batch_size)
    loaded = load_case(Case(item["id"], [Path(p) for p in item["image"]]), pipeline)
    validation_image = LoadPreprocessd(cfg.data)(item)["image"]
    np.testing.assert_array_equal(validation_image, loaded.image)  # one preprocessing for both
    scores = infer_case(loaded, pipeline, backend.predict_batch)
    predicted = scores.argmax(0)
    validated = predict_case(model, validation_image, cfg, device)
    assert len(np.unique(predicted)) > 1
    np.testing.assert_array_equal(validated, predicted)
