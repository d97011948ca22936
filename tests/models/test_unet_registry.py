"""Our U-Nets are one ``build_unet(encoder=...)`` over the encoder registry, with unchanged sizes."""

from __future__ import annotations

import pytest

from seg.models import MODELS, build_model
from seg.models.unet import ENCODERS, build_unet

# Parameter counts of the registered models before the registry (spatial_dims, in 2, classes 3,
# size small, no deep supervision): checkpoints trained before it still load strictly.
PARAMS = {("ag_unet", 3): 1428726, ("ag_unet", 2): 2007991, ("gla_unet", 3): 1947382,
          ("region_unet", 3): 1966582, ("region_unet", 2): 4256951, ("gla_unet", 2): 4119351}


def test_every_unet_is_build_unet_over_its_encoder() -> None:
    assert set(ENCODERS.names()) == {"ag_unet", "gla_unet", "region_unet", "timm_unet"}
    for name in ENCODERS.names():
        assert MODELS.get(name).func is build_unet and MODELS.get(name).keywords == {"encoder": name}


@pytest.mark.parametrize(("name", "dims"), sorted(PARAMS))
def test_parameter_counts_unchanged(name: str, dims: int) -> None:
    model = build_model(name, spatial_dims=dims, in_channels=2, num_classes=3)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[(name, dims)]


def test_encoder_settings_stay_model_params() -> None:
    with pytest.raises(ValueError, match="bad model.params"):
        build_model("ag_unet", spatial_dims=3, in_channels=1, num_classes=2, depths=(1, 1))


def test_seg_models_prints_dims_and_a_description(capsys: pytest.CaptureFixture[str]) -> None:
    """``seg models``: one row per model with its dims and one line about it, within 100 columns."""
    from seg.cli import main
    from seg.models import MODEL_INFO

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 100
    rows = {line.split()[0]: line for line in lines[2:] if line.split() and line.split()[0] in MODELS}
    assert set(rows) == set(MODELS.names())
    assert "2D, 3D" in rows["ag_unet"] and "2D, 3D" in rows["monai_segresnet"]
    assert " 2D " in rows["smp_unet"] and "3D" not in rows["smp_unet"].split("baseline")[0]
    assert "MONAI" in rows["monai_unet"] and "segmentation_models_pytorch" in rows["smp_unet"]
    assert all(MODEL_INFO[n].description in rows[n] for n in MODELS.names())


@pytest.mark.parametrize("name", MODELS.names())
def test_builders_reject_the_dims_seg_models_does_not_list(name: str) -> None:
    """The dims ``seg models`` prints are the ones the builder checks (the contract suite builds the others)."""
    from seg.models import MODEL_INFO

    for dims in {2, 3} - set(MODEL_INFO[name].dims):
        with pytest.raises(ValueError, match=f"{name} supports 2D only"):
            build_model(name, spatial_dims=dims, in_channels=1, num_classes=2)
