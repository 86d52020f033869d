#!/usr/bin/env bash
# Drives a running gpuserve with Triton's perf_analyzer over HTTP and gRPC at several concurrencies.
#   benchmarks/perf_analyzer/run.sh MODEL [HTTP_PORT] [GRPC_PORT] [SHAPE]
# e.g. with the demo: gpuserve start configs/demo &  benchmarks/perf_analyzer/run.sh iris-mlp 8080 8081 input:4
# perf_analyzer: on PATH (NVIDIA's SDK container) or .venv/bin/perf_analyzer (bash scripts/install_perf_analyzer.sh).
# Results go to benchmarks/results/perf_analyzer-<model>-<protocol>.csv.
set -euo pipefail
model=${1:?model name}
http_port=${2:-8080}
grpc_port=${3:-8081}
shape=${4:-}
venv_bin="$(cd "$(dirname "$0")/../.." && pwd)/.venv/bin"
if ! command -v perf_analyzer >/dev/null 2>&1 && [ -x "$venv_bin/perf_analyzer" ]; then
    PATH="$venv_bin:$PATH"
fi
if ! command -v perf_analyzer >/dev/null 2>&1; then
    echo "perf_analyzer is not installed: bash scripts/install_perf_analyzer.sh" >&2
    exit 2
fi
out="$(dirname "$0")/../results"
mkdir -p "$out"
shape_args=()
[ -n "$shape" ] && shape_args=(--shape "$shape")
for protocol in http grpc; do
    port=$http_port
    [ "$protocol" = grpc ] && port=$grpc_port
    perf_analyzer -m "$model" -u "127.0.0.1:$port" -i "$protocol" "${shape_args[@]}" \
        --concurrency-range 1:64:4 --measurement-interval 5000 --stability-percentage 20 \
        -f "$out/perf_analyzer-$model-$protocol.csv"
done
