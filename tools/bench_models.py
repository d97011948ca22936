"""Benchmarks: token-mixer scaling, and per-model params / FLOPs / forward and training-step time.

(a) Token mixers at growing token counts (dim 32, 2 heads, batch 1, inference): GLA
(``GatedLinearAttention``, torch chunked backend; ``gla_fla``: the same module on fla's Triton
kernels, CUDA only, not run by default), full softmax attention
(``scaled_dot_product_attention`` over all tokens) and window attention (``RegionAttention``,
8x8 windows on a 2D token grid). Each point runs in its own subprocess; its CPU peak is the
process's RSS high-water mark (``VmHWM`` on Linux, reset after setup; ``getrusage`` elsewhere)
above the RSS after setup, its CUDA peak ``max_memory_allocated`` above the allocation after
setup. Reported: median forward time, peak memory, the time ratio per 4x tokens (linear ~4,
quadratic ~16), and GLA's speed-up over full attention at the largest size both finished.
(On CPU, SDPA uses a flash kernel: full attention's memory grows linearly, its time does not.)

(b) Models (batch 1, size small, 3D at 96^3 and 2D at 512^2): parameters, forward FLOPs
(``FlopCounterMode``; matmul/conv/attention only), median eval forward time and median
training-step time (forward + cross-entropy + backward + AdamW step). Ratios are quoted
against the peer baseline measured in the same run (``--peer``).

    python tools/bench_models.py --quick                     # smoke run, seconds to a minute
    python tools/bench_models.py --json bench.json           # full run (quiet machine!)
    python tools/bench_models.py --skip-mixers --models ag_unet monai_attention_unet --dims 3
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import logging
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

log = logging.getLogger("bench_models")

MIXER_MODULES = {"gla": "seg.layers.gla", "gla_fla": "fla.ops.gla", "full": "torch.nn.functional",
                 "window": "seg.layers.region_attention"}
PEERS = {"ag_unet": "monai_attention_unet", "gla_unet": "monai_swin_unetr", "region_unet": "monai_swin_unetr",
         "timm_unet": "smp_unet"}
QUICK_MODELS = ["ag_unet", "monai_attention_unet", "smp_unet"]
VS_PEER = ("fwd_ms", "train_ms", "gflops")


def median_time(fn: Callable[[], Any], warmup: int, repeat: int, device: torch.device) -> float:
    """Median wall time of ``fn`` in seconds after ``warmup`` untimed calls."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rss_peak_mb() -> float:
    """This process's resident-set high-water mark in MiB: Linux ``VmHWM``, else ``ru_maxrss``.

    Not ``ru_maxrss`` on Linux: exec copies the forked parent's high-water mark into it, so each
    worker of an 850 MB parent reports >= 850 MB, and clear_refs cannot lower it.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def reset_rss_peak() -> bool:
    """Lower the high-water mark to the current RSS (Linux >= 4.0), so that the imports' and the
    setup's transient peaks do not hide a smaller forward peak. False where unsupported."""
    try:
        # Hand freed heap pages back first: reusing already-resident free memory never raises the RSS.
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the figure may undercount
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def token_grid(tokens: int) -> tuple[int, int]:
    """The most square ``h x w == tokens`` grid (window attention needs a 2D layout)."""
    h = int(math.isqrt(tokens))
    while tokens % h:
        h -= 1
    return h, tokens // h


