"""Runners: the engines that drive the per-case stages over the planned cases.

A runner takes the planned ``(case, label file)`` pairs, the run's :class:`~seg_runtime.stages.CasePipeline`,
the backend and the run record, and appends each case's outcome to the record as it ends. Runners
import the stages (:mod:`seg_runtime.stages`) and nothing of one another:

- :class:`~seg_runtime.runners.local.LocalRunner`: this process, reading case i+1 while case i runs;
- :class:`~seg_runtime.runners.ray_data.RayRunner`: Ray Data, for archives larger than one machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from ..backends import Backend
from ..cases import Case
from ..manifest import RunManifest
from ..stages import CasePipeline


class Runner(Protocol):
    """Drives the three stages over the cases of one run."""

    def check(self) -> None:
        """Fail in one line, before the model is loaded, where this runner cannot run at all."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the run record says about the engine (empty for this process)."""
        ...

    def run(self, todo: list[tuple[Case, Path]], pipeline: CasePipeline, backend: Backend,
            manifest: RunManifest) -> None:
        """Predict every ``(case, label file)`` pair and record each outcome as it ends."""
        ...


def case_line(entry: dict[str, Any]) -> str:
    """One case's outcome as the line a terminal keeps above the progress bar.

    ``ok      c0042   3.1 s  c0042.nii.gz``; a failed case ends with its one-line error, a completed
    one with the extras it gained.
    """
    status = "added" if entry.get("completed") else str(entry["status"])
    seconds = entry.get("seconds")
    parts = [f"{status:<7} {entry['id']}", f"{seconds:6.1f} s" if seconds is not None else ""]
    if status == "failed":
        parts.append(str(entry.get("error")))
    elif status == "added":
        parts.append(", ".join(name.removeprefix("save_") for name in entry["completed"]))
    elif entry.get("output"):
        parts.append(Path(str(entry["output"])).name)
    return "  ".join(part for part in parts if part)


def show_case(entry: dict[str, Any], enabled: bool) -> None:
    """Print :func:`case_line` above any progress bar (terminals only: ``enabled`` is the progress flag)."""
    if enabled:
        from tqdm.auto import tqdm

        tqdm.write(case_line(entry))
