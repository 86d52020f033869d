#!/usr/bin/env bash
# One call on a lent GPU (the device tool), at most 10 minutes: every GPU path against its CPU
# reference (the `gpu` tests: torch streams, ONNX Runtime IOBinding/run_on_device, CUDA graphs, a TensorRT
# engine built there from ONNX, HuggingFace pipelines on cuda:0 (tests/test_gpu_huggingface.py: transformers
# comes in .whl; about 10 s more, never yet run), perf_analyzer's CUDA shared memory (tests/test_gpu_perf_analyzer.py:
# its binary comes xz-packed in .whl; never yet run)), then every GPU benchmark. Results land in $OUT (at most 8 files come
# back: nvidia-smi.txt and a .txt log per step; each benchmark prints its JSON into its log).
# STEPS="tests graphs paths engine backend serve kernels" (the default: all) picks steps for a second call.
#   here:   bash benchmarks/gpu/fetch_wheels.sh
#   device: run(command="bash benchmarks/gpu/verify_all.sh", carry=[".whl"])
# To check ONNX Runtime's CUDA provider too, first carry onnxruntime-gpu in parts: fetch_ort_gpu.sh says how.
# Then copy the numbers (device, date) into benchmarks/RESULTS.md and the logs into benchmarks/gpu/runs/.
# On the H200 (2026-12-04) a call of the first four steps took about 3.5 minutes, machine start included;
# six steps ran in 5.6 (session 8), so a normal call leaves room for a second one with STEPS=... in a
# 15-minute lease. Each step has its own time limit, there for hangs (together 11.5 minutes: with several
# hanging steps the call's own 10 minutes end first): a step that hangs is stopped and said so in its log,
# and the steps after it still run.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$repo/benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls "$repo"/.whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$repo"/.whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
# onnxruntime-gpu, when its parts came in earlier calls (benchmarks/gpu/fetch_ort_gpu.sh): joined, checked
# and installed in front of the image's CPU build; its CUDA provider finds CUDA and cuDNN in the image's
# nvidia wheels through a link beside it (onnxruntime's preload looks next to its own folder).
ort_gpu_note="onnxruntime-gpu: no parts carried (benchmarks/gpu/fetch_ort_gpu.sh)"
manifest=$(ls "$repo"/.ortgpu/p*/MANIFEST 2>/dev/null | head -1)
if [ -n "$manifest" ]; then
    wheel=/tmp/$(awk '$1 == "wheel" {print $2}' "$manifest")
    parts=$(awk '$1 == "parts" {print $2}' "$manifest")
    missing=""
    : > "$wheel"
    for i in $(seq 1 "$parts"); do
        if [ -f "$repo/.ortgpu/p$i/part" ]; then cat "$repo/.ortgpu/p$i/part" >> "$wheel"; else missing="$missing p$i"; fi
    done
    if [ -n "$missing" ]; then
        ort_gpu_note="onnxruntime-gpu: parts missing:$missing (the machine was given back between calls?)"
    elif [ "$(sha256sum "$wheel" | cut -d' ' -f1)" != "$(awk '$1 == "sha256" {print $2}' "$manifest")" ]; then
        ort_gpu_note="onnxruntime-gpu: joined parts fail the sha256 check"
    elif python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$wheel"; then
        export PYTHONPATH=/tmp/site
        nvidia=$(python3 -c "import nvidia, sys; print([p for p in nvidia.__path__ if '/tmp/site' not in p][0])" 2>/dev/null)
        [ -n "$nvidia" ] && [ ! -e /tmp/site/nvidia ] && ln -s "$nvidia" /tmp/site/nvidia
        ort_gpu_note="onnxruntime-gpu: installed from $parts parts (nvidia libraries: ${nvidia:-not found})"
    else
        ort_gpu_note="onnxruntime-gpu: pip could not install the joined wheel"
    fi
    rm -f "$wheel"
fi
echo "verify_all: $ort_gpu_note"
if ! python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target /tmp/gpuserve "$repo"; then
    # The image's setuptools could not build it (say, one too old for pyproject's license string): lay out
    # the installed package by hand, as pyproject's package-dir maps it (the .cu sources come along).
    echo "verify_all: pip could not build gpuserve; copying its folders into /tmp/gpuserve instead"
    rm -rf /tmp/gpuserve && mkdir -p /tmp/gpuserve && cp -r "$repo/gpuserve" /tmp/gpuserve/gpuserve || exit 1
    for part in engine backends server kernels; do cp -r "$repo/$part" "/tmp/gpuserve/gpuserve/$part" || exit 1; done