class FullAttention(nn.Module):
    """Global softmax attention over all tokens: qkv projection, SDPA, output projection.

    Shape: [B, N, dim] -> [B, N, dim]
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


def build_mixer(name: str, tokens: int, dim: int, heads: int) -> tuple[nn.Module, torch.Tensor]:
    """The mixer and its input: [1, N, dim] tokens, or a [1, h, w, dim] grid for windows."""
    if name in ("gla", "gla_fla"):
        from seg.layers.gla import GatedLinearAttention

        backend = "fla" if name == "gla_fla" else "torch"
        return GatedLinearAttention(dim, num_heads=heads, backend=backend), torch.randn(1, tokens, dim)
    if name == "full":
        return FullAttention(dim, heads), torch.randn(1, tokens, dim)
    if name == "window":
        from seg.layers.region_attention import RegionAttention

        h, w = token_grid(tokens)
        return RegionAttention(dim, heads, spatial_dims=2, window_size=8), torch.randn(1, h, w, dim)
    raise ValueError(f"unknown mixer {name!r}; valid: {', '.join(MIXER_MODULES)}")


def mixer_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One mixer point, run inside its own process (so the RSS high-water mark is its own)."""
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    module, x = build_mixer(spec["mixer"], spec["tokens"], spec["dim"], spec["heads"])
    module, x = module.to(device).eval(), x.to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    # Without the reset, the CPU figure is a lower bound (peaks below the setup's are invisible).
    exact = device.type == "cuda" or reset_rss_peak()
    base_mb = torch.cuda.memory_allocated() / 2**20 if device.type == "cuda" else rss_peak_mb()
    amp = spec.get("amp", False) and device.type == "cuda"
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        seconds = median_time(lambda: module(x), spec["warmup"], spec["repeat"], device)
    peak_mb = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else rss_peak_mb()
    return {"time_ms": 1e3 * seconds, "peak_mb": peak_mb - base_mb, "peak_is_lower_bound": not exact}


