"""The per-framework benchmark (benchmarks/backend_bench.py) in a few seconds: it builds each model,
serves it through the DataPlane and engine, and its rows carry positive rates and ratios. Speed itself
is measured by hand (benchmarks/RESULTS.md), never asserted here."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_backend_bench_smoke(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "backend_bench.py"), "--only",
                          "onnxruntime,torch.export,fil-xgboost", "--batches", "1,4", "--concurrency", "1,2", "--seconds", "0.05",
                          "--rounds", "1", "--json", str(tmp_path / "bench.json")],
                         capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    rows = {(r["framework"], r["batch"]): r for r in report["rows"]}
    expected = {("onnxruntime", 1), ("onnxruntime", 4)}
    for optional in ("torch.export", "fil-xgboost"):
        if any(r["framework"] == optional for r in report["rows"]):
            expected |= {(optional, 1), (optional, 4)}
    assert set(rows) == expected
    for row in rows.values():
        assert row["direct"] > 0 and row["served_c1"] > 0 and row["served_c2"] > 0 and row["ratio_c2"] > 0
    assert report["device"] == "cpu" and "cores" in report["machine"]


def test_gap_bench_smoke(tmp_path):
    """benchmarks/gap_bench.py (a framework call after a gap, issue 6's batch-1 explanation) runs and
    prints one line per batch and round with every gap it was asked for."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gap_bench.py"), "--batches", "1,2", "--gaps",
                          "0,30", "--calls", "5", "--rounds", "1"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("B=")]
    assert [line.split(" round")[0] for line in lines] == ["B=1", "B=2"]
    assert all("gap 0 us:" in line and "gap 30 us:" in line and "8 MB touched:" in line for line in lines)
