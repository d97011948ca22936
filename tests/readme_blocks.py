"""The README's fenced code blocks: which CI runs (info string ``bash ci``) and why the others are left out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"

# Every untagged ```bash block, by a piece of its first line, and why CI does not run it as written. A new
# untagged block must be added here with its reason (tests/test_readme_claims.py checks it), or tagged.
UNTAGGED = {
    'pip install -e . && seg demo': "the install line itself (CI installs [dev]; the demo runs tagged below it)",
    'pip install -e ".[dev]" && pytest': "the test line itself (.ci/run runs it)",
    "python3 -m venv .venv && . .venv/bin/activate": "install: PyTorch's CPU index, unreachable here",
    "python3 -m venv /opt/seg-run": "install: the deploy venv (.ci/run installs ./export[serve] in its own venv)",
    'pip install -e ".[ray]"': "cluster: Ray on several nodes (local Ray: tests/runtime/test_runtime_ray.py)",
    'pip install -e ".[dicom]"': "PACS: Orthanc and the DICOM node (tests/runtime/test_runtime_orthanc.py)",
    'pip install "./export[serve]"': "a server in the foreground (tests/runtime/test_serve_process.py)",
    "TOKEN=$(cat ~/.seg-token)": "HTTP client of a running server (tests/runtime/test_serve_process.py)",
    "seg-run serve bundles/ct --engine ray": "cluster: Ray Serve on several nodes, TLS (test_serve_process.py)",
    'pip install -e ".[nnunet]"': "needs an nnU-Net result folder (tests/nnunet, integration tier)",
}


@dataclass
class Block:
    """One fenced block: its info string words, the README line of its first content line, its text."""

    info: list[str]
    line: int
    text: str

    @property
    def tagged(self) -> bool:
        return self.info[:1] == ["bash"] and "ci" in self.info[1:]


def blocks(readme: Path = README) -> list[Block]:
    found, current = [], None
    for number, line in enumerate(readme.read_text().splitlines(), start=1):
        fence = re.match(r"^```(.*)$", line)
        if fence and current is None:
            current = Block(fence.group(1).split(), number + 1, "")
        elif fence:
            found.append(current)
            current = None
        elif current is not None:
            current.text += line + "\n"
    return found


def untagged_reason(block: Block) -> str | None:
    first = block.text.strip().splitlines()[0] if block.text.strip() else ""
    return next((why for key, why in UNTAGGED.items() if key in first), None)
