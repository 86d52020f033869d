#!/usr/bin/env bash
# One call on a lent GPU (the device tool), at most 10 minutes: every GPU path against its CPU
# reference (the `gpu` tests: torch streams, ONNX Runtime IOBinding/run_on_device, CUDA graphs, a TensorRT
# engine built there from ONNX), then every GPU benchmark. Results land in $OUT (6 files).
#   here:   bash benchmarks/gpu/fetch_wheels.sh
#   device: run(command="bash benchmarks/gpu/verify_all.sh", carry=[".whl"])
# Then copy the numbers (device, date) into benchmarks/RESULTS.md.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$repo/benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls "$repo"/.whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$repo"/.whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target /tmp/gpuserve "$repo" || exit 1
export PYTHONPATH=/tmp/gpuserve:${PYTHONPATH:-}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
cd /tmp  # never import the source folder gpuserve/ in place of the installed package
status=0
python3 -m pytest -q -p no:cacheprovider -m gpu "$repo"/tests/test_gpu*.py 2>&1 | tee "$OUT/gpu_tests.txt" || status=1
python3 "$repo/benchmarks/gpu/gpu_bench.py" --json "$OUT/gpu_bench.json" 2>&1 | tee "$OUT/gpu_bench.txt" || status=1
# Issue 6, per framework on the GPU: served vs direct for ONNX Runtime's CUDA EP (session.run and IOBinding),
# torch (eager and CUDA graphs) and TensorRT. ONNX Runtime needs onnxruntime-gpu and TensorRT the tensorrt
# wheel; both are far over the 64 MiB a call can carry, so on the stock image those rows say "skipped".
python3 "$repo/benchmarks/backend_bench.py" --device cuda:0 --seconds 1 --rounds 3 --json "$OUT/backend_gpu.json" \
    2>&1 | tee "$OUT/backend_gpu.txt" || status=1
# Issue 9: a 3x224x224 image sent as FP32 vs as UINT8 normalised on the device (kernels/preprocess.cu),
# bytes over PCIe per image and images/s through the engine and direct (needs CuPy, which the image has).
python3 "$repo/benchmarks/gpu/kernel_bench.py" --json "$OUT/kernel_bench.json" 2>&1 | tee "$OUT/kernel_bench.txt" \
    || status=1
exit $status