def run_mixer_point(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run :func:`mixer_worker` in a fresh interpreter; a crash or timeout becomes the status."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    row = {"mixer": spec["mixer"], "tokens": spec["tokens"], "time_ms": None, "peak_mb": None, "status": "ok"}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {**row, "status": f"timeout > {timeout:.0f}s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {**row, "status": f"failed (rc {done.returncode}): {last[:120]}"}
    return {**row, **json.loads(done.stdout.strip().splitlines()[-1])}


def mixer_available(name: str) -> str | None:
    """None when the mixer's module imports, else why not (others may still be writing it)."""
    try:
        importlib.import_module(MIXER_MODULES[name])
    except Exception as err:  # noqa: BLE001 - any import failure means "not benchmarkable yet"
        return f"unavailable ({type(err).__name__}: {err})"
    return None


def bench_mixers(args: argparse.Namespace) -> dict[str, Any]:
    """All (mixer, tokens) points plus the scaling summary."""
    from tqdm import tqdm

    rows: list[dict[str, Any]] = []
    points = [(m, t) for m in args.mixers for t in sorted(args.tokens)]
    missing = {m: mixer_available(m) for m in args.mixers}
    for mixer, tokens in tqdm(points, desc="mixers", leave=False):
        if missing[mixer]:
            rows.append({"mixer": mixer, "tokens": tokens, "time_ms": None, "peak_mb": None,
                         "status": missing[mixer]})
            continue
        spec = {"mixer": mixer, "tokens": tokens, "dim": args.dim, "heads": args.heads, "device": args.device,
                "threads": args.threads, "warmup": args.warmup, "repeat": args.repeat, "amp": args.amp}
        rows.append(run_mixer_point(spec, args.point_timeout))
    by_key = {(r["mixer"], r["tokens"]): r for r in rows}
    for r in rows:  # the time ratio per 4x tokens (linear ~4, quadratic ~16)
        prev = by_key.get((r["mixer"], r["tokens"] // 4))
        ok = prev and prev["time_ms"] and r["time_ms"]
        r["ratio_per_4x"] = r["time_ms"] / prev["time_ms"] if ok else None
    return {"rows": rows, "summary": mixer_summary(rows)}


def mixer_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """GLA's speed-up over full attention at the largest token count both finished, and each
    mixer's time growth per 4x tokens over its whole measured range (geometric mean: the
    end points span 16x tokens by default, so one noisy point moves it far less than it moves
    the adjacent 4x ratios)."""
    times = {(r["mixer"], r["tokens"]): r["time_ms"] for r in rows if r["time_ms"]}
    growth: dict[str, float] = {}
    for mixer in dict.fromkeys(m for m, _ in times):
        sizes = sorted(t for m, t in times if m == mixer)
        if len(sizes) > 1:
            span = math.log(sizes[-1] / sizes[0], 4)
            growth[mixer] = (times[(mixer, sizes[-1])] / times[(mixer, sizes[0])]) ** (1 / span)
    common = [t for (m, t) in times if m == "gla" and ("full", t) in times]
    n = max(common) if common else None
    return {"largest_common_tokens": n, "gla_speedup_over_full": times[("full", n)] / times[("gla", n)] if n else None,
            "growth_per_4x": growth}


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """Forward FLOPs of ``model(x)`` (2 per multiply-add; matmul, conv and attention ops)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def bench_model(name: str, dims: int, shape: tuple[int, ...], args: argparse.Namespace) -> dict[str, Any]:
    """Params, FLOPs, eval forward and training-step time of one model at batch 1."""
    from seg.models import MODELS

    row: dict[str, Any] = {"model": name, "dims": dims, "input": "x".join(map(str, shape)), "status": "ok"}
    device = torch.device(args.device)
    torch.manual_seed(0)
    try:
        model = MODELS.get(name)(spatial_dims=dims, in_channels=1, num_classes=2, size="small").to(device)
    except (ValueError, ImportError) as err:
        return {**row, "status": f"skip: {err}"}
    x = torch.randn(1, 1, *shape, device=device)
    target = torch.randint(0, 2, (1, *shape), device=device)
    row["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
    row["gflops"] = count_flops(model.eval(), x) / 1e9

    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp and device.type == "cuda")

    def forward() -> None:
        with torch.no_grad(), amp:
            model(x)

    row["fwd_ms"] = 1e3 * median_time(forward, args.warmup, args.repeat, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with amp:
            loss = F.cross_entropy(model(x).float(), target)
        loss.backward()
        opt.step()

    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    row["train_ms"] = 1e3 * median_time(train_step, args.warmup, args.repeat, device)
    if device.type == "cuda":
        row["train_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def add_peer_ratios(rows: list[dict[str, Any]], peers: dict[str, str]) -> None:
    """``*_vs_peer`` = ours / peer baseline, both from this run and the same dims."""
    ok = {(r["model"], r["dims"]): r for r in rows if r["status"] == "ok"}
    for r in rows:
        peer = ok.get((peers.get(r["model"], ""), r["dims"]))
        r["peer"] = peer["model"] if peer and r["status"] == "ok" else None
        for key in ("params_m", "gflops", "fwd_ms", "train_ms"):
            r[f"{key}_vs_peer"] = r[key] / peer[key] if r["peer"] and peer[key] else None


def bench_models(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per (model, dims); builders that reject a dims (2D-only models) give a skip row."""
    from tqdm import tqdm

    from seg.models import MODELS

    names = args.models or (QUICK_MODELS if args.quick else MODELS.names())
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"unknown models {unknown}; registered: {', '.join(MODELS.names())}")
    shapes = {3: (16,) * 3, 2: (64, 64)} if args.quick else {3: (96,) * 3, 2: (512, 512)}
    jobs = [(n, d) for d in args.dims for n in names]
    rows = []
    for name, dims in tqdm(jobs, desc="models", leave=False):
        try:
            rows.append(bench_model(name, dims, shapes[dims], args))
        except RuntimeError as err:  # out of memory, or a model bug: report it, measure the rest
            log.warning("%s %dD failed: %s", name, dims, err)
            rows.append({"model": name, "dims": dims, "input": "x".join(map(str, shapes[dims])),
                         "status": f"failed: {str(err).splitlines()[0][:100]}"})
            if args.device == "cuda":
                torch.cuda.empty_cache()
    add_peer_ratios(rows, {**PEERS, **dict(p.split("=", 1) for p in args.peer)})
    return rows


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def print_mixers(result: dict[str, Any]) -> None:
    from seg.table import format_table

    rows = [[r["mixer"], r["tokens"], _fmt(r["time_ms"], ".2f"),
             (">=" if r.get("peak_is_lower_bound") else "") + _fmt(r["peak_mb"], ".1f"),
             _fmt(r["ratio_per_4x"], ".2f"), "" if r["status"] == "ok" else r["status"]]
            for r in result["rows"]]
    print(format_table(["mixer", "tokens", "fwd ms", "peak MB", "x per 4x tokens", "status"], rows))
    s = result["summary"]
    for mixer, growth in s["growth_per_4x"].items():
        print(f"{mixer}: time x{growth:.2f} per 4x tokens over the whole range (geometric mean; linear = 4)")
    if s["gla_speedup_over_full"] is not None:
        print(f"GLA speed-up over full attention at {s['largest_common_tokens']} tokens: "
              f"{s['gla_speedup_over_full']:.2f}x (same run; > 1: GLA is faster)")


def print_models(rows: list[dict[str, Any]]) -> None:
    from seg.table import format_table

    table = [[r["model"], f"{r['dims']}D {r['input']}", _fmt(r.get("params_m"), ".2f"),
              _fmt(r.get("gflops"), ".1f"), _fmt(r.get("fwd_ms"), ".1f"), _fmt(r.get("train_ms"), ".1f"),
              r.get("peer") or "-", *(_fmt(r.get(f"{k}_vs_peer"), ".2f") for k in VS_PEER),
              "" if r["status"] == "ok" else r["status"]] for r in rows]
    print(format_table(["model", "input", "params M", "GFLOPs", "fwd ms", "train ms", "peer", "fwd/peer",
                        "train/peer", "flops/peer", "status"], table))


def environment(args: argparse.Namespace) -> dict[str, Any]:
    return {"torch": torch.__version__, "python": platform.python_version(), "device": args.device,
            "cuda": torch.cuda.get_device_name() if args.device == "cuda" else None, "threads": args.threads,
            "cpu_count": os.cpu_count(), "quick": args.quick, "amp": args.amp, "warmup": args.warmup, "repeat": args.repeat,
            "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    intro, _, details = __doc__.partition("\n\n")
    p = argparse.ArgumentParser(description=intro, epilog=details,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, few repeats, 3 models")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true", help="CUDA: bf16 autocast, as seg trains and predicts there")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's; quick 1)")
    p.add_argument("--warmup", type=int, help="untimed runs (default 2, quick 1)")
    p.add_argument("--repeat", type=int, help="timed runs, the median is reported (default 5, quick 1)")
    p.add_argument("--mixers", nargs="+", default=["gla", "full", "window"], choices=list(MIXER_MODULES))
    p.add_argument("--tokens", nargs="+", type=int, help="token counts (default 4k..64k; quick 256, 1k)")
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--point-timeout", type=float, default=600.0, help="seconds per mixer point")
    p.add_argument("--models", nargs="+", help="registered model names (default all; quick: a few)")
    p.add_argument("--dims", nargs="+", type=int, default=[3, 2], choices=[2, 3])
    p.add_argument("--peer", nargs="*", default=[], metavar="MODEL=PEER", help="override the peer baselines")
    p.add_argument("--skip-mixers", action="store_true")
    p.add_argument("--skip-models", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one mixer point, JSON spec
    args = p.parse_args(argv)
    args.threads = args.threads or (1 if args.quick else torch.get_num_threads())
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.repeat = args.repeat if args.repeat is not None else (1 if args.quick else 5)
    args.tokens = args.tokens or ([256, 1024] if args.quick else [4096, 8192, 16384, 32768, 65536])
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(mixer_worker(json.loads(args.worker))))
        return
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {"environment": environment(args)}
    load = result["environment"]["load_avg"]
    log.info("torch %s, %s, %d threads, load average %s", torch.__version__, args.device, args.threads, load)
    if args.device == "cpu" and load and load[0] > 0.5 * (os.cpu_count() or 1):
        # Seen on a shared 2-core box: 2-thread forwards alternate between 10 ms and 1.2 s.
        log.warning("the CPU is busy (load %.1f on %d cores): timings are unreliable, multi-threaded ones "
                    "especially; rerun when quiet or with --threads 1", load[0], os.cpu_count())
    if not args.skip_mixers:
        result["mixers"] = bench_mixers(args)
        print_mixers(result["mixers"])
    if not args.skip_models:
        result["models"] = bench_models(args)
        print_models(result["models"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        log.info("wrote %s", args.json)


if __name__ == "__main__":
    main()