fi
export PYTHONPATH=/tmp/gpuserve:${PYTHONPATH:-}
# perf_analyzer, when fetch_wheels.sh packed it: unpacked to /tmp/pa beside the libb64 and libcudart.so.12 it
# brought, and a wrapper on PATH that points the loader there (tests/test_gpu_perf_analyzer.py finds it on PATH)
if [ -f "$repo/.whl/perf_analyzer.xz" ]; then
    mkdir -p /tmp/pa/bin
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
        "$repo/.whl/perf_analyzer.xz" /tmp/pa/perf_analyzer && chmod +x /tmp/pa/perf_analyzer
    cp "$repo"/.whl/libb64.so.0d "$repo"/.whl/libcudart.so.12 /tmp/pa/ 2>/dev/null
    printf '#!/bin/sh\nLD_LIBRARY_PATH="/tmp/pa${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec /tmp/pa/perf_analyzer "$@"\n' \
        > /tmp/pa/bin/perf_analyzer
    chmod +x /tmp/pa/bin/perf_analyzer
    export PATH=/tmp/pa/bin:$PATH
    perf_analyzer --version > /dev/null 2>&1 || echo "verify_all: perf_analyzer unpacked but does not start"
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
echo "$ort_gpu_note" >> "$OUT/nvidia-smi.txt"
python3 - >> "$OUT/nvidia-smi.txt" 2>&1 <<'EOF'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("torch", "onnxruntime", "cupy", "tensorrt", "grpc", "google.protobuf", "pytest"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as exc:
        print(name, "missing:", type(exc).__name__, exc)
import onnxruntime
print("onnxruntime providers", onnxruntime.get_available_providers(), "from", onnxruntime.__file__)
EOF
cd /tmp  # never import the source folder gpuserve/ in place of the installed package
status=0

STEPS=${STEPS:-tests graphs paths engine backend serve kernels}
step() {  # step NAME LOG SECONDS COMMAND...: output to the console and $OUT/LOG, stopped after SECONDS
    case " $STEPS " in *" $1 "*) ;; *) return 0 ;; esac
    local log=$OUT/$2 limit=$3
    shift 3
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        echo "verify_all: stopped after ${limit} s: $*" | tee -a "$log"
    fi
    [ "$rc" = 0 ] || status=1
}

# -v names each test as it runs and faulthandler prints every thread's stack of a test stuck for 50 s, so a
# hang is found from the log alone; -rs lists why tests were skipped (e.g. no onnxruntime-gpu, no tensorrt).
# A test that hangs is failed after 60 s where pytest-timeout is installed (the image has it), so the
# other tests still run.
per_test=()
python3 -c "import pytest_timeout" 2>/dev/null && per_test=(--timeout 60)
# tests/test_tensorflow_backend.py's gpu test (a SavedModel on /GPU:0 against the CPU) skips there: the image has no
# TensorFlow and none is carried (a GPU build is several hundred MB); where one is installed it runs.
step tests gpu_tests.txt 120 python3 -m pytest -v -rs -p no:cacheprovider -o faulthandler_timeout=50 "${per_test[@]}" \
    -m gpu "$repo"/tests/test_gpu*.py "$repo"/tests/test_tensorflow_backend.py
# Two CUDA graphs replayed at once on two threads, each captured on its own stream (graphs sharing one
# stream's cuBLAS workspace lost requests and aborted the server in session 8; `--both` shows that again).
step graphs graph_concurrency.txt 60 python3 "$repo/benchmarks/gpu/graph_concurrency.py" --seconds 3
# Where a served torch request's time goes (each way of running a batch, alone and through the engine).
step paths torch_paths.txt 50 python3 "$repo/benchmarks/gpu/torch_path_costs.py" --seconds 0.3
step engine gpu_bench.txt 100 python3 "$repo/benchmarks/gpu/gpu_bench.py" --seconds 4
# Issue 6, per framework on the GPU: served vs direct for ONNX Runtime's CUDA EP (session.run and IOBinding),
# torch (eager and CUDA graphs) and TensorRT. ONNX Runtime needs onnxruntime-gpu and TensorRT the tensorrt
# wheel; the stock image has neither: ONNX Runtime's rows run when fetch_ort_gpu.sh's parts came along,
# TensorRT's (whose libraries are several GiB) say "skipped".
step backend backend_gpu.txt 130 python3 "$repo/benchmarks/backend_bench.py" --device cuda:0 --seconds 1 --rounds 2
# Issue 9: a 3x224x224 image sent as FP32 vs as UINT8 normalised on the device (kernels/preprocess.cu),
# bytes over PCIe per image and images/s through the engine and direct (needs CuPy, which the image has).
# Before the serve step: the step limits add up to more than the call's 10 minutes, and the serve step,
# the newest, is the likeliest to hang; the last step is the one a hang elsewhere costs.
step kernels kernel_bench.txt 50 python3 "$repo/benchmarks/gpu/kernel_bench.py"
# What a load generator sees: `gpuserve start` on torch models on cuda:0 (eager and CUDA graphs; and ONNX Runtime's
# CUDA provider when onnxruntime-gpu came along), V2 binary
# HTTP and gRPC at 1/16/64 clients, against the direct call in the same run; answers checked before and
# after; a stall prints the server's thread stacks.
step serve serve_gpu.txt 180 python3 "$repo/benchmarks/gpu/serve_gpu.py" --seconds 2
exit $status
