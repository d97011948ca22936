"""onnxruntime sessions with provider fallback, and the ONNX backend behind ``seg-run``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .bundle import Bundle, BundleError, load_bundle, verify_bundle

logger = logging.getLogger(__name__)

PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")
_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"
_TENSORRT = "TensorrtExecutionProvider"
_REQUESTS = {
    "cpu": [_CPU],
    "cuda": [_CUDA, _CPU],
    "tensorrt": [_TENSORRT, _CUDA, _CPU],
    # TensorRT is opt-in: its engine build takes minutes and rejects some graphs.
    "auto": [_CUDA, "ROCMExecutionProvider", "CoreMLExecutionProvider", "DmlExecutionProvider", _CPU],
}


def resolve_providers(provider: str, available: list[str]) -> list[str]:
    """Execution providers to request, best first, restricted to those available.

    Args:
        provider: ``auto``, ``cpu``, ``cuda`` or ``tensorrt``.
        available: ``onnxruntime.get_available_providers()``.

    Returns:
        Provider names; for ``auto`` only the single best accelerator plus CPU.
    """
    if provider not in _REQUESTS:
        raise ValueError(f"unknown provider '{provider}' (choose from {', '.join(PROVIDERS)})")
    wanted = _REQUESTS[provider]
    chosen = [name for name in wanted if name in available or name == _CPU]
    if provider == "auto":
        return chosen[:1] + ([_CPU] if chosen[0] != _CPU else [])
    if chosen[0] != wanted[0]:
        logger.warning(
            "provider '%s' requested but %s is not available in this onnxruntime (available: %s); using %s",
            provider,
            wanted[0],
            ", ".join(available),
            chosen[0],
        )
    return chosen


def physical_cores() -> int:
    """Physical CPU cores this process may run on (hyper-threads and other CPUs excluded).

    Reads ``/proc/cpuinfo`` (Linux); elsewhere, or when that fails, the usable logical CPUs.
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return max(1, usable)
    cores, package = set(), "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "physical id":
            package = value.strip()
        elif key.strip() == "core id":
            cores.add((package, value.strip()))
    return max(1, min(len(cores) or usable, usable))


def session_options(threads: int | None = None) -> Any:
    """CPU-friendly onnxruntime session options.

    All graph optimisations (conv + activation fusion, constant folding, layout changes) and
    intra-op threads set explicitly to the physical cores this process may use (respecting
    taskset / container cpusets), so the thread count is one known number. Thread spinning
    stays on: turning it off cost about 30% per patch in a 2-core measurement.

    Args:
        threads: Intra-op threads; None for :func:`physical_cores`.

    Returns:
        ``onnxruntime.SessionOptions``.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads if threads and threads > 0 else physical_cores()
    options.inter_op_num_threads = 1
    return options


def create_session(
    model_path: str | os.PathLike[str], provider: str = "auto", threads: int | None = None
) -> Any:
    """Create an ``onnxruntime.InferenceSession`` on the best matching execution provider.

    Args:
        model_path: The ``.onnx`` file.
        provider: ``auto`` (best available, TensorRT excluded), ``cpu``, ``cuda`` or
            ``tensorrt`` (falls back to CUDA, then CPU, with a warning).
        threads: CPU intra-op threads (see :func:`session_options`).

    Returns:
        The session.
    """
    import onnxruntime as ort

    providers = resolve_providers(provider, ort.get_available_providers())
    options = session_options(threads)
    provider_args: list[Any] = []
    for name in providers:
        if name == _TENSORRT:
            cache = Path(model_path).resolve().parent / ".trt_cache"
            provider_args.append(
                (name, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)})
            )
        else:
            provider_args.append(name)
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=provider_args)
    used = session.get_providers()
    if used and used[0] != providers[0]:
        logger.warning(
            "onnxruntime could not start %s (missing libraries?); running on %s", providers[0], used[0]
        )
    logger.info("onnxruntime session on %s", ", ".join(used))
    return session


class OnnxBackend:
    """A loaded bundle and its onnxruntime session (created once, reused for every case).

    Before onnxruntime sees the model, the bundle's files are verified (:func:`verify_bundle`: confined
    to the folder, their SHA-256 as ``model.json`` records, finite weights); after, the graph's inputs
    and outputs are checked against ``model.json``. Either failure is one :class:`BundleError` line.

    Args:
        bundle_dir: Folder holding ``model.json`` and the ONNX file.
        provider: See :func:`create_session`.
        threads: CPU intra-op threads (None: the physical cores).
        strict: Refuse a bundle whose ``model.json`` lists no file hashes (else a warning).
        expect_sha256: The bundle digest a deployment pinned; any other bundle is refused.

    Attributes:
        digest: The bundle's SHA-256 (of ``model.json``, which holds its files' hashes).
    """

    tool = "seg-run"
    default_batch_size = 1

    def __init__(self, bundle_dir: str | os.PathLike[str], provider: str = "auto", threads: int | None = None,
                 strict: bool = False, expect_sha256: str | None = None) -> None:
        self.bundle_dir = Path(bundle_dir)
        self._provider, self._threads, self._strict = provider, threads, strict
        self.bundle: Bundle = load_bundle(self.bundle_dir)
        model_path = self.bundle_dir / self.bundle.model_file
        self.digest = verify_bundle(self.bundle_dir, self.bundle, strict=strict, expect_sha256=expect_sha256)
        if not model_path.is_file():
            raise BundleError(f"{model_path}: model file named in model.json not found")
        try:
            self.session = create_session(model_path, provider, threads)
        except Exception as exc:
            message = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise BundleError(f"{model_path}: onnxruntime cannot load the model ({message})") from None
        self._fixed_batch = check_graph(self.session, self.bundle, model_path)

    @property
    def providers(self) -> list[str]:
        """Execution providers the session actually uses."""
        return list(self.session.get_providers())

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        """Logits for a batch of patches.

        Args:
            x: Shape: [B, C, *P], float32.

        Returns:
            Logits, float32. Shape: [B, K, *P].
        """
        x = np.ascontiguousarray(x, dtype=np.float32)
        step = self._fixed_batch
        if step is None or x.shape[0] == step:
            return self._run(x)
        chunks = []
        for start in range(0, x.shape[0], step):
            chunk = x[start : start + step]
            missing = step - chunk.shape[0]
            if missing:
                chunk = np.concatenate([chunk, np.zeros((missing, *chunk.shape[1:]), np.float32)])
            chunks.append(self._run(chunk)[: step - missing])
        return np.concatenate(chunks)

    def _run(self, x: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run([self.bundle.output_name], {self.bundle.input_name: x})
        return np.asarray(logits, dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        """What the run record says about the model."""
        return {
            "bundle": str(self.bundle_dir.resolve()),
            "sha256": self.digest,
            "model_file": self.bundle.model_file,
            "providers": self.providers,
            "seg_runtime": __version__,
            "provenance": self.bundle.provenance,
        }

    def recipe(self, cpus: float | None = None, gpus: float = 0.0) -> OnnxRecipe:
        """Builds this bundle's session in another process; its threads are the CPUs it is given."""
        threads = self._threads or (max(1, int(cpus)) if cpus else None)
        return OnnxRecipe(str(self.bundle_dir), self._provider, threads, self._strict, self.digest)


