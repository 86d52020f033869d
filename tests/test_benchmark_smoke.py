"""The load-test harness end to end in its smoke mode: it starts gpuserve through the launch line,
drives it with the built-in generator, reads the batch statistics and writes its tables (CI keeps
this a few seconds; full runs are by hand, see benchmarks/README.md)."""

import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_harness_smoke_mode(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_http.py"), "--smoke",
                          "--out", str(tmp_path / "http"), "--csv", str(tmp_path / "http.csv")],
                         capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "http.csv").open()))
    gpuserve = [r for r in rows if r["server"] == "gpuserve"]
    assert {r["concurrency"] for r in gpuserve} == {"1", "8"}
    assert all(float(r["rps"]) > 0 and int(r["errors"]) == 0 for r in gpuserve)
    table = (tmp_path / "http.md").read_text()
    assert "gpuserve" in table and "In-process limit" in table


def test_cache_bench_smoke(tmp_path):
    """benchmarks/cache_bench.py runs gpuserve through the launch line and answers both models without
    errors (its numbers are for RESULTS.md, never asserted here)."""
    import json

    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cache_bench.py"), "--servers", "gpuserve",
                          "--seconds", "0.3", "--warmup", "0.1", "--concurrency", "1,4"],
                         capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert {(r["model"], r["c"]) for r in rows} == {("mlp", 1), ("mlp", 4), ("mlp_cached", 1), ("mlp_cached", 4)}
    assert all(r["rps"] > 0 and r["errors"] == 0 for r in rows)
    assert "| gpuserve | mlp_cached |" in out.stdout


def test_path_after_model_smoke(tmp_path):
    """benchmarks/path_after_model.py times the served path after each kind of work (its numbers are for
    RESULTS.md; here only that it runs and reports every kind)."""
    import json

    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "path_after_model.py"), "--rounds", "1",
                          "--slice", "0.02"], capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    after = json.loads(out.stdout)["after"]
    assert set(after) == {"none", "ort", "ort_1thread", "numpy", "sleep"}
    assert all(row["path_us"] > 0 for row in after.values())
