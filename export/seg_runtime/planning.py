"""Which cases a run predicts: discovery, this shard's share, and the outputs already done.

The driver of every runner plans the same way, so a rerun skips exactly what a run of any engine
finished: a case whose output file this tool finished (the record's size and checksum match the
file) is recorded as skipped; every other case is returned to do.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .bundle import Bundle
from .cases import Case, NoCasesError, apply_output_format, discover_cases
from .extra_files import describe, extra_path, missing_extras, requested_extras
from .formats import IMAGE_SUFFIXES
from .identity import input_identity
from .manifest import MANIFEST_NAME, RunManifest
from .records import CaseState, Expected, latest_states, verify_output

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


@dataclass
class Plan:
    """What a run does: the cases to predict, and finished ones that only lack extras.

    Attributes:
        todo: ``(case, label file)`` pairs to predict, in sorted case order.
        complete: ``(case, label file, extras)`` of finished cases whose label map the record proves
            current but that lack extras a label map is enough for (:func:`seg_runtime.stages.complete_case`).
    """

    todo: list[tuple[Case, Path]] = field(default_factory=list)
    complete: list[tuple[Case, Path, list[str]]] = field(default_factory=list)


def plan_cases(
    input_path: str | os.PathLike[str],
    output: Path,
    bundle: Bundle,
    manifest: RunManifest,
    *,
    shard: tuple[int, int] | None = None,
    overwrite: bool = False,
    output_format: str = "auto",
    made_by: tuple[str, dict] = ("", {}),
    extras: Any = None,
) -> Plan:
    """Discover the cases, keep this shard's, and record those that need no prediction.

    Discovery problems are recorded as failed; a case whose output file this tool finished from the
    same input (:func:`input_identity`, set on each case), with the same model and settings
    (``made_by``: the model's digest and the settings that change the output) is kept: recorded as
    skipped when it has every extra ``extras`` asks for (an options object, see
    :func:`seg_runtime.extra_files.requested_extras`), planned for completion when it lacks extras its
    label map is enough for, predicted again when it lacks its probabilities. Everything else — no
    output, an output without a record, one made from another input, model or settings, a truncated
    or altered one — is predicted.

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
    plan = Plan()
    for case in select_shard(cases, shard):
        _plan_case(plan, case, manifest, output, overwrite, done, made_by, extras, bundle.spatial_dims)
    return plan


def _record_problems(manifest: RunManifest, problems: list[tuple[str, str]], input_path: Path) -> None:
    """Record discovery problems as failed cases."""
    for name, problem in problems:
        logger.error("%s: %s", name, problem)
        where = input_path / name
        manifest.add(name, inputs=[where if where.exists() else input_path], status="failed", error=problem)


def _plan_case(plan: Plan, case: Case, manifest: RunManifest, output: Path, overwrite: bool,
               done: dict[str, CaseState], made_by: tuple[str, dict], extras: Any, spatial_dims: int) -> None:
    """Pair a case with its label file; record it when it needs nothing, or plan what it needs."""
    target = output / f"{case.id}{case.output_ext}"
    if target.resolve() in {p.resolve() for p in case.paths}:
        error = f"{target}: output would overwrite the input; choose another output folder"
        manifest.add(case.id, inputs=case.paths, status="failed", error=error)
        return
    try:
        case.identity = input_identity(case.paths)
    except OSError as exc:  # unreadable now: the read stage says why, in the case's record
        case.identity = f"unreadable: {exc.strerror or exc}"
    if target.exists() and not overwrite:
        state = done.get(case.id)
        record = state.record if state else None
        distrust = verify_output(record, target, Expected(case.identity, *made_by))
        wanted = {name: extra_path(name, output, case.id, spatial_dims)
                  for name in requested_extras(extras, case.kind)}
        missing = missing_extras(record, wanted) if distrust is None else []
        if "save_probabilities" in missing:
            distrust = "its probabilities were not saved, and only the network gives them"
        elif missing:
            logger.info("case %s: %s kept; adding %s", case.id, target.name, describe(missing))
            plan.complete.append((case, target, missing))
            return
        if distrust is None:
            manifest.add(case.id, inputs=case.paths, status="skipped", output=target, write=False)
            return
        logger.warning("case %s: existing %s is not trusted (%s); predicting it again",
                       case.id, target.name, distrust)
    plan.todo.append((case, target))
