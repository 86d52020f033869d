"""`import gpuserve` stays light: no framework, gRPC, NVML or web server modules until they are used."""

import subprocess
import sys

HEAVY = ["torch", "onnxruntime", "tensorrt", "cupy", "pynvml", "grpc", "uvicorn", "fastapi", "pandas",
         "gpuserve.server"]


def test_import_gpuserve_loads_nothing_heavy():
    code = ("import sys, gpuserve; from gpuserve import Model, InferRequest, InferInput, InferResponse, InferOutput; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_model_server_is_exported_lazily():
    code = "import gpuserve; print(gpuserve.ModelServer.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ModelServer", out.stderr
