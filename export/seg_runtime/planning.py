"""Which cases a run predicts: discovery, this shard's share, and the outputs already done.

The driver of every runner plans the same way, so a rerun skips exactly what a run of any engine
finished: a case whose output file this tool finished (the record's size and checksum match the
file) is recorded as skipped; every other case is returned to do.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from .bundle import Bundle
from .cases import Case, NoCasesError, apply_output_format, discover_cases
from .formats import IMAGE_SUFFIXES
from .manifest import MANIFEST_NAME, RunManifest
from .records import CaseState, latest_states, verify_output
from .statistics import statistics_path

logger = logging.getLogger(__name__)

T = TypeVar("T")


def select_shard(items: Sequence[T], shard: tuple[int, int] | None) -> list[T]:
    """Items at sorted positions ``p`` with ``p % n == i`` for ``shard = (i, n)``.

    The ``n`` shards partition ``items`` exactly; ``None`` keeps everything.
    """
    if shard is None:
        return list(items)
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard}")
    return [item for position, item in enumerate(items) if position % count == index]


def manifest_name(shard: tuple[int, int] | None) -> str:
    """``predictions.json``, or one file per shard so parallel shards never overwrite each other."""
    return MANIFEST_NAME if shard is None else f"predictions.shard-{shard[0]}-of-{shard[1]}.json"


def plan_cases(
    input_path: str | os.PathLike[str],
    output: Path,
    bundle: Bundle,
    manifest: RunManifest,
    *,
    shard: tuple[int, int] | None = None,
    overwrite: bool = False,
    output_format: str = "auto",
    statistics: bool = False,
) -> list[tuple[Case, Path]]:
    """Discover the cases, keep this shard's, and record those that need no prediction.

    Discovery problems are recorded as failed; a case whose output file this tool finished is
    recorded as skipped (with ``statistics``: only when its statistics file exists too). Everything
    else — no output, an output without a record, a truncated or altered one — is returned to do.

    Returns:
        ``(case, label file)`` pairs to predict, in sorted case order.

    Raises:
        NoCasesError: nothing under ``input_path`` looks like a case.
    """
    cases, problems = discover_cases(
        input_path,
        spatial_dims=bundle.spatial_dims,
        in_channels=bundle.in_channels,
        channel_files=bundle.channel_files,
        exclude=[output],
    )
    if not cases and not problems:
        raise NoCasesError(
            f"{input_path}: no cases found (expected image files {', '.join(IMAGE_SUFFIXES)}, "
            "nnU-Net channel files, case folders or DICOM series folders)"
        )
    apply_output_format(cases, output_format, bundle.spatial_dims)
    _record_problems(manifest, select_shard(problems, shard), Path(input_path))
    done = {} if overwrite else latest_states(output)
    return _plan(manifest, select_shard(cases, shard), output, overwrite, done, statistics)


def _record_problems(manifest: RunManifest, problems: list[tuple[str, str]], input_path: Path) -> None:
    """Record discovery problems as failed cases."""
    for name, problem in problems:
        logger.error("%s: %s", name, problem)
        where = input_path / name
        manifest.add(name, inputs=[where if where.exists() else input_path], status="failed", error=problem)


def _plan(
    manifest: RunManifest, cases: list[Case], output: Path, overwrite: bool, done: dict[str, CaseState],
    statistics: bool = False,
) -> list[tuple[Case, Path]]:
    """Pair each case with its label file; record the ones that need no prediction."""
    todo: list[tuple[Case, Path]] = []
    for case in cases:
        target = output / f"{case.id}{case.output_ext}"
        if target.resolve() in {p.resolve() for p in case.paths}:
            error = f"{target}: output would overwrite the input; choose another output folder"
            manifest.add(case.id, inputs=case.paths, status="failed", error=error)
            continue
        if target.exists() and not overwrite:
            state = done.get(case.id)
            distrust = verify_output(state.record if state else None, target)
            if distrust is None and statistics and not statistics_path(output, case.id).is_file():
                distrust = "it has no statistics yet"
            if distrust is None:
                manifest.add(case.id, inputs=case.paths, status="skipped", output=target, write=False)
                continue
            logger.warning("case %s: existing %s is not trusted (%s); predicting it again",
                           case.id, target.name, distrust)
        todo.append((case, target))
    return todo
