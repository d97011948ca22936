"""A complete series through the per-case pipeline of ``seg-run``, and its results out to the destinations.

One series at a time (memory stays one case's): the entry is claimed, routed to a bundle by its header,
read, predicted and written by the stages (:func:`~seg_runtime.runners.local.run_case`, the local
runner's step, with the bundle's backend loaded once), recorded in the node's run record, marked
``done`` in the store with its outputs, and delivered. The received instances are dropped only once
every destination took the results; a delivery that still fails after its retries leaves the entry
``failed`` with its data kept.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..backends import Backend
from ..cases import Case
from ..dicom_seg import DICOM_SEG_SUFFIX
from ..manifest import RunManifest
from ..rtstruct import RTSTRUCT_SUFFIX
from ..runners.local import run_case
from ..stages import CasePipeline, load_case
from ..store import DONE, FAILED, Entry, Store
from .delivery import Destination, deliver
from .peers import Route, choose_route

logger = logging.getLogger(__name__)


class SeriesWorker:
    """Predicts and delivers the node's complete series.

    Args:
        store: The store of accepted work.
        manifest: The node's run record.
        routes: Routes in order (the node's default bundle last, without filters).
        pipelines: Per bundle folder, its backend and pipeline (resolved once at start).
        destinations: Where results go (none: they stay in the store).
        retries, delay_s: Delivery retries and the first backoff.
    """

    def __init__(self, store: Store, manifest: RunManifest, routes: Sequence[Route],
                 pipelines: Mapping[Path, tuple[Backend, CasePipeline]], destinations: Sequence[Destination],
                 retries: int = 3, delay_s: float = 2.0) -> None:
        self.store, self.manifest, self.routes, self.pipelines = store, manifest, list(routes), dict(pipelines)
        self.destinations, self.retries, self.delay_s = list(destinations), retries, delay_s

    def process(self, entry_id: str) -> None:
        """Predict one ``accepted`` series (nothing happens when another worker has it); whatever goes
        wrong ends as the entry's recorded failure, never as an entry left running."""
        entry = self.store.claim(entry_id)
        if entry is None:
            return
        case = Case(str(entry.meta["case"]), [entry.input_dir], "dicom", ".nii.gz")
        try:
            self._predict(entry, case)
        except Exception as exc:  # a bug or a full disk: this series' failure, not the node's
            logger.exception("series entry %s", entry.id)
            if self.store.get(entry.id).state not in (DONE, FAILED):
                self._fail(entry, case, f"{type(exc).__name__}: {exc}")

    def _predict(self, entry: Entry, case: Case) -> None:
        self.store.clear_outputs(entry.id)  # a re-run after a restart starts from nothing
        refusal, route = self._refusal(entry)
        if refusal or route is None:
            self._fail(entry, case, refusal or "no route")
            return
        backend, pipeline = self.pipelines[route.bundle]
        target = self.store.output_path(entry.id, f"{case.id}{case.output_ext}")
        extra = {"entry": entry.id, "series": entry.meta.get("SeriesInstanceUID"), "bundle": str(route.bundle)}
        record = run_case(lambda: load_case(case, pipeline), case, target, pipeline, backend, self.manifest,
                          extra=extra)
        if record["status"] != "ok":
            self.store.fail(entry.id, str(record["error"]), record)
            return
        outputs = sorted(str(p.relative_to(entry.output_dir)) for p in entry.output_dir.rglob("*") if p.is_file())
        self.store.finish(entry.id, outputs, record)
        self.store.update(entry.id, meta={"delivery": "pending" if self.destinations else "none"})
        self.deliver(entry.id)

    def _refusal(self, entry: Entry) -> tuple[str | None, Route | None]:
        """Why a series is not predicted (a conflict, an interrupted transfer, no route), and its route."""
        uid, meta = entry.meta.get("SeriesInstanceUID"), entry.meta
        if meta.get("conflict"):
            return f"series {uid}: refused: {meta['conflict']} (data kept in store entry {entry.id})", None
        if meta.get("interrupted"):
            return (f"series {uid}: the peer disconnected mid-series after {meta.get('instances', 0)} "
                    "instance(s); not processed (send the series again)"), None
        if not any(entry.input_dir.iterdir()):
            return f"series {uid}: no images were stored (every instance was skipped or refused)", None
        header = meta.get("header", {})
        route = choose_route(self.routes, header)
        if route is None:
            shown = ", ".join(f"{k}={header.get(k, '')!r}" for k in ("Modality", "SeriesDescription"))
            return f"series {uid}: no route matches ({shown})", None
        return None, route

    def _fail(self, entry: Entry, case: Case, error: str) -> None:
        logger.error("case %s failed: %s", case.id, error)
        record = self.manifest.add(case.id, inputs=case.paths, status="failed", error=error,
                                   extra={"entry": entry.id, "series": entry.meta.get("SeriesInstanceUID")})
        self.store.fail(entry.id, error, record)

    def deliver(self, entry_id: str) -> bool:
        """Send a ``done`` series' DICOM results to every destination; drop its inputs once all took them."""
        entry = self.store.get(entry_id)
        if entry.state != DONE or not self.destinations:
            return entry.state == DONE
        files = sorted(p for p in entry.output_dir.iterdir() if p.name.endswith((DICOM_SEG_SUFFIX, RTSTRUCT_SUFFIX)))
        errors = []
        for destination in self.destinations:
            error, attempts = deliver(destination, files, retries=self.retries, delay_s=self.delay_s)
            for path in files:
                self.manifest.event("sent", entry=entry.id, case=entry.meta.get("case"), object=path.name,
                                    destination=str(destination), status="failed" if error else "ok",
                                    attempts=attempts, error=error)
            if error:
                errors.append(error)
        if errors:
            message = f"delivery failed after {self.retries + 1} attempt(s): {'; '.join(errors)} (received data kept)"
            logger.error("series %s: %s", entry.meta.get("SeriesInstanceUID"), message)
            self.store.update(entry.id, meta={"delivery": "failed"})
            self.store.fail(entry.id, message)
            return False
        self.store.update(entry.id, meta={"delivery": "sent"})
        self.store.drop_inputs(entry.id)
        return True
