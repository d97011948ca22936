"""``seg-run serve``: its arguments, and the mapping onto :class:`~.settings.ServeSettings`.

Imported by :mod:`seg_runtime.cli` to build the parser; FastAPI, uvicorn and Ray are imported only
when the command runs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..cli_options import parse_positive
from ..limits import MEMORY_ENV, parse_memory_gb
from ..session import PROVIDERS
from .settings import ServeSettings

DESCRIPTION = """\
Serve bundles over HTTP: the models are loaded once and kept warm, every upload runs the per-case
pipeline of seg-run predict (the same label map, voxel for voxel), and a web page at / uploads a scan
and shows the result in three planes. Jobs live in an on-disk store (--store): a server killed and
started again on the same store finishes every job it accepted.
"""

EPILOG = """\
examples:
  seg-run serve bundles/brats --token-file ~/.seg-token                 # http://127.0.0.1:8000/
  seg-run serve bundles/brats bundles/ct --name brain --name ct --workers 2 --max-memory 16
  seg-run serve bundles/brats --no-auth                                 # loopback only, with a warning
  seg-run serve bundles/ct --host 0.0.0.0 --token-file t --ssl-certfile c.pem --ssl-keyfile k.pem
  seg-run serve bundles/ct --engine ray --replicas 4 --address auto --store /shared/seg-jobs --token-file t

  curl -H "Authorization: Bearer $(cat ~/.seg-token)" -F file=@scan.nii.gz \\
       http://127.0.0.1:8000/v1/models/brats/jobs                      # -> 202 {"id": ...}
"""


def _positive_float(text: str) -> float:
    return parse_memory_gb(text)  # a positive finite number; the message says what was given


def add_serve_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``seg-run serve`` to the subcommands."""
    parser = sub.add_parser("serve", help="serve bundles over HTTP (API, web page; Ray Serve to scale out)",
                            description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("bundles", type=Path, nargs="+", metavar="BUNDLE_DIR", help="bundle folders (model.json + model.onnx)")
    add("--name", action="append", default=None, help="the URL name of each bundle, in order (default: folder name)")
    add("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; off loopback TLS is required)")
    add("--port", type=int, default=8000, help="port (default 8000)")
    add("--store", type=Path, default=Path("seg-serve-store"),
        help="job store folder, mode 0700 (default ./seg-serve-store; a shared file system for Ray replicas)")
    add("--token-file", type=Path, help="bearer tokens, one per line; each sees only its own jobs")
    add("--no-auth", action="store_true", help="no token (loopback only; any local user can use the service)")
    add("--allow-host", action="append", default=[], metavar="NAME", help="another Host name to answer to")
    add("--allow-origin", action="append", default=[], metavar="URL",
        help="a web origin (https://viewer.example) allowed to call the API from a browser")
    add("--ssl-certfile", type=Path, help="TLS certificate (PEM)")
    add("--ssl-keyfile", type=Path, help="TLS private key (PEM)")
    add("--max-body-mb", type=_positive_float, default=1024.0, help="largest upload in MiB (default 1024)")
    add("--queue-size", type=parse_positive, default=16, help="jobs waiting or running at most; then 429 (default 16)")
    add("--workers", type=parse_positive, default=1, help="jobs run at once per server or replica (default 1)")
    add("--max-memory", type=parse_memory_gb, default=None, metavar="GB",
        help=f"memory for all jobs together: each reserves its estimate (default ${MEMORY_ENV} or half the RAM)")
    add("--quota-gb", type=_positive_float, default=50.0, help="disk for the job store (default 50); then 507")
    add("--keep", type=_positive_float, default=24.0, metavar="HOURS",
        help="finished jobs and their files are removed after this long (default 24)")
    add("--max-wait", type=_positive_float, default=600.0, metavar="S", help="longest ?wait= (default 600 s)")
    add("--provider", choices=PROVIDERS, default="auto", help="onnxruntime execution provider (default auto)")
    add("--threads", type=parse_positive, default=None, help="onnxruntime CPU threads per model")
    _add_ray_options(parser)
    add("-v", "--verbose", action="count", default=0, help="-v: job log, -vv: debug")
    parser.set_defaults(func=cmd_serve)
    return parser


def _add_ray_options(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument_group("scale-out on Ray Serve").add_argument
    add("--engine", choices=("local", "ray"), default="local",
        help="local: this process (uvicorn); ray: a Ray Serve deployment of the same app")
    add("--replicas", type=parse_positive, default=1, help="Ray Serve replicas (each holds the warm models)")
    add("--min-replicas", type=int, default=None, help="autoscaling: fewest replicas (with --max-replicas)")
    add("--max-replicas", type=parse_positive, default=None, help="autoscaling: most replicas")
    add("--address", default=None, help="Ray cluster: auto, ray://HEAD:10001 (default: start Ray here)")
    add("--cpus-per-replica", type=_positive_float, default=1.0, help="CPUs per replica (default 1)")
    add("--gpus-per-replica", type=float, default=0.0, help="GPUs per replica; fractions share a GPU (0.25)")


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """The settings of a parsed ``seg-run serve`` command line."""
    return ServeSettings(
        store=args.store, host=args.host, port=args.port, token_file=args.token_file, no_auth=args.no_auth,
        allow_hosts=tuple(args.allow_host), allow_origins=tuple(args.allow_origin),
        ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile, max_body_mb=args.max_body_mb,
        queue_size=args.queue_size, workers=args.workers, max_memory_gb=args.max_memory,
        quota_gb=args.quota_gb, keep_hours=args.keep, max_wait_s=args.max_wait, threads=args.threads,
        provider=args.provider)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run ``seg-run serve``."""
    from .server import require_serve_extra, run_uvicorn

    require_serve_extra()
    settings = settings_from_args(args)
    level = "warning" if args.verbose == 0 else "info" if args.verbose == 1 else "debug"
    if args.engine == "ray":
        from .ray_serve import RayServeOptions, run_ray_serve

        options = RayServeOptions(address=args.address, replicas=args.replicas, min_replicas=args.min_replicas,
                                  max_replicas=args.max_replicas, cpus=args.cpus_per_replica,
                                  gpus=args.gpus_per_replica)
        return run_ray_serve(settings, args.bundles, args.name, options)
    logging.getLogger("seg_runtime").setLevel(logging.getLevelName(level.upper()))
    return run_uvicorn(settings, args.bundles, args.name, log_level=level)
