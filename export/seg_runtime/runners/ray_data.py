"""The Ray Data runner: folder -> folder prediction for archives larger than one machine.

:func:`seg_runtime.predict.predict_folder` with ``runner=RayRunner(...)``: the driver discovers the
cases and decides what is done exactly as for the local runner, then streams the rest through three
Ray Data stages:

1. read + preprocess (Ray tasks, ``num_cpus=1`` each);
2. the network (an actor pool: each actor builds its model once — one onnxruntime session, or
   one torch model for ``seg predict`` — and may hold a fraction of a GPU);
3. inverse geometry, post-processing and the atomic writes (Ray tasks).

Every stage catches a case's exception and passes it on as that case's error, so one bad case
never stops the job, and the driver appends each outcome to the same per-case record as the
local runner. The stage functions are the local runner's own (:mod:`seg_runtime.stages`), so
outputs are voxel-identical. Workers on other nodes must see the input and
output paths (a shared file system) and have ``seg_runtime`` installed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import pickle
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends import Backend
from ..cases import Case
from ..errors import SegError
from ..extra_files import extras_record
from ..identity import output_fields
from ..manifest import RunManifest
from ..stages import CasePipeline, error_message, finish_case, infer_case, load_case
from . import show_case

logger = logging.getLogger(__name__)

BackendRecipe = Callable[[], Backend]
_ACTOR_RESTARTS = 3
_MAX_BLOCKS = 1024  # input blocks: enough to spread over a cluster, few enough for the driver
_BLOCKS_PER_CPU = 4
_ROWS_PER_BLOCK = 64  # tiny cases: a task per case would cost more than the case


class RayUnavailable(SegError):
    """``--engine ray`` without Ray installed, or no cluster at the given address."""


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray job runs.

    Attributes:
        address: ``None`` starts a local Ray instance; ``auto`` joins the cluster this machine
            belongs to; ``ray://host:10001`` connects a client to a remote head.
        num_workers: Model actors (each loads the model once).
        gpus_per_worker: GPUs per actor; fractions share a GPU (0.25: four actors per GPU).
        cpus_per_worker: CPUs reserved per actor (onnxruntime's intra-op threads on CPU).
    """

    address: str | None = None
    num_workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0

    @property
    def cpus_needed(self) -> float:
        """CPUs the job needs: the actors' plus one for the read/write tasks."""
        return self.num_workers * self.cpus_per_worker + 1


def require_ray() -> Any:
    """Import Ray (and Ray Data), or fail in one line naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RayUnavailable(
            f"--engine ray needs Ray Data ({exc.name or exc}): pip install \"seg-runtime[ray]\" "
            "(or \"seg[ray]\")"
        ) from None
    return ray


def connect(options: RayOptions) -> Any:
    """Join (or start) the Ray instance named by ``options.address``; returns the ray module."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                              "log_to_driver": False, "ignore_reinit_error": True}
    if options.address is None:
        # A local instance: reserve CPUs for the actors plus at least one for the read/write tasks.
        kwargs["num_cpus"] = max(os.cpu_count() or 1, math.ceil(options.cpus_needed))
    else:
        kwargs["address"] = options.address
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayUnavailable(f"cannot reach the Ray cluster at {options.address!r}: {exc}") from None
    return ray


def check_resources(ray: Any, options: RayOptions) -> None:
    """Fail in one line when the actor pool could never start, or would starve the tasks.

    Ray would otherwise wait forever: actors holding every CPU leave none for the read and
    write tasks, and GPUs the cluster lacks never appear.
    """
    total = ray.cluster_resources()
    cpus, gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
    want_gpus = options.num_workers * options.gpus_per_worker
    if options.cpus_needed > cpus:
        raise RayUnavailable(
            f"{options.num_workers} worker(s) x {options.cpus_per_worker:g} CPU leave no CPU for the read/write "
            f"tasks on a Ray cluster with {cpus:g} CPUs; use fewer --num-workers or a smaller --cpus-per-worker"
        )
    if want_gpus > gpus:
        raise RayUnavailable(
            f"{options.num_workers} worker(s) x {options.gpus_per_worker:g} GPU need {want_gpus:g} GPUs; "
            f"the Ray cluster has {gpus:g}"
        )


