"""User errors through ``seg.cli.main``: exit 2, one line on stderr, no traceback; bugs keep theirs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from seg.cli import main
from seg.config import ConfigError
from seg.data.datalist import DataError
from seg.engine.device import resolve_device
from seg.engine.fit import TrainingError
from seg.errors import CheckpointError, SegError, is_user_error
from seg.export_onnx import ExportError
from seg_runtime.bundle import BundleError
from seg_runtime.dicom_seg import DicomSegUnavailable
from seg_runtime.geometry import CaseError

REPO = Path(__file__).resolve().parents[1]
DEMO3D = REPO / "configs" / "demo3d.yaml"


def one_line(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_one_error_family_for_both_clis() -> None:
    for cls in (ConfigError, DataError, TrainingError, ExportError, CheckpointError, BundleError, CaseError,
                DicomSegUnavailable):
        assert issubclass(cls, SegError), cls
    assert issubclass(ConfigError, ValueError) and issubclass(BundleError, ValueError)  # callers catching it
    assert is_user_error(ConfigError("x")) and is_user_error(FileNotFoundError("x"))
    assert not is_user_error(ValueError("x")) and not is_user_error(KeyError("x"))  # bugs keep a traceback


def test_a_bug_is_not_dressed_up_as_a_user_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import seg.commands

    def broken(args: object) -> int:
        raise KeyError("internal")

    monkeypatch.setattr(seg.commands, "cmd_models", broken)
    with pytest.raises(KeyError):
        main(["models"])


def test_misspelt_model_name_is_reported_before_any_data_is_read(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"  # the synthetic layout would write the phantoms here on first read
    code = main(["train", str(DEMO3D), f"data.root={root}", f"output_dir={tmp_path / 'runs'}",
                 "model.name=ag_unte"])
    assert code == 2
    one_line(capsys, "seg train: error:", "unknown model 'ag_unte'", "did you mean 'ag_unet'?")
    assert not root.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("override", "needle"), [
    ("model.gate=attention", "model.gate=attention is not supported by monai_unet"),
    ("model.deep_supervision=true", "model.deep_supervision=True is not supported by monai_unet"),
])
def test_baselines_reject_settings_they_would_ignore(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     override: str, needle: str) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(f"base: {DEMO3D}\nmodel: {{name: monai_unet, gate: none, deep_supervision: false, params: {{}}}}\n")
    code = main(["train", str(base), f"data.root={tmp_path / 'data'}", f"output_dir={tmp_path / 'runs'}", override])
    assert code == 2
    one_line(capsys, "seg train: error:", needle)
    assert not (tmp_path / "data").exists()


def test_monai_attention_unet_keeps_its_gates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from seg.config import load_config
    from seg.models.factory import check_model_config

    cfg = load_config(DEMO3D, ["model.name=monai_attention_unet", "model.deep_supervision=false"])
    check_model_config(cfg)  # gate: attention is what it has
    cfg = load_config(DEMO3D, ["model.name=monai_attention_unet", "model.deep_supervision=false",
                               "model.gate=none"])
    with pytest.raises(ConfigError, match="model.gate=none is not supported by monai_attention_unet"):
        check_model_config(cfg)


def test_bad_model_params_are_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from seg.config import load_config
    from seg.models import create_model

    with pytest.raises(ConfigError, match="bad model.params"):
        create_model(load_config(DEMO3D, ["model.params.chanels=[4,8]"]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1", "gpu", "GPU:0"])
def test_cuda_without_cuda_falls_back_to_cpu(name: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="seg"):
        assert resolve_device(name) == torch.device("cpu")
    assert "CUDA is not available" in caplog.text


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "cpu:1", ""])
def test_unknown_device_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device(name)
    run = tmp_path / "no_run"
    run.mkdir()
    assert main(["predict", "--model", str(run), "-i", str(tmp_path), "-o", str(tmp_path / "out"),
                 "--device", name]) == 2
    one_line(capsys, "seg predict: error:", "unknown device")


def test_missing_checkpoint_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "b")]) == 2
    one_line(capsys, "seg export: error:", "nope.pt", "checkpoint not found")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["predict", "--model", str(tmp_path / "junk.pt"), "-i", str(tmp_path), "-o",
                 str(tmp_path / "o")]) == 2
    one_line(capsys, "seg predict: error:", "junk.pt", "not a readable seg checkpoint")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        main(["--debug", "train", str(tmp_path / "missing.yaml")])


def test_unknown_option_beside_overrides_names_only_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    from seg.cli import parse

    with pytest.raises(SystemExit) as exit_info:
        parse(["auto", "DATA", "-o", "OUT", "--no-such-flag", "seed=1", "train.epochs=2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --no-such-flag" in err and "seed=1" not in err
    assert parse(["auto", "DATA", "-o", "OUT", "seed=1"]).overrides == ["seed=1"]


def test_missing_input_is_reported_before_the_model_is_loaded(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A typo in -i costs nothing: the input is checked before the (here unreadable) model is opened."""
    model = tmp_path / "model.pt"
    model.write_bytes(b"not a checkpoint")
    missing = tmp_path / "scans"
    assert main(["predict", "--model", str(model), "-i", str(missing), "-o", str(tmp_path / "out")]) == 2
    one_line(capsys, f"input not found: {missing}")
    assert not (tmp_path / "out").exists()
