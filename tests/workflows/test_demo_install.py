"""The README's demo set-up installs no extra, and ``seg demo`` runs where no extra is installed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import importlib.abc, importlib.machinery, json, sys

BLOCKED = set(json.loads(sys.argv[1]))
attempts = []

class Absent(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    # A spec without origin (what a probe with importlib.util.find_spec sees of it: nothing on disk);
    # importing it fails as an absent module does.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        attempts.append(spec.name)
        raise ModuleNotFoundError(f"No module named {spec.name!r} (blocked: an extra the demo must not need)")

    def exec_module(self, module):
        raise AssertionError("unreachable")

sys.meta_path.insert(0, Absent())
from seg.cli import main

code = main(sys.argv[2:])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"code": code, "attempts": sorted(set(attempts)), "loaded": loaded}))
"""


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]).lower()


def readme_demo_extras() -> set[str]:
    """The extras of the README's set-up command that runs the demo (``pip install -e ".[a,b]" && seg demo``)."""
    match = re.search(r'pip install -e ("?)\.(?:\[([\w,-]+)\])?\1 && seg demo', (REPO / "README.md").read_text())
    assert match, "README.md has no `pip install -e ... && seg demo` set-up command"
    return set(filter(None, (match.group(2) or "").split(",")))


def modules_only_in_extras(extras: set[str]) -> list[str]:
    """Top-level modules of the installed distributions that only extras outside ``extras`` name."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    kept = {_name(r) for r in project["dependencies"]}
    kept |= {_name(r) for extra in extras for r in project["optional-dependencies"][extra]}
    others = {_name(r) for reqs in project["optional-dependencies"].values() for r in reqs} - kept
    return sorted(module for module, dists in metadata.packages_distributions().items()
                  if {_name(d) for d in dists} <= others)


def test_readme_demo_runs_without_the_extras(tmp_path: Path) -> None:
    extras = readme_demo_extras()
    assert "dev" not in extras, "the demo's set-up installs the test suite's [dev] extra"
    blocked = modules_only_in_extras(extras)
    assert {"ray", "fastapi", "nnunetv2", "selenium", "pytest"} <= set(blocked)  # as installed by [dev]
    args = ["demo", "--out", str(tmp_path / "demo"), "train.epochs=1", "train.iters_per_epoch=2",
            "model.params.channels=[4,8,16]", "train.val_cases=1", "train.patch_size=[32,32,32]"]
    result = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(blocked), *args], capture_output=True,
                            text=True, cwd=tmp_path, env={**os.environ, "CI": "true"}, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["code"] == 0 and report["loaded"] == [], report
    assert "mean fg Dice onnxruntime" in result.stdout
    assert (tmp_path / "demo" / "bundle" / "model.onnx").is_file()
