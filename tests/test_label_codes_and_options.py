"""Issue 14 items 8 and 9 (seg side): data.label_codes reach model.json; seg predict shares seg-run's options."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from seg.cli import build_parser as seg_parser
from seg.config import ConfigError, config_from_dict
from seg.inference.bundle_meta import bundle_from_config
from seg_runtime.bundle import Bundle, load_bundle, save_bundle_json
from seg_runtime.cli import build_parser as seg_run_parser

from .conftest import tiny_config

_CODES = {
    "category": {"code": "49755003", "meaning": "Morphologically Altered Structure"},
    "type": {"code": "108369006", "scheme": "SCT", "meaning": "Neoplasm"},
    "rgb": [255, 0, 0],
}


def _with_codes(tmp_path: Path, codes: dict) -> dict:
    data = tiny_config(tmp_path, 3).to_dict()
    data["data"]["label_codes"] = codes
    return data


def test_label_codes_go_from_the_config_into_model_json(tmp_path: Path) -> None:
    data = _with_codes(tmp_path, {})
    label = next(name for name, value in data["data"]["labels"].items() if value == 1)
    data["data"]["label_codes"] = {label: _CODES}
    bundle = bundle_from_config(config_from_dict(data))
    assert bundle.label_codes == {label: {**_CODES, "category": {**_CODES["category"], "scheme": "SCT"}}}
    loaded = load_bundle(save_bundle_json(bundle, tmp_path / "b").parent)
    assert loaded.label_codes == bundle.label_codes
    # Bundles written before label_codes existed still load (no codes: the generic fallback).
    old = bundle.to_dict()
    del old["label_codes"]
    assert Bundle.from_dict(old).label_codes == {}


@pytest.mark.parametrize(
    ("codes", "needle"),
    [({"nope": _CODES}, "not a foreground label"), ({"LABEL": {**_CODES, "rgb": [1, 2]}}, "rgb")],
)
def test_bad_label_codes_are_config_errors(tmp_path: Path, codes: dict, needle: str) -> None:
    data = _with_codes(tmp_path, {})
    label = next(name for name, value in data["data"]["labels"].items() if value == 1)
    data["data"]["label_codes"] = {label if k == "LABEL" else k: v for k, v in codes.items()}
    with pytest.raises((ConfigError, ValueError), match=needle):
        config_from_dict(data)


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _predict_parser() -> argparse.ArgumentParser:
    return _subparser(seg_parser(), "predict")


def run_parser() -> argparse.ArgumentParser:
    return _subparser(seg_run_parser(), "predict")


def test_seg_predict_and_seg_run_share_their_options() -> None:
    shared = {"-i", "--input", "-o", "--output", "--tta", "--overwrite", "--shard", "--save-probabilities",
              "--keep-largest", "--batch-size", "--preview", "--dicom-seg", "--threads", "--no-progress",
              "--output-format", "--max-memory"}
    assert shared <= _options(_predict_parser()) and shared <= _options(run_parser())
    for parser in (_predict_parser(), run_parser()):
        assert "exit status: 0 all cases ok" in parser.format_help()
    args = _predict_parser().parse_args(["--model", "m", "-i", "a", "-o", "b", "--output-format", "nrrd",
                                         "--max-memory", "2.5", "--threads", "2", "--no-progress"])
    assert (args.output_format, args.max_memory, args.threads, args.no_progress) == ("nrrd", 2.5, 2, True)


def test_progress_bars_are_off_when_stderr_is_not_a_terminal() -> None:
    import sys

    from seg_runtime.cli_options import show_progress

    assert not sys.stderr.isatty()  # pytest captures stderr
    assert show_progress(argparse.Namespace(no_progress=False)) is False
