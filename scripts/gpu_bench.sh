#!/usr/bin/env bash
# The GPU figures of issue 16 in one call on a lent CUDA machine, from the repository root:
#   OUT=/some/dir scripts/gpu_bench.sh
# geovis pipeline-bench with torch on CUDA at 320x240 and 640x480, then geovis bench on torch-cuda
# and torch-cpu at 640x480 (its wall-clock-host-io rows time the pinned up/downloads), then the CPU
# pipeline at 640x480 as the same machine's baseline; JSON, tables and logs under $OUT, in under
# 10 minutes. Uses the machine's own torch (with CUDA); packages the pipeline imports that are
# missing are installed at requirements.txt's versions, from $WHEELS (a folder of wheels, for an
# offline machine) if set, else the index. A failed install or a step past its timeout is reported
# and the next step runs.
set -u
OUT=${OUT:-out/gpu_bench}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  "$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
torch.cuda.is_available(), "cpus", __import__("os").cpu_count())'; } 2>&1 | tee "$OUT/machine.txt"

missing=$("$PY" - <<'PYEOF'
import importlib.util, re
packages = {"numpy": "numpy", "cv2": "opencv-python-headless", "yaml": "PyYAML", "safetensors": "safetensors",
            "tqdm": "tqdm", "scipy": "scipy", "onnx": "onnx", "onnxruntime": "onnxruntime"}
pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", open("requirements.txt").read(), re.M))
print(" ".join(f"{p}=={pins[p]}" if p in pins else p for m, p in packages.items() if importlib.util.find_spec(m) is None))
PYEOF
)
if [ -n "$missing" ]; then
  echo "installing $missing"
  "$PY" -m pip install --quiet ${WHEELS:+--no-index --find-links "$WHEELS"} $missing >"$OUT/pip.log" 2>&1 \
    || echo "pip install failed (see $OUT/pip.log); going on with what is installed"
fi

step() {  # step NAME SECONDS geovis-arguments...: one command, its table in NAME.txt, its exit status reported
  local name=$1 seconds=$2; shift 2
  timeout "$seconds" "$PY" -m geovis_ros.cli "$@" 2>&1 | tee "$OUT/$name.txt"
  echo "$name: exit ${PIPESTATUS[0]}" | tee -a "$OUT/steps.txt"
}
for size in 320x240 640x480; do
  step "pipeline_torch_cuda_$size" 180 pipeline-bench --backend torch --device cuda --sizes "$size" \
    --frames 40 --warmup 8 --json "$OUT/pipeline_torch_cuda_$size.json"
done
step bench_torch_640x480 90 bench --sizes 640x480 --backends torch-cuda,torch-cpu --precisions fp32,fp16 \
  --warmup 5 --iterations 30 --no-dis --json "$OUT/bench_torch_640x480.json"
# the CPU baseline on the same machine (onnxruntime, the CPU default), last: it is the one to lose
step pipeline_cpu_640x480 120 pipeline-bench --sizes 640x480 --variants default --gpu-backend none \
  --json "$OUT/pipeline_cpu_640x480.json"
