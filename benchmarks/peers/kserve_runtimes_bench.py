"""KServe's own sklearnserver (its source, on the kserve SDK in .peers/kserve) against gpuserve's `sklearnserver`
command (gpuserve/kserve_runtimes.py) with the same launch line and model: KServe's quickstart iris classifier,
`POST /v1/models/sklearn-iris:predict` with two rows, the same closed-loop generator (benchmarks/loadgen.py's
builtin) at each concurrency, servers in turn, `--rounds` times; beside them the in-process limit (the model's
predict called directly). A benchmark, not a test; set up as benchmarks/peers/kserve_runtimes_conformance.py says.

    .venv/bin/python benchmarks/peers/kserve_runtimes_bench.py --kserve-src /tmp/kserve/python [--concurrency 1,8,32]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import closed_loop  # noqa: E402
from harness import ServerProcess, free_port  # noqa: E402
from kserve_runtimes_conformance import PYTHONS, ROWS, build_models  # noqa: E402

BODY = json.dumps({"instances": ROWS}).encode()


def direct_rate(model_dir: Path, seconds: float = 2.0) -> float:
    import joblib

    model = joblib.load(model_dir / "model.joblib")
    import numpy as np

    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.predict(np.array(ROWS))
        done += 1
    return done / (time.perf_counter() - start)


def start(server: str, src: Path, model_dir: Path, work: Path) -> ServerProcess:
    http, grpc = free_port(), free_port()
    flags = ["--model_name", "sklearn-iris", "--model_dir", str(model_dir), "--http_port", str(http),
             "--grpc_port", str(grpc)]
    if server == "kserve":
        cmd, env = [str(PYTHONS["kserve"]), "-m", "sklearnserver", *flags, "--enable_grpc", "false"], \
            {"PYTHONPATH": str(src / "sklearnserver")}
    else:
        cmd, env = [str(PYTHONS["gpuserve"]), "-m", "gpuserve.kserve_runtimes", "sklearnserver", *flags], {}
    process = ServerProcess(server, cmd, work / f"{server}.log", env=env).start()
    process.base = f"http://127.0.0.1:{http}"
    process.wait_ready([f"{process.base}/v1/models/sklearn-iris"], timeout=120)
    return process


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kserve-src", type=Path, required=True, help="KServe's python/ folder (its runtimes)")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    concurrency = [int(c) for c in args.concurrency.split(",")]
    servers = ["kserve", "gpuserve"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = build_models(work / "models")["sklearn"]
        limit = direct_rate(model_dir)
        results = closed_loop.measure(servers, lambda server: start(server, args.kserve_src, model_dir, work),
                                      "/v1/models/sklearn-iris:predict", BODY,
                                      lambda answer: json.loads(answer)["predictions"] == [1, 1], concurrency,
                                      args.seconds, args.rounds)
    closed_loop.report(results, servers, concurrency, args.seconds, args.rounds, "kserve_runtimes_bench.py",
                       f"In-process limit (the model's predict on the two rows): {limit:,.0f} calls/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
