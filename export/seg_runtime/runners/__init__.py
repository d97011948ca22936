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
