"""``seg import-nnunet`` on small hand-made result folders (default tier: no training, no nnunetv2).

A real PlainConvUNet from ``dynamic-network-architectures`` with random weights stands in for a
trained one: these tests are about the folder, the checkpoint and the bundle, not accuracy (the
parity tests train real models). Bad input: one line naming the file, exit 2, nothing written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from seg.cli import main

RUNTIME_TEST = Path(__file__).resolve().parents[1] / "runtime" / "test_runtime_torch_free.py"
EXPORT_DIR = Path(__file__).resolve().parents[2] / "export"


def _blocking_script() -> str:
    """The torch-blocking launcher of the runtime's torch-free test (one copy of it)."""
    import ast

    tree = ast.parse(RUNTIME_TEST.read_text(encoding="utf-8"))
    return next(node.value.value for node in tree.body if isinstance(node, ast.Assign)
                and getattr(node.targets[0], "id", "") == "SCRIPT")

pytest.importorskip("dynamic_network_architectures")

ARCH = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {"n_stages": 2, "features_per_stage": [4, 8], "conv_op": "torch.nn.modules.conv.Conv3d",
                    "kernel_sizes": [[3, 3, 3], [3, 3, 3]], "strides": [[1, 1, 1], [2, 2, 2]],
                    "n_conv_per_stage": [1, 1], "n_conv_per_stage_decoder": [1], "conv_bias": True,
                    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                    "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                    "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}


def _weights(in_channels: int = 1, classes: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    torch.manual_seed(seed)
    kwargs = dict(ARCH["arch_kwargs"], conv_op=torch.nn.Conv3d, norm_op=torch.nn.InstanceNorm3d,
                  nonlin=torch.nn.LeakyReLU)
    return PlainConvUNet(input_channels=in_channels, num_classes=classes, **kwargs).state_dict()


def _checkpoint(path: Path, weights: dict, **extra: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"network_weights": weights, "init_args": {"configuration": "3d_fullres", "fold": 0},
                "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": (0, 1, 2),
                "logging": {"ema_fg_dice": [np.float64(0.5)], "dtype": np.dtype("float64")}, **extra}, path)


def result_folder(root: Path, folds: tuple[int, ...] = (0,)) -> Path:
    folder = root / "Dataset009_Toy" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MR"}, "file_ending": ".nii.gz",
                                                     "labels": {"background": 0, "a": 1, "b": 2}}))
    configuration = {"patch_size": [8, 8, 8], "spacing": [1.0, 1.0, 1.0], "normalization_schemes": ["ZScoreNormalization"],
                     "use_mask_for_norm": [False], "architecture": ARCH,
                     **{f"resampling_fn_{k}": "resample_data_or_seg_to_shape" for k in ("data", "seg", "probabilities")},
                     "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
                     "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                            "force_separate_z": None}}
    (folder / "plans.json").write_text(json.dumps({"transpose_forward": [0, 1, 2], "configurations": {"3d_fullres": configuration},
                                                   "foreground_intensity_properties_per_channel": {}}))
    for fold in folds:
        _checkpoint(folder / f"fold_{fold}" / "checkpoint_final.pth", _weights(seed=fold))
    return folder


def _import(capsys: pytest.CaptureFixture, folder: Path, out: Path, *extra: str) -> tuple[int, str]:
    code = main(["import-nnunet", str(folder), "-o", str(out), *extra])
    return code, capsys.readouterr().err.strip()


def test_an_imported_bundle_runs_in_the_torch_free_runtime(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = result_folder(tmp_path, folds=(0, 1))
    code, _ = _import(capsys, folder, tmp_path / "bundle")
    data = json.loads((tmp_path / "bundle" / "model.json").read_text())
    assert code == 0 and data["pipeline"] == {"preprocess": "nnunet", "blend": "nnunet", "postprocess": "nnunet"}
    assert data["provenance"]["folds"] == [0, 1] and data["mirror_axes"] == [0, 1, 2]
    import nibabel as nib

    (tmp_path / "in").mkdir()
    image = np.random.default_rng(0).normal(3, 1, (11, 9, 13)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.diag([-1.0, 1.2, 0.8, 1.0])), str(tmp_path / "in" / "x_0000.nii.gz"))
    result = subprocess.run([sys.executable, "-c", _blocking_script(), "predict", str(tmp_path / "bundle"), "-i",
                             str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--tta"], capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(EXPORT_DIR)}, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["code"] == 0 and report["loaded"] == [] and report["attempts"] == []
    labels = np.asarray(nib.load(str(tmp_path / "out" / "x.nii.gz")).dataobj)
    assert labels.shape == image.shape and set(np.unique(labels)) <= {0, 1, 2}


class Evil:
    """Any class a checkpoint would need unpickled."""


def _break(kind: str, folder: Path) -> Path:
    """Damage ``folder`` one way; returns the file the error must name."""
    if kind == "missing plans":
        (folder / "plans.json").unlink()
        return folder / "plans.json"
    if kind == "unknown architecture":
        plans = json.loads((folder / "plans.json").read_text())
        plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "os.system"
        (folder / "plans.json").write_text(json.dumps(plans))
        return folder / "plans.json"
    if kind == "pickled object":
        _checkpoint(folder / "fold_0" / "checkpoint_final.pth", _weights(), trainer=Evil())
        return folder / "fold_0" / "checkpoint_final.pth"
    if kind == "mismatched folds":
        _checkpoint(folder / "fold_1" / "checkpoint_final.pth", _weights(in_channels=2))
        return folder / "fold_1" / "checkpoint_final.pth"
    if kind == "labels disagree":
        (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MR"}, "file_ending": ".nii.gz",
                                                         "labels": {"background": 0, "a": 1}}))
        return folder / "dataset.json"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing plans", "unknown architecture", "pickled object", "mismatched folds",
                                  "labels disagree"])
def test_bad_result_folders_fail_in_one_line_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                            kind: str) -> None:
    folder = result_folder(tmp_path)
    named = _break(kind, folder)
    code, err = _import(capsys, folder, tmp_path / "bundle")
    assert code == 2 and len(err.splitlines()) == 1 and str(named) in err, err
    assert not (tmp_path / "bundle").exists() and not list(tmp_path.glob(".tmp-*"))


def test_pickled_postprocessing_is_never_read(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = result_folder(tmp_path)
    (folder / "postprocessing.pkl").write_bytes(b"cos\nsystem\n(S'touch pwned'\ntR.")
    code, _ = _import(capsys, folder, tmp_path / "bundle")
    data = json.loads((tmp_path / "bundle" / "model.json").read_text())
    assert code == 0 and data["postprocess"] == {"keep_largest": []} and not (tmp_path / "pwned").exists()


def test_postprocessing_json_becomes_keep_largest_label_sets(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = result_folder(tmp_path)
    fn = "remove_all_but_largest_component_from_segmentation"
    (folder / "postprocessing.json").write_text(json.dumps({"postprocessing_fns": [fn, fn],
                                                            "postprocessing_kwargs": [{"labels_or_regions": [1, 2]},
                                                                                      {"labels_or_regions": 2}]}))
    code, _ = _import(capsys, folder, tmp_path / "bundle")
    assert code == 0
    assert json.loads((tmp_path / "bundle" / "model.json").read_text())["postprocess"] == {"keep_largest": [[1, 2], [2]]}
