"""Assembling a DICOM node from its options: the store, the record, one backend per bundle, the worker."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..backends import Backend
from ..dicom_seg import require_highdicom, warn_uncoded_labels
from ..manifest import RunManifest
from ..options import PredictOptions
from ..stages import CasePipeline
from ..store import Store
from .delivery import CStoreDestination, Destination, StowDestination, authorization
from .node import DicomNode, NodeSettings
from .peers import NodeError, Peer, Route
from .worker import SeriesWorker

logger = logging.getLogger(__name__)

RECORD_NAME = "predictions.json"  # the summary; the record is predictions.jsonl beside it


@dataclass
class NodeOptions:
    """Everything ``seg-run listen`` and ``seg-run pull`` configure.

    Attributes:
        bundle: The default bundle (series no route matches); None: unrouted series fail.
        routes: Filtered routes, tried in order before the default.
        store: The store folder (pending series, results, ``predictions.jsonl``).
        settings: AE title, address, series timeout, allowlist.
        send_to: C-STORE destinations.
        stow: A STOW-RS destination (DICOMweb root URL).
        stow_credentials: A file holding ``user:password`` or a bearer token for ``stow``.
        quota_gb, keep_hours: The store's quota and how long finished entries are kept.
        retries, retry_delay_s: Delivery retries and the first backoff (doubling).
        predict: The prediction options (DICOM-SEG and RTSTRUCT on; ``--statistics``, ``--max-memory``...).
        provider, threads: onnxruntime's execution provider and CPU threads.
    """

    bundle: Path | None
    store: Path
    routes: list[Route] = field(default_factory=list)
    settings: NodeSettings = field(default_factory=NodeSettings)
    send_to: list[Peer] = field(default_factory=list)
    stow: str | None = None
    stow_credentials: Path | None = None
    quota_gb: float | None = None
    keep_hours: float | None = 72.0
    retries: int = 3
    retry_delay_s: float = 2.0
    predict: PredictOptions = field(default_factory=lambda: PredictOptions(dicom_seg=True, rtstruct=True,
                                                                            progress=False))
    provider: str = "auto"
    threads: int | None = None


def destinations(options: NodeOptions) -> list[Destination]:
    """The C-STORE and STOW-RS destinations the options name."""
    found: list[Destination] = [CStoreDestination(peer, options.settings.ae_title) for peer in options.send_to]
    if options.stow:
        found.append(StowDestination(options.stow, authorization(options.stow_credentials)))
    elif options.stow_credentials:
        raise NodeError("--stow-credentials without --stow URL")
    return found


def all_routes(options: NodeOptions) -> list[Route]:
    """The filtered routes, then the default bundle for everything else."""
    routes = list(options.routes) + ([Route((), options.bundle)] if options.bundle is not None else [])
    if not routes:
        raise NodeError("a BUNDLE_DIR or at least one --route is required")
    return routes


def load_pipelines(routes: list[Route], options: NodeOptions,
                   backends: dict[Path, Backend] | None = None) -> dict[Path, tuple[Backend, CasePipeline]]:
    """One backend per bundle folder, loaded once (``backends`` may hand in ready ones), and its pipeline."""
    from ..session import OnnxBackend

    loaded = dict(backends or {})
    pipelines = {}
    for bundle in dict.fromkeys(route.bundle for route in routes):
        backend = loaded.get(bundle) or OnnxBackend(bundle, provider=options.provider, threads=options.threads)
        if options.predict.dicom_seg:
            warn_uncoded_labels(backend.bundle)
        if backend.bundle.spatial_dims != 3:
            raise NodeError(f"{bundle}: a DICOM node needs a 3D model (this one is {backend.bundle.spatial_dims}D)")
        pipelines[bundle] = (backend, CasePipeline.resolve(backend.bundle, options.predict, backend.default_batch_size))
    return pipelines


def build_node(options: NodeOptions, backends: dict[Path, Backend] | None = None) -> DicomNode:
    """A ready (not yet started) node: the store, its record, the loaded bundles, the worker.

    Raises:
        NodeError: pynetdicom missing, no bundle or route, a 2D bundle, credentials without a URL.
        DicomSegUnavailable: highdicom is missing (DICOM-SEG output).
        BundleError: A bundle that does not load.
    """
    try:
        import pynetdicom  # noqa: F401
    except ImportError:
        raise NodeError('the DICOM node needs pynetdicom: pip install "seg-runtime[dicom]" (or "seg[dicom]")') from None
    if options.predict.dicom_seg:
        require_highdicom()
    routes = all_routes(options)
    targets = destinations(options)
    pipelines = load_pipelines(routes, options, backends)
    quota = None if options.quota_gb is None else int(options.quota_gb * 2**30)
    store = Store(options.store, quota_bytes=quota, keep_hours=options.keep_hours)
    manifest = RunManifest(store.root / RECORD_NAME, tool="seg-run listen", model={
        "bundles": {str(path): backend.describe() for path, (backend, _) in pipelines.items()},
        "routes": [f"{route.describe()}:{route.bundle}" for route in routes],
        "destinations": [str(target) for target in targets]})
    worker = SeriesWorker(store, manifest, routes, pipelines, targets, options.retries, options.retry_delay_s)
    return DicomNode(store, manifest, worker, options.settings)
