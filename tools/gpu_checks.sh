#!/usr/bin/env bash
# The GPU checks in one go, on a CUDA machine where seg's dependencies import (pip install -e ".[dev,gpu]"):
# pytest -m gpu (CUDA vs CPU for every model, bf16 training, fla kernels, seg predict on CUDA,
# onnxruntime's CUDA provider), then the GPU figures: token mixers and models under bf16
# (tools/bench_models.py --amp) and the planner's GPU throughput (tools/bench_plan_throughput.py).
# Each step has its own time cap, so one slow step cannot take the others' results with it.
#
#   tools/gpu_checks.sh OUT_DIR [GPU_MEMORY_GB]
set -u
out=${1:?usage: tools/gpu_checks.sh OUT_DIR [GPU_MEMORY_GB]}
gpu_memory=${2:-80}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
python3 - <<'PY' || exit 1
import torch
import onnxruntime as ort
assert torch.cuda.is_available(), "no CUDA device"
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())
print("onnxruntime", ort.__version__, ort.get_available_providers())
try:
    import fla
    print("fla", getattr(fla, "__version__", "?"))
except Exception as err:  # noqa: BLE001
    print("fla not importable:", err)
PY
step() {  # step SECONDS NAME COMMAND...: run with a cap, echo its status
    local cap=$1 name=$2
    shift 2
    echo "== $name (cap ${cap}s)"
    local start=$SECONDS
    timeout "$cap" "$@"
    echo "== $name: exit $? after $((SECONDS - start))s"
}
step 200 "pytest -m gpu" python3 -m pytest -m gpu -p no:cacheprovider -q -rs -s -W ignore tests
step 90 "token mixers (bf16)" python3 tools/bench_models.py --amp --skip-models --mixers gla gla_fla full window \
    --tokens 4096 65536 1048576 --point-timeout 40 --json "$out/mixers.json"
step 100 "models (bf16)" python3 tools/bench_models.py --amp --skip-mixers --repeat 5 --json "$out/models.json"
step 100 "planner throughput" python3 tools/bench_plan_throughput.py --device gpu --gpu-memory "$gpu_memory" \
    --epochs 3 --iters 10 --json "$out/plan_throughput.json"
