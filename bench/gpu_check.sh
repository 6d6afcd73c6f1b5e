#!/usr/bin/env bash
# GPU check for gscan, for a machine with an NVIDIA GPU and no network.
# onnxruntime-gpu comes from wheels carried beside this script (WHEELS, default bench/wheels) or from a folder it
# was already unpacked into (GSCAN_SITE); the rest of the scan side (numpy, pillow, typer, rich, pandas, onnx) is
# taken as installed. Then it prints the scan benchmark table with the CUDA provider, every core decoding, for the
# fp32 model and its fp16 conversion, and the model ceiling per batch size for both. Target: gscan >= 90% of the
# decode ceiling.
#
#   pip download --no-deps -d bench/wheels onnxruntime-gpu      # on a machine with network, same Python
#   bash bench/gpu_check.sh [IMAGES] [REPEAT]                   # scans IMAGES x REPEAT files (hard links)
# Defaults: 1,000 images made on the machine, scanned 10 times over; about 3 minutes on an H100 with 16 cores
# before the two batch sweeps were added (about 35 s each: 6 sizes x 4 s plus start-up).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-bench/wheels}
IMAGES=${1:-1000}
REPEAT=${2:-10}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || { echo "no NVIDIA GPU"; exit 2; }
if [ -z "${GSCAN_SITE:-}" ] && [ -d "$WHEELS" ]; then
  GSCAN_SITE=/tmp/gscan-site
  python3 -m pip install --quiet --no-index --no-deps --target "$GSCAN_SITE" "$WHEELS"/onnxruntime_gpu-*.whl
fi
if [ -n "${GSCAN_SITE:-}" ]; then export PYTHONPATH="$GSCAN_SITE${PYTHONPATH:+:$PYTHONPATH}"; fi
# pip-installed CUDA and cuDNN libraries, for an onnxruntime-gpu whose preload_dlls() does not know their layout
NV_LIBS=$(python3 -c "import site,glob; print(':'.join(sorted({p for s in site.getsitepackages() for p in glob.glob(s + '/nvidia/**/lib', recursive=True)})))")
export LD_LIBRARY_PATH="${NV_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
python3 - <<'PY'
import numpy as np
import onnxruntime as ort
from forensics.runtime import Detector, resolve_model
print("onnxruntime", ort.__version__, ort.__file__, ort.get_available_providers())
det = Detector(resolve_model(None), device="cuda")
logits, _ = det.run(np.zeros((4, 3, det.card.tiling.crop, det.card.tiling.crop), np.float32))
print("CUDA session:", det.providers, "logits", logits.shape)
PY
echo "cores: $(nproc)"
# where decoding on threads stops scaling (the GPU scan's decode stage runs on threads in one process)
python3 bench/scan_bench.py --images "$IMAGES" --thread-scaling
# half-precision weights (converted from the shipped ONNX file: no torch needed here)
python3 - <<'PY'
import onnx
from onnxruntime.transformers.float16 import convert_float_to_float16  # what `gscan export --fp16` uses
from forensics.runtime import resolve_model
proto = convert_float_to_float16(onnx.load(str(resolve_model(None))), keep_io_types=True)
onnx.save(proto, "/tmp/gscan-fp16.onnx")
print("fp16 model written to /tmp/gscan-fp16.onnx")
PY
# which batch size keeps the GPU busiest (the CUDA default is 128 tiles), fp32 then fp16
python3 bench/scan_bench.py --images "$IMAGES" --batch-sweep --device cuda
python3 bench/scan_bench.py --images "$IMAGES" --batch-sweep --device cuda --model /tmp/gscan-fp16.onnx
python3 bench/scan_bench.py --images "$IMAGES" --repeat "$REPEAT" --rounds 1 --device cuda --skip-baseline --processes
python3 bench/scan_bench.py --images "$IMAGES" --repeat "$REPEAT" --rounds 1 --device cuda --skip-baseline \
  --model /tmp/gscan-fp16.onnx
