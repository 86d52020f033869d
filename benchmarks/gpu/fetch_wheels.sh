#!/usr/bin/env bash
# Run HERE (with network) before a device call: downloads, into .whl/, the wheels gpuserve needs that
# the GPU image lacks (it has torch, numpy, onnxruntime, cupy, cuda-bindings, prometheus-client,
# nvidia-ml-py, pytest); tritonclient and its HTTP stack drive the CUDA shared-memory test; protobuf and
# grpcio at the versions our generated stubs ask for (the image's may be older); httptools for our HTTP server;
# opentelemetry-api, which fastapi imports since 0.16x; hpack for the native gRPC transport; transformers and
# what it imports (18 MB) for tests/test_gpu_huggingface.py (MLServer's HuggingFace runtime on cuda:0).
# Then call the device tool with carry [".whl"] and command: bash benchmarks/gpu/verify_all.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_34_x86_64 -d .whl \
    pydantic pydantic-core pydantic-settings python-dotenv typing-inspection annotated-types orjson \
    fastapi starlette uvicorn \
    tritonclient python-rapidjson geventhttpclient gevent greenlet zope.event zope.interface brotli \
    protobuf==6.33.6 grpcio==1.85.3 httptools==0.9.0 opentelemetry-api hpack \
    transformers==4.57.6 tokenizers==0.22.2 safetensors huggingface-hub==0.36.2 regex tqdm pyyaml \
    requests urllib3 idna certifi charset-normalizer
# perf_analyzer for tests/test_gpu_perf_analyzer.py (CUDA shared memory from Triton's own load generator): its
# binary xz-compressed (20 MB -> ~5 MB) beside the libraries it links that the image lacks: libb64, and
# libcudart.so.12 (the image's torch brings CUDA 13's runtime; the driver runs a CUDA 12 one too)
if bash scripts/install_perf_analyzer.sh .venv; then
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(open(sys.argv[1], 'rb'), lzma.open(sys.argv[2], 'wb'))" \
        .venv/lib/perf_analyzer/perf_analyzer .whl/perf_analyzer.xz
    cp "$(ldconfig -p | awk '/libb64.so.0d/ {print $NF; exit}')" .whl/libb64.so.0d
    cp "$(.venv/bin/python -c "import nvidia.cuda_runtime as m; print(list(m.__path__)[0])")/lib/libcudart.so.12" .whl/
fi
ls -la .whl
