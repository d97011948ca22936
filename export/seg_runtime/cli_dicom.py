"""``seg-run listen`` and ``seg-run pull``: the DICOM node's command lines (see :mod:`seg_runtime.dicom_node`)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

from .cli_options import number_type, parse_positive
from .limits import parse_memory_gb
from .options import PredictOptions
from .session import PROVIDERS

logger = logging.getLogger(__name__)

_LISTEN = """\
Listen for DICOM series (a storage SCP), segment every complete series with the per-case pipeline of
seg-run predict, and send DICOM-SEG and RTSTRUCT to --send-to / --stow. A series is complete when no
instance arrived for --series-timeout seconds. Every received and sent object and every case is
recorded in STORE/predictions.jsonl; received data stays in STORE until the results are
acknowledged (or the entry expires after --keep hours)."""
_LISTEN_EPILOG = """\
examples:
  seg-run listen bundles/brain --store /var/lib/seg --ae-title SEG --port 11112 --send-to ORTHANC@127.0.0.1:4242
  seg-run listen --route "Modality=MR:bundles/brain" --route "Modality=CT:bundles/ct" --store /var/lib/seg \\
      --stow http://127.0.0.1:8042/dicom-web --stow-credentials ~/.seg/orthanc --allow-ae ORTHANC
"""
_PULL = """\
Retrieve a study (or one series) from a PACS (C-GET, or C-MOVE to this AE title), segment its series
like seg-run listen, and send the results on."""


_positive = number_type(0, strict=True)
_count = number_type(0, integer=True)


def add_node_options(parser: argparse.ArgumentParser, *, port: int = 11112) -> None:
    """The options ``listen`` and ``pull`` share: bundles, store, the node's AE, destinations, the model run."""
    add = parser.add_argument
    add("bundle", type=Path, nargs="?", metavar="BUNDLE_DIR", help="the model for series no --route matches")
    add("--store", type=Path, required=True, help="folder of the store: pending series, results, the run record")
    add("--route", action="append", default=[], metavar="FILTER:BUNDLE_DIR",
        help="series whose header matches go to this bundle, e.g. Modality=MR:brain or "
        "Modality=CT,SeriesDescription=*abdomen*:ct (shell patterns, case-insensitive; first match wins)")
    add("--ae-title", default="SEG", help="this node's AE title (default SEG)")
    add("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, default=port, help=f"port to listen on (default {port}; 0: any free port)")
    add("--send-to", action="append", default=[], metavar="AE@HOST:PORT", help="C-STORE the results to this AE")
    add("--stow", metavar="URL", help="STOW-RS the results to this DICOMweb root, e.g. http://pacs:8042/dicom-web")
    add("--stow-credentials", type=Path, metavar="FILE",
        help="a file holding user:password (HTTP Basic) or a bearer token for --stow")
    add("--allow-ae", action="append", default=[], metavar="TITLE",
        help="accept associations only from these calling AE titles (default: any)")
    add("--allow-from", action="append", default=[], metavar="CIDR",
        help="accept associations only from these networks (default: loopback only)")
    add("--series-timeout", type=_positive, default=30.0, metavar="S",
        help="a series is complete after S seconds without a new instance (default 30)")
    add("--quota", type=parse_memory_gb, metavar="GB", help="most data the store holds (default: no limit)")
    add("--keep", type=_positive, default=72.0, metavar="HOURS", help="finished entries expire after (default 72)")
    add("--retries", type=_count, default=3, help="delivery retries with doubling backoff (default 3)")
    add("--retry-delay", type=_positive, default=2.0, metavar="S", help="first backoff (default 2 s)")
    add("--statistics", action="store_true", help="also write per-structure volumes and intensities per series")
    add("--no-rtstruct", action="store_true", help="write and send DICOM-SEG only")
    add("--tta", action=argparse.BooleanOptionalAction, default=None, help="mirroring TTA (default: the model's)")
    add("--max-memory", type=parse_memory_gb, metavar="GB", help="memory limit per series (see seg-run predict)")
    add("--provider", choices=PROVIDERS, default="auto", help="onnxruntime execution provider")
    add("--threads", type=parse_positive, metavar="N", help="CPU threads")
    add("-v", "--verbose", action="count", default=0, help="-v: per-series log, -vv: debug")


def node_options(args: argparse.Namespace) -> Any:
    """The parsed command line as :class:`~seg_runtime.dicom_node.setup.NodeOptions`."""
    from .dicom_node.node import NodeSettings
    from .dicom_node.peers import Allowlist, parse_peer, parse_route
    from .dicom_node.setup import NodeOptions

    settings = NodeSettings(ae_title=args.ae_title, host=args.host, port=args.port,
                            series_timeout_s=args.series_timeout, allow=Allowlist.parse(args.allow_ae, args.allow_from))
    predict = PredictOptions(tta=args.tta, dicom_seg=True, rtstruct=not args.no_rtstruct, statistics=args.statistics,
                             max_memory_gb=args.max_memory, progress=False)
    return NodeOptions(bundle=args.bundle, store=args.store, routes=[parse_route(r) for r in args.route],
                       settings=settings, send_to=[parse_peer(p) for p in args.send_to], stow=args.stow,
                       stow_credentials=args.stow_credentials, quota_gb=args.quota, keep_hours=args.keep,
                       retries=args.retries, retry_delay_s=args.retry_delay, predict=predict, provider=args.provider,
                       threads=args.threads)


def add_listen(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("listen", help="a DICOM node: receive series, segment them, send the results",
                            description=_LISTEN, epilog=_LISTEN_EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_node_options(parser)
    parser.set_defaults(func=cmd_listen)


def add_pull(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("pull", help="retrieve a study from a PACS (C-GET/C-MOVE) and segment it",
                            description=_PULL)
    parser.add_argument("--from", dest="source", required=True, metavar="AE@HOST:PORT", help="the PACS")
    parser.add_argument("--study", required=True, metavar="UID", help="StudyInstanceUID to retrieve")
    parser.add_argument("--series", metavar="UID", help="only this SeriesInstanceUID")
    parser.add_argument("--method", choices=("get", "move"), default="get",
                        help="get: C-GET on this association (default); move: C-MOVE to --ae-title, received on "
                        "--port (the PACS must know this AE)")
    add_node_options(parser, port=0)
    parser.set_defaults(func=cmd_pull)


def _quiet_libraries(verbose: int) -> None:
    for name in ("pynetdicom", "highdicom"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


def cmd_listen(args: argparse.Namespace) -> int:
    """Run the node until SIGINT/SIGTERM; the series in progress is finished first."""
    from .dicom_node.setup import build_node

    _quiet_libraries(args.verbose)
    node = build_node(node_options(args)).start()
    if not args.allow_from and args.host not in ("127.0.0.1", "::1", "localhost"):
        logger.warning("listening on %s but accepting loopback peers only (add --allow-from CIDR)", args.host)
    print(f"seg-run listen: {args.ae_title} on {args.host}:{node.port}, store {args.store}", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    print("seg-run listen: stopping (finishing the series in progress)", flush=True)
    node.stop()
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    """Retrieve, segment and deliver; exit 1 when the retrieve or a series failed."""
    from .dicom_node.peers import parse_peer
    from .dicom_node.pull import identifier, pull
    from .dicom_node.setup import build_node
    from .summary import run_summary

    _quiet_libraries(args.verbose)
    source = parse_peer(args.source, "--from")
    identifier(args.study, args.series)  # bad UIDs fail before anything is loaded
    start = time.perf_counter()
    node = build_node(node_options(args)).start(listen=args.method == "move")
    try:
        outcome = pull(node, source, args.study, args.series, args.method)
        node.wait_idle(timeout_s=24 * 3600)
    finally:
        node.stop()
    print(f"retrieve  {outcome['status']}: {outcome['completed']} instance(s), {outcome['failed']} failed")
    print(run_summary(node.manifest, args.store, time.perf_counter() - start))
    failed = node.manifest.summary["failed"] or outcome["status"] not in ("0x0000", "0xB000")
    return 1 if failed else 0
