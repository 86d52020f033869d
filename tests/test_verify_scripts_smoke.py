"""benchmarks/gpu/verify_all.sh and the scripts it runs, kept working where no GPU is: a GPU is lent to about one
session in twenty for 15 minutes, which a script broken since (an import moved, an option renamed) would waste.
Each script imports and parses its options; those with a CPU smoke mode run it end to end (their own checks of
the answers included); the shell script parses."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "benchmarks" / "gpu"
SCRIPTS = ["gpu_bench.py", "serve_gpu.py", "torch_path_costs.py", "kernel_bench.py", "graph_concurrency.py"]

torch = pytest.importorskip("torch")


def _run(args, tmp_path, timeout=240):
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-2000:])
    return out.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_gpu_script_imports_and_parses_its_options(script, tmp_path):
    assert "usage:" in _run([str(GPU / script), "--help"], tmp_path, timeout=120)


def test_verify_all_parses_and_names_every_script():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    assert subprocess.run([bash, "-n", str(GPU / "verify_all.sh")]).returncode == 0
    text = (GPU / "verify_all.sh").read_text()
    assert all(script in text for script in SCRIPTS)


def test_serve_gpu_cpu_smoke(tmp_path):
    """`gpuserve start` on the torch models (eager, CUDA graphs' settings) and ONNX, answers checked before
    and after the load, no request failing."""
    pytest.importorskip("grpc")
    stdout = _run([str(GPU / "serve_gpu.py"), "--device", "cpu", "--seconds", "0.2", "--concurrency", "1,4"], tmp_path)
    rows = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    loads = [row for row in rows if "protocol" in row]
    assert loads and all(row["errors"] == 0 and row["rps"] > 0 for row in loads)
    checked = [row for row in rows if "answers_after_load" in row]
    assert checked and all(row["answers_after_load"] == "all right" for row in checked)


def test_kernel_bench_cpu_smoke(tmp_path):
    stdout = _run([str(GPU / "kernel_bench.py"), "--device", "cpu", "--seconds", "0.3", "--json",
                   str(tmp_path / "k.json")], tmp_path)
    report = json.loads((tmp_path / "k.json").read_text())
    assert set(report["modes"]) == {"fp32", "uint8_host"} and "fp32" in stdout
    assert all(mode["engine_images_s"] > 0 for mode in report["modes"].values())
