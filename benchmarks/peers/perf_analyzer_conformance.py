"""Triton's perf_analyzer against real Triton 2.51 and against gpuserve, flag set by flag set: does each run
end the same way (exit status and error line), and does each server's section add up alike (inferences per
execution for `-b`). Not a test (tests/test_perf_analyzer.py is the one CI runs, against gpuserve alone):

    .venv/bin/python benchmarks/peers/perf_analyzer_conformance.py [--seconds 0.5]

Needs the Triton peer venv (bash benchmarks/peers/setup.sh triton) and perf_analyzer
(bash scripts/install_perf_analyzer.sh). Both servers serve conformance.py's `simple` and `strings` models
(Triton through PyTriton's Python bindings, gpuserve the same functions as ONNX models), so throughput is not
compared here: python_backend_bench.py --generator perf_analyzer does that on equal models.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import loadgen  # noqa: E402
from peers import conformance  # noqa: E402

# (name, flags, protocol): {http}/{grpc}/{metrics} are each server's ports
CASES = [
    ("http sync", "-m simple", "http"),
    ("grpc sync", "-m simple", "grpc"),
    ("http -b 4", "-m simple -b 4", "http"),
    ("http async c=8", "-m simple -a --concurrency-range 8", "http"),
    ("grpc async c=8", "-m simple -a --concurrency-range 8", "grpc"),
    ("grpc streaming c=4", "-m simple --streaming --concurrency-range 4", "grpc"),
    ("http system shm", "-m simple --shared-memory system", "http"),
    ("grpc system shm, outputs too", "-m simple --shared-memory system --output-shared-memory-size 64", "grpc"),
    ("http strings shm", "-m strings --shared-memory system --output-shared-memory-size 256", "http"),
    ("grpc strings fixed", "-m strings --string-data hello", "grpc"),
    ("http strings random", "-m strings --string-length 12", "http"),
    ("http request rate 300", "-m simple --request-rate-range 300", "http"),
    ("http zero data, version 1", "-m simple --input-data zero -x 1", "http"),
    ("http metrics + csv", "-m simple --collect-metrics --metrics-url 127.0.0.1:{metrics}/metrics -f {csv}", "http"),
    ("http cuda shm (no GPU here)", "-m simple --shared-memory cuda", "http"),
    ("http missing model", "-m nope", "http"),
    ("grpc missing version", "-m simple -x 7", "grpc"),
]


def outcome(server, flags: str, protocol: str, seconds: float, tmp: Path) -> str:
    args = flags.format(metrics=server.metrics, csv=tmp / f"{server.name}.csv").split()
    port = server.grpc if protocol == "grpc" else server.http
    cmd = [loadgen.perf_analyzer_path(), *args, "-u", f"127.0.0.1:{port}", "-i", protocol,
           "--measurement-interval", str(int(seconds * 1000)), "--stability-percentage", "999", "--max-trials", "3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        error = next((line.strip() for line in out.splitlines() if "rror" in line), out.strip()[-160:])
        return f"rc {proc.returncode}: {re.sub(r'127.0.0.1:[0-9]+', 'HOST', error)[:160]}"
    inferences = re.findall(r"Inference count: (\d+)", out)
    requests = re.findall(r"Successful request count: (\d+)", out)
    per_request = int(inferences[-1]) / max(int(requests[-1]), 1) if inferences and requests else float("nan")
    return f"ok, server section {'yes' if 'Server:' in out else 'NO'}, {per_request:.0f} inferences a request"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=0.5, help="measurement window (three per run)")
    args = parser.parse_args()
    if not loadgen.perf_analyzer_path():
        print("perf_analyzer is not installed: bash scripts/install_perf_analyzer.sh", file=sys.stderr)
        return 2
    if not conformance.TRITON_PYTHON.exists():
        print("no Triton venv: bash benchmarks/peers/setup.sh triton", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="pa-conformance-"))
    conformance.build_repository(work / "repo")
    triton = conformance.Server("triton", [str(conformance.TRITON_PYTHON), conformance.__file__, "--serve-triton",
                                           "--http-port", "{http}", "--grpc-port", "{grpc}", "--metrics-port",
                                           "{metrics}"], work / "triton.log")
    ours = conformance.Server("gpuserve", [str(conformance.GPUSERVE), "start", str(work / "repo"), "--host",
                                           "127.0.0.1", "--http-port", "{http}", "--grpc-port", "{grpc}",
                                           "--metrics-port", "{metrics}"], work / "gpuserve.log")
    ready = ["/v2/health/ready", "/v2/models/simple/ready", "/v2/models/strings/ready"]
    differ = 0
    try:
        triton.start()
        ours.start()
        triton.wait(ready)
        ours.wait(ready)
        for name, flags, protocol in CASES:
            answers = [outcome(server, flags, protocol, args.seconds, work) for server in (triton, ours)]
            same = answers[0] == answers[1]
            differ += not same
            print(f"{'same  ' if same else 'DIFFER'} {name:30} triton: {answers[0]}"
                  + ("" if same else f"\n{'':38}gpuserve: {answers[1]}"), flush=True)
    finally:
        triton.stop()
        ours.stop()
    print(f"{len(CASES)} cases, {differ} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
