"""tools/extras_sizes.py: the base install and each extra, measured on this environment's distributions."""

from __future__ import annotations

from pathlib import Path

from tests.tools.helpers import load_tool


def test_sizes_of_base_and_extras(tmp_path: Path) -> None:
    tool = load_tool("extras_sizes")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["numpy"]\n'
                         '[project.optional-dependencies]\nmore = ["numpy", "pyyaml"]\nnone = ["not-a-package-here"]\n')
    rows = {row["install"]: row for row in tool.measure(pyproject)["rows"]}
    dists = tool.installed()
    numpy, pyyaml = (tool.dist_bytes(dists[name]) for name in ("numpy", "pyyaml"))
    assert rows["base"]["packages"] == 1 and rows["base"]["mb"] == numpy / 1e6 > 1
    assert rows["[more]"]["packages"] == 1 and rows["[more]"]["mb"] == pyyaml / 1e6  # numpy counted once, in base
    assert tool.measure(pyproject)["missing"]["[none]"] == ["not-a-package-here"]
