"""Config loading: base inheritance, overrides, validation errors that name key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from seg.cli import main
from seg.config import ConfigError, load_config, save_config

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_base_merge_and_relative_paths(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "data: {root: data, spatial_dims: 2}\ntrain: {lr: 0.1, epochs: 5, patch_size: [32, 32]}\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    cfg_path = write(sub / "child.yaml", "base: ../base.yaml\nname: child\ntrain: {epochs: 7}\n")
    cfg = load_config(cfg_path)
    assert cfg.name == "child"
    assert cfg.train.epochs == 7 and cfg.train.lr == 0.1  # child wins key by key, the rest inherited
    assert cfg.data.root == (tmp_path / "data").resolve()  # relative to the file that names it


def test_output_and_cache_dirs_are_relative_to_their_file_and_overrides_to_the_shell(tmp_path: Path,
                                                                                      monkeypatch) -> None:
    write(tmp_path / "base.yaml", "output_dir: ../runs\ndata: {root: data, cache_dir: cache}\n")
    sub = tmp_path / "a" / "sub"
    sub.mkdir(parents=True)
    write(sub / "child.yaml", "base: ../../base.yaml\nname: child\n")
    write(sub / "own.yaml", "output_dir: out\n")
    shell = tmp_path / "shell"
    shell.mkdir()
    monkeypatch.chdir(shell)  # where the command runs changes none of the file's paths
    cfg = load_config(sub / "child.yaml")
    assert cfg.output_dir == (tmp_path.parent / "runs").resolve()  # the base's ../runs, from the base's folder
    assert cfg.data.cache_dir == (tmp_path / "cache").resolve()
    assert load_config(sub / "own.yaml").output_dir == (sub / "out").resolve()
    cfg = load_config(sub / "own.yaml", ["output_dir=mine", "data.cache_dir=c2"])
    assert cfg.output_dir == shell / "mine" and cfg.data.cache_dir == shell / "c2"
    assert load_config(write(sub / "bare.yaml", "name: x\n")).output_dir == Path("runs")  # the working directory's


def test_dotted_overrides_are_typed(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "train: {epochs: 3}\n")
    cfg = load_config(path, ["train.epochs=9", "train.lr=1e-4", "model.size=base", "train.patch_size=[16,16,16]"])
    assert cfg.train.epochs == 9 and cfg.train.lr == pytest.approx(1e-4)
    assert cfg.model.size == "base" and cfg.train.patch_size == [16, 16, 16]


@pytest.mark.parametrize(
    ("text", "overrides", "needle"),
    [
        ("train: {epochz: 3}\n", [], "train.epochz: unknown key"),
        ("train: {epochs: many}\n", [], "train.epochs"),
        ("{}\n", ["model.size=huge"], "model.size"),
        ("data: {spatial_dims: 2}\n", [], "train.patch_size has 3 entries"),
        ("data: {labels: {bg: 0, a: 2}}\n", [], "0..K-1"),
        ("infer: {keep_largest: [tumor]}\n", [], "infer.keep_largest: 'tumor' is not a foreground class"),
        ("infer: {remove_small: {tumor: 10}}\n", [], "infer.remove_small: 'tumor' is not a foreground class"),
        ("infer: {remove_small: {foreground: -1}}\n", [], "infer.remove_small: minimum volumes must be >= 0"),
        ("data: {num_workers: -2}\n", [], "data.num_workers"),
        ("data: {regions: {}}\n", ["model.outputs=regions"], "model.outputs: regions: region outputs need"),
        ("- a list\n", [], "top level must be a mapping"),
        ("train: {epochs: [\n", [], "not valid YAML"),
    ],
)
def test_bad_configs_name_key_and_file(tmp_path: Path, text: str, overrides: list[str], needle: str) -> None:
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    assert needle in str(err.value)
    assert str(path) in str(err.value)


def test_missing_file_and_bad_override(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    path = write(tmp_path / "c.yaml", "{}\n")
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(path, ["train.epochs"])


def test_circular_base(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yaml")


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs" / "demo3d.yaml", ["train.epochs=2"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again.to_dict() == cfg.to_dict()
    assert again.digest() == cfg.digest()


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_shipped_configs_validate(name: str) -> None:
    load_config(REPO / "configs" / name)


def test_cli_reports_bad_config_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "bad.yaml", "train: {epochz: 3}\n")
    code = main(["train", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "train.epochz: unknown key" in err and "Traceback" not in err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_cli_help_describes_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("train", "predict", "evaluate", "export", "demo", "plan"):
        with pytest.raises(SystemExit) as exit_info:
            main([cmd, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert "usage: seg " + cmd in out
