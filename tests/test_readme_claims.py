"""README claims checked cheaply: test selections, example overrides that change something, named files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from seg.cli import build_parser as seg_parser
from seg.config import load_config
from seg_runtime.cli import build_parser as runtime_parser

from .readme_blocks import UNTAGGED, blocks, untagged_reason

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# Collects twice in one interpreter (the second collection reuses the imported test modules).
COLLECT = r"""
import json, sys
import pytest

class Ids:
    def __init__(self):
        self.items = []

    def pytest_collection_finish(self, session):
        self.items = [(i.nodeid, sorted(m.name for m in i.iter_markers())) for i in session.items]

result = {}
for label, extra in (("default", []), ("not slow", ["-m", "not slow"])):
    ids = Ids()
    code = pytest.main(["--collect-only", "-qq", "-p", "no:cacheprovider", *extra], plugins=[ids])
    result[label] = {"code": int(code), "items": ids.items}
print(json.dumps(result))
"""


def test_not_slow_is_the_quick_part_of_pytest() -> None:
    """README: ``pytest -m "not slow"`` is the quick part, i.e. the default selection less the slow tests."""
    assert '`pytest -m "not slow"` for the quick part' in " ".join(README.read_text().split())
    run = subprocess.run([sys.executable, "-c", COLLECT], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, timeout=300, check=False)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    default = {nodeid: set(marks) for nodeid, marks in result["default"]["items"]}
    quick = {nodeid: set(marks) for nodeid, marks in result["not slow"]["items"]}
    assert result["default"]["code"] == 0 and result["not slow"]["code"] == 0, run.stderr[-2000:]
    assert quick.keys() < default.keys(), sorted(quick.keys() - default.keys())[:10]
    assert {n for n, marks in default.items() if "slow" not in marks} == quick.keys()
    for selection in (default, quick):  # neither runs the opt-in tiers
        assert not [n for n, marks in selection.items() if marks & {"gpu", "integration"}]


def test_readme_demo_override_changes_the_config() -> None:
    """Each ``seg demo ... KEY=VALUE`` example in the README sets a value other than the demo config's."""
    examples = re.findall(r"seg demo ([^`\n]*)", README.read_text())
    overrides = [token for example in examples for token in example.split()
                 if re.fullmatch(r"[a-z_]+(\.[a-z_]+)*=\S+", token)]
    assert overrides, "README shows no seg demo override"
    default = load_config(REPO / "configs" / "demo3d.yaml")
    for token in overrides:
        changed = load_config(REPO / "configs" / "demo3d.yaml", [token])
        key = token.split("=")[0]
        assert _get(changed, key) != _get(default, key), f"README's `seg demo ... {token}` is the default"


def _get(cfg: object, dotted: str) -> object:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def test_every_readme_block_is_run_by_ci_or_says_why_not() -> None:
    """A ```bash block is tagged ``bash ci`` (tests/test_readme_blocks.py runs it) or listed with its reason."""
    found = blocks()
    assert sum(block.tagged for block in found) >= 6
    unexplained = [f"README.md:{block.line}" for block in found
                   if block.info[:1] == ["bash"] and not block.tagged and untagged_reason(block) is None]
    assert not unexplained, f"untagged ```bash blocks with no reason in tests/readme_blocks.py: {unexplained}"
    used = {key for key in UNTAGGED for block in found if not block.tagged and key in block.text}
    assert used == set(UNTAGGED), f"reasons for blocks the README no longer has: {set(UNTAGGED) - used}"


def _commands(text: str) -> list[list[str]]:
    """``seg ...`` and ``seg-run ...`` command lines of the README: in code blocks and in inline code."""
    lines = [block.text for block in blocks() if block.info[:1] == ["bash"]]
    lines += re.findall(r"`((?:seg|seg-run) [^`]+)`", text)
    commands = []
    for line in "\n".join(lines).replace("\\\n", " ").splitlines():
        words = line.split("#")[0].replace("&", " ").split()
        for i, word in enumerate(words):
            if word.rsplit("/", 1)[-1] in ("seg", "seg-run") and i + 1 < len(words):
                commands.append([word.rsplit("/", 1)[-1], *words[i + 1:]])
    return commands


def test_readme_flags_exist() -> None:
    """Every ``--flag`` a README ``seg``/``seg-run`` command uses is an option of that (sub)command."""
    parsers = {"seg": seg_parser(), "seg-run": runtime_parser()}
    unknown = []
    for tool, sub, *rest in _commands(README.read_text()):
        choices = parsers[tool]._subparsers._group_actions[0].choices
        if not re.fullmatch(r"[\w./$-]+", sub):  # prose such as `seg <command>: error: ...`
            continue
        parser = choices.get(sub) or (choices["predict"] if tool == "seg-run" else None)
        if parser is None:
            unknown.append(f"{tool} {sub}")
            continue
        known = set(parser._option_string_actions)
        unknown += [f"{tool} {sub} {flag}" for flag in rest
                    if flag.startswith("--") and flag.split("=")[0] not in known]
    assert not unknown, sorted(set(unknown))
