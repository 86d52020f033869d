"""MLServer 1.7.1's HuggingFace runtime (mlserver-huggingface 1.7.1) against gpuserve's on one folder of models,
same load generator, same machine, one server at a time. A benchmark, not a test. Run after building MLServer's
side, .peers/mlserver-hf, as huggingface_conformance.py's docstring says (one pip command, then optimum 1.20):

    .venv/bin/python benchmarks/peers/huggingface_bench.py [--concurrency 1,8,32] [--seconds 4] [--rounds 2]

Models: tests/hf_models.py's BERT text classifier (random weights, built here, no download), served alone
(`cls`) and with MLServer's adaptive batching (`clsb`: max_batch_size 8, max_batch_time 2 ms), both through
`mlserver_huggingface.HuggingFaceRuntime` folders. Load: benchmarks/loadgen.py's closed-loop generator, one
text a V2 JSON request: as `args` (BYTES, content type `str`, as MLServer's HuggingFace examples send; MLServer
fails such requests once its adaptive batching merges them) and, to the batched model, as `array_inputs` (which
MLServer batches). Per point: req/s, p50/p99 and the server's CPU per request (its process group); the server
order alternates by round (the VM is noisy). Also the pipeline called directly in this process, one text a call:
the limit for `cls`. `--torch-threads N` sets OMP_NUM_THREADS for both servers (torch's CPU threads).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
import harness  # noqa: E402
import loadgen  # noqa: E402
from hf_models import TASKS, build_models, write_settings  # noqa: E402
from peers import classic_bench  # noqa: E402

MLSERVER = Path(os.environ.get("MLSERVER_HF", ROOT / ".peers" / "mlserver-hf" / "bin" / "mlserver"))
MODELS = {"cls": {}, "clsb": {"max_batch_size": 8, "max_batch_time": 0.002}}
POINTS = {"cls": ("cls", "args"), "clsb": ("clsb", "args"), "clsb-array": ("clsb", "array_inputs")}
TEXT = "the quick brown fox jumps over the lazy dog"
OUT = harness.RESULTS / "huggingface_bench.json"


def build(repo: Path) -> None:
    folders = build_models(repo / "_built", which=("cls",))
    for name, more in MODELS.items():
        shutil.copytree(folders["cls"], repo / name)
        write_settings(repo / name, name, TASKS["cls"], **more)
    shutil.rmtree(repo / "_built")


def target(base: str, model: str, input_name: str) -> loadgen.Target:
    body = json.dumps({"inputs": [{"name": input_name, "shape": [1], "datatype": "BYTES", "data": [TEXT],
                                   "parameters": {"content_type": "str"}}]}).encode()
    return loadgen.Target(f"{base}/v2/models/{model}/infer", body=body, headers={"Content-Type": "application/json"})


def direct_rate(folder: Path, seconds: float) -> float:
    """The pipeline's own calls per second on one text (what `cls` could answer with no server at all)."""
    from transformers import pipeline

    classify = pipeline(TASKS["cls"], model=str(folder), device=-1)
    classify(TEXT)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        classify(TEXT)
        done += 1
    return done / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--torch-threads", type=int, default=0, help="OMP_NUM_THREADS for both servers (0: unset)")
    args = parser.parse_args()
    if args.torch_threads:
        os.environ["OMP_NUM_THREADS"] = str(args.torch_threads)  # the servers inherit it (harness.ServerProcess)
    if not MLSERVER.exists():
        print(__doc__)
        return 2
    classic_bench.MLSERVER = MLSERVER  # its start() launches whichever MLServer this names
    concurrency = [int(c) for c in args.concurrency.split(",")]
    work = Path(tempfile.mkdtemp(prefix="hf-bench-"))
    build(work / "repo")
    rows: List[Dict] = []
    direct: List[float] = []
    for round_ in range(args.rounds):
        direct.append(direct_rate(work / "repo" / "cls", args.seconds / 2))
        print(json.dumps({"round": round_, "direct_calls_per_s": round(direct[-1], 1)}), flush=True)
        for server in (["mlserver", "gpuserve"] if round_ % 2 == 0 else ["gpuserve", "mlserver"]):
            process, base = classic_bench.start(server, work / "repo", work, list(MODELS))
            try:
                for label, (model, input_name) in POINTS.items():
                    for c in concurrency:
                        rows.append(classic_bench.measure(process, target(base, model, input_name), c, args,
                                                          round=round_, server=server, model=label))
            finally:
                process.stop()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "machine": harness.machine(), "direct_calls_per_s": direct, "rows": rows}, indent=1))
    print(f"direct pipeline calls/s (one text): {statistics.median(direct):,.0f}")
    print(classic_bench.table(rows, order=list(POINTS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