class OnnxRecipe:
    """Builds an :class:`OnnxBackend` where it is called (picklable: holds a path, and the digest the
    bundle had here, so a worker never runs a bundle that changed since)."""

    def __init__(self, bundle_dir: str, provider: str = "auto", threads: int | None = None, strict: bool = False,
                 expect_sha256: str | None = None) -> None:
        self.bundle_dir, self.provider, self.threads = bundle_dir, provider, threads
        self.strict, self.expect_sha256 = strict, expect_sha256

    def __call__(self) -> OnnxBackend:
        return OnnxBackend(self.bundle_dir, provider=self.provider, threads=self.threads, strict=self.strict,
                           expect_sha256=self.expect_sha256)


def _fixed(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def check_graph(session: Any, bundle: Bundle, model_path: Path) -> int | None:
    """Check the graph's input and output against ``model.json``; returns a fixed batch size, if any.

    Raises:
        BundleError: names, rank, channels, classes or patch size disagree (one line naming the key).
    """
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    if bundle.input_name not in inputs or bundle.output_name not in outputs:
        raise BundleError(
            f"{model_path}: model I/O {list(inputs)} -> {list(outputs)} does not match model.json "
            f"input_name '{bundle.input_name}' / output_name '{bundle.output_name}'"
        )
    rank = 2 + bundle.spatial_dims
    x, y = list(inputs[bundle.input_name].shape), list(outputs[bundle.output_name].shape)
    expected = [("spatial_dims", "input rank", len(x), rank), ("spatial_dims", "output rank", len(y), rank)]
    if len(x) == rank and len(y) == rank:
        expected += [("in_channels", "input channels", _fixed(x[1]), bundle.in_channels),
                     ("num_classes" if bundle.outputs == "classes" else "regions", "output channels", _fixed(y[1]),
                      bundle.output_channels)]
        expected += [("patch_size", f"input size along axis {a}", _fixed(x[2 + a]), bundle.patch_size[a])
                     for a in range(bundle.spatial_dims)]
    for key, what, found, want in expected:
        if found is not None and found != want:
            raise BundleError(f"{model_path.parent / 'model.json'}: key '{key}' says {want}, but the graph's {what} "
                              f"is {found}")
    # A model exported with a fixed batch size must be fed exactly that many patches.
    return _fixed(x[0]) if x else None
