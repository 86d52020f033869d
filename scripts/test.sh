#!/usr/bin/env bash
# Sets up .venv (if needed) and runs every check CI runs: import contracts, then the test suite.
# This is the README's test command; .ci/run calls exactly this.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
python=${GPUSERVE_PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv || exit 1
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
# Exactly one ONNX Runtime flavour (CPU here); never onnxruntime beside onnxruntime-gpu.
.venv/bin/python -m pip install -q -e ".[dev,onnx,grpc,speed,tracing]" 2>&1 | grep -v "^WARNING: Location" || true
# torch is an optional extra; 2.13.0 is the CPU build that lies on this machine's disk (no CUDA download).
.venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
# tensorflow-cpu (tests/test_tensorflow_backend.py, gpuserve[tensorflow]): about 275 MB to download, 1.3 GB installed,
# ~20 s from a local wheel; it changes none of numpy, protobuf or grpcio (2.21.0 checked). The tests skip without it.
.venv/bin/python -m pip install -q "tensorflow-cpu==2.21.0" 2>&1 | grep -v "^WARNING: Location" || true
# Beside tensorflow, alibi-detect 0.13 (below) fails at `import alibi_detect` without tensorflow-probability (its TF
# modules load once tensorflow is found), and tensorflow-probability needs tf-keras under Keras 3. Both --no-deps:
# tf-keras requires the `tensorflow` package, a second TensorFlow beside tensorflow-cpu. About 10 MB, a few seconds.
.venv/bin/python -m pip install -q --no-deps "tf-keras==2.21.0" "tensorflow-probability==0.25.0" 2>&1 | grep -v "^WARNING: Location" || true
# TensorFlow Serving's Python client, the one tests/test_tfserving_api.py drives gpuserve's TFServing API with;
# --no-deps for the same reason (it requires the `tensorflow` package). About 250 KB.
.venv/bin/python -m pip install -q --no-deps "tensorflow-serving-api==2.21.0" 2>&1 | grep -v "^WARNING: Location" || true
# TorchServe 0.12 and its archiver (tests/test_torchserve.py: built-in handlers, its Context, the CLI), --no-deps: their
# Requires are small (psutil, Pillow, packaging, wheel; enum-compat). About 45 MB installed; the tests run without them.
.venv/bin/python -m pip install -q --no-deps "torchserve==0.12.0" "torch-model-archiver==0.12.0" psutil enum-compat 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q dm-tree decorator 2>&1 | grep -v "^WARNING: Location" || true
# alibi-detect (tests/test_mlserver_alibi_detect.py) without its pins (numpy<2, pandas<3, numba<0.60, Pillow<11),
# which would downgrade the whole suite's numpy and pandas, beside the modules it imports here (transformers:
# because torch is installed; numba: its online detectors). About 370 MB (llvmlite, transformers), ~35 s; the
# tests skip where it is absent, so deleting these two lines only skips them.
.venv/bin/python -m pip install -q "dill<0.4" catalogue toml tqdm "transformers>=4,<5" "numba>=0.60" 2>&1 | grep -vE "^WARNING: Location|dependency (resolver|conflicts)|^alibi-detect .* requires" || true
.venv/bin/python -m pip install -q --no-deps "alibi-detect>=0.13,<0.14" 2>&1 | grep -v "^WARNING: Location" || true
# alibi (tests/test_mlserver_alibi_explain.py) the same way, without its pins (numpy<2, pandas<3, Pillow<11, shap<0.44,
# which does not run on numpy 2), beside what it imports: spacy (alibi.utils imports it), scikit-image (AnchorImage),
# shap (KernelShap, TreeShap). About 240 MB, ~20 s; only new packages. The tests skip where alibi is absent.
.venv/bin/python -m pip install -q spacy "scikit-image>=0.22" "shap>=0.46" 2>&1 | grep -vE "^WARNING: Location|dependency (resolver|conflicts)|^alibi(-detect)? .* requires" || true
.venv/bin/python -m pip install -q --no-deps "alibi>=0.9.6,<0.10" 2>&1 | grep -v "^WARNING: Location" || true
# pyspark (tests/test_mlserver_mllib.py, gpuserve[mllib]): about 490 MB, ~35 s the first time (pip builds its wheel from
# the sdist, then reuses it), ~7 s after. Its tests also need Java 17+ and skip without pyspark or java.
.venv/bin/python -m pip install -q "pyspark>=4.0,<5" 2>&1 | grep -v "^WARNING: Location" || true
# Triton's perf_analyzer (tests/test_perf_analyzer.py): the binary of tritonclient 2.48's wheel (14 MB download),
# libb64 from Debian and libcudart from PyPI, ~10 s; where it does not install, its tests skip.
bash scripts/install_perf_analyzer.sh .venv || echo "test.sh: perf_analyzer not installed; its tests will skip" >&2
.venv/bin/python -c "import gpuserve, onnxruntime, fastapi, grpc, tritonclient.http, torch" || {
    echo "test.sh: dependencies failed to install" >&2; exit 1; }

echo "== import contracts"
PYTHON="$root/.venv/bin/python" bash scripts/lint_imports.sh 2>&1 | grep -vE "BuildBackendWarning|return '\\\\n'.join" | tail -12
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "test.sh: import contracts broken" >&2; exit 1; }

echo "== tests"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
status=$?
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