def input_blocks(cases: int, resources: dict[str, float]) -> int:
    """How many blocks the case list is cut into (one read task each).

    Four per CPU keeps every CPU busy and evens out slow cases; beyond that, blocks of
    :data:`_ROWS_PER_BLOCK` cases amortise the per-task overhead. Within a block, Ray Data
    streams its output in bounded blocks, so a block of large volumes does not pile up memory.
    """
    spread = _BLOCKS_PER_CPU * max(int(resources.get("CPU", 1)), 1)
    return max(1, min(cases, _MAX_BLOCKS, max(spread, cases // _ROWS_PER_BLOCK)))


def _case_row(case: Case, target: Path) -> dict[str, Any]:
    return {"id": case.id, "paths": [str(p) for p in case.paths], "kind": case.kind,
            "output_ext": case.output_ext, "target": str(target), "payload": b"", "error": "",
            "seconds": 0.0}


def _case_of(row: dict[str, Any]) -> Case:
    return Case(row["id"], [Path(p) for p in row["paths"]], row["kind"], row["output_ext"])


def _stage(row: dict[str, Any], work: Callable[[Any], Any]) -> dict[str, Any]:
    """Run ``work(previous payload)`` for a case that has not failed; catch its error."""
    if row["error"]:
        return row
    start = time.perf_counter()
    try:
        previous = pickle.loads(row["payload"]) if row["payload"] else None
        row["payload"] = b""
        row["payload"] = pickle.dumps(work(previous), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # isolation: the case fails, the job goes on
        row["payload"], row["error"] = b"", error_message(exc)
    row["seconds"] += time.perf_counter() - start
    return row


def _read_stage(row: dict[str, Any], pipeline: CasePipeline) -> dict[str, Any]:
    return _stage(row, lambda _: load_case(_case_of(row), pipeline))


class _InferStage:
    """The actor: its backend is built once, in ``__init__``, on the actor's own device."""

    def __init__(self, recipe: BackendRecipe, pipeline: CasePipeline) -> None:
        self.pipeline = pipeline
        self.predict_batch = recipe().predict_batch

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        return _stage(row, lambda loaded: (loaded, infer_case(loaded, self.pipeline, self.predict_batch)))


def _write_stage(row: dict[str, Any], pipeline: CasePipeline) -> dict[str, Any]:
    def work(previous: Any) -> dict[str, Any]:
        loaded, scores = previous
        written = finish_case(loaded, scores, _case_of(row), Path(row["target"]), pipeline)
        return output_fields(row["target"]), extras_record(written)

    return _stage(row, work)


class RayRunner:
    """Runs the stages on Ray Data: reads and writes as tasks, the backend in a pool of actors.

    Args:
        options: Cluster address and pool size.
        progress: A progress bar over cases on the driver.
    """

    def __init__(self, options: RayOptions | None = None, progress: bool = True) -> None:
        self.options = options or RayOptions()
        self.progress = progress

    def check(self) -> None:
        """Ray Data must import (checked before the model loads, not after the first case)."""
        require_ray()

    def describe(self) -> dict[str, Any]:
        """What the run record says about the engine."""
        return {"engine": "ray", "ray_workers": self.options.num_workers,
                "gpus_per_worker": self.options.gpus_per_worker}

    def run(self, todo: list[tuple[Case, Path]], pipeline: CasePipeline, backend: Backend,
            manifest: RunManifest) -> None:
        """Stream the cases through the three stages; record each outcome as it arrives (driver only)."""
        from tqdm.auto import tqdm

        ray = connect(self.options)
        check_resources(ray, self.options)
        _quiet(ray)
        recipe = backend.recipe(cpus=self.options.cpus_per_worker, gpus=self.options.gpus_per_worker)
        pipeline = dataclasses.replace(pipeline, progress=False)
        rows = [_case_row(case, target) for case, target in todo]
        cases = {case.id: case for case, _ in todo}
        with warnings.catch_warnings():
            # max_restarts has no named parameter in Ray Data's map(); its generic form warns.
            warnings.simplefilter("ignore", DeprecationWarning)
            dataset = _pipeline(ray, rows, pipeline, recipe, self.options)
        with tqdm(total=len(rows), desc="cases", unit="case", disable=not self.progress) as bar:
            for row in dataset.iter_rows():
                show_case(_record(manifest, row, cases[row["id"]]), self.progress)
                bar.update(1)


def _quiet(ray: Any) -> None:
    """No Ray Data progress bars or banners: the driver shows its own progress."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.execution_options.verbose_progress = False


def _pipeline(ray: Any, rows: list[dict[str, Any]], pipeline: CasePipeline, recipe: BackendRecipe,
              options: RayOptions) -> Any:
    """read (tasks) -> network (actor pool) -> restore and write (tasks)."""
    return (
        ray.data.from_items(rows, override_num_blocks=input_blocks(len(rows), ray.cluster_resources()))
        .map(_read_stage, fn_kwargs={"pipeline": pipeline})
        .map(_InferStage, fn_constructor_kwargs={"recipe": recipe, "pipeline": pipeline},
             compute=ray.data.ActorPoolStrategy(size=options.num_workers),
             num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker or None,
             # An actor that dies (a segfault, the OOM killer) is restarted; this also keeps Ray
             # from fusing the read tasks into the actor, which would idle the model while reading.
             max_restarts=_ACTOR_RESTARTS)
        .map(_write_stage, fn_kwargs={"pipeline": pipeline})
        .select_columns(["id", "target", "payload", "error", "seconds"])
    )


def _record(manifest: RunManifest, row: dict[str, Any], case: Case) -> dict[str, Any]:
    if row["error"]:
        logger.error("case %s failed: %s", row["id"], row["error"])
        return manifest.add(row["id"], inputs=case.paths, status="failed", error=row["error"],
                            seconds=row["seconds"], identity=case.identity)
    check, extras = pickle.loads(row["payload"])
    logger.info("case %s: ok in %.2fs -> %s", row["id"], row["seconds"], row["target"])
    return manifest.add(row["id"], inputs=case.paths, status="ok", output=row["target"], seconds=row["seconds"],
                        check=check, identity=case.identity, extra={"extras": extras} if extras else None)
