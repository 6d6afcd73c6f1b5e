#!/usr/bin/env bash
# GPU check for gscan, for a machine with an NVIDIA GPU and no network.
# Installs from wheels carried beside this script (WHEELS, default bench/wheels: onnxruntime-gpu and its
# nvidia-* CUDA/cuDNN wheels, plus gscan's scan-side dependencies), then prints the scan benchmark table with the
# CUDA provider, using every core for decoding. Target: gscan >= 90% of the decode ceiling.
#
#   pip download -d bench/wheels onnxruntime-gpu 'onnxruntime-gpu[cuda,cudnn]' numpy pillow typer rich onnx
#   bash bench/gpu_check.sh [IMAGES]
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-bench/wheels}
IMAGES=${1:-2000}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || { echo "no NVIDIA GPU"; exit 2; }
if [ -d "$WHEELS" ]; then
  python3 -m pip install --quiet --no-index --find-links "$WHEELS" onnxruntime-gpu numpy pillow typer rich onnx || true
fi
python3 - <<'PY'
import onnxruntime as ort
ort.preload_dlls()
print("onnxruntime", ort.__version__, ort.get_available_providers())
PY
echo "cores: $(nproc)"
python3 bench/scan_bench.py --images "$IMAGES" --device cuda --skip-baseline
# the same table with half-precision weights (converted from the shipped ONNX file: no torch needed here)
python3 - <<'PY'
import onnx
from onnxruntime.transformers.float16 import convert_float_to_float16  # what `gscan export --fp16` uses
from forensics.runtime import resolve_model
proto = convert_float_to_float16(onnx.load(str(resolve_model(None))), keep_io_types=True)
onnx.save(proto, "/tmp/gscan-fp16.onnx")
print("fp16 model written to /tmp/gscan-fp16.onnx")
PY
python3 bench/scan_bench.py --images "$IMAGES" --device cuda --skip-baseline --model /tmp/gscan-fp16.onnx
