"""The run folder holds what the README says it holds; train.log says whether TensorBoard events were written."""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from pathlib import Path

import pytest

from seg.engine.run_folder import RunFolder

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_run_folder_files() -> list[str]:
    """The files and folders (backticked names with a dot or a trailing slash) of README's run-folder sentence."""
    text = " ".join(README.read_text().split())
    match = re.search(r"The run folder \(`output_dir/name`\) holds (.+?)\. Ctrl-C", text)
    assert match, "README.md no longer describes the run folder in the sentence this test reads"
    names = re.findall(r"`([^`\s]+)`", match.group(1))
    return [n for n in names if ("." in n or n.endswith("/")) and not n.startswith("[")]


def assert_run_folder_matches_readme(run: Path) -> None:
    """Every file README's run-folder sentence names is in ``run``; ``tb/`` exactly when tensorboard is installed.

    ``test_fit.test_tiny_run_writes_run_folder`` calls it on its tiny real run (the seg logger at INFO).
    """
    names = readme_run_folder_files()
    assert {"config.yaml", "last.pt", "best.pt", "metrics.jsonl", "curves.png", "train.log", "tb/"} <= set(names)
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    for name in names:
        if name == "tb/" and not tensorboard:
            assert not (run / "tb").exists()
            continue
        assert (run / name).exists(), f"README names {name} in the run folder, the run has not written it"
    log = (run / "train.log").read_text()
    if tensorboard:  # the [dev] extra installs it, so CI takes this branch
        assert f"TensorBoard events: {run / 'tb'}" in log
        events = list((run / "tb").glob("events.out.tfevents.*"))
        assert events and events[0].stat().st_size > 0
    else:
        assert "TensorBoard events: not written (tensorboard is not installed: pip install tensorboard" in log


def test_train_log_says_why_without_tensorboard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="seg")
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    folder = RunFolder(tmp_path / "run")
    folder.start_logging()
    folder.log_epoch({"epoch": 1, "train_loss": 0.5})
    folder.stop_logging()
    log = (tmp_path / "run" / "train.log").read_text()
    assert "TensorBoard events: not written (tensorboard is not installed: pip install tensorboard, or the [dev] extra)" in log
    assert not (tmp_path / "run" / "tb").exists()
    assert "tensorboard is not installed" in caplog.text  # the console shows it too
    assert (tmp_path / "run" / "metrics.jsonl").is_file()
