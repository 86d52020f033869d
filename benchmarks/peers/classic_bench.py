"""MLServer 1.7.1's scikit-learn, XGBoost and LightGBM runtimes against gpuserve, same folder of models,
same load generator, same machine, one server at a time. A benchmark, not a test. Run after

    bash benchmarks/peers/setup.sh mlserver
    .peers/mlserver/bin/pip install --no-deps mlserver-sklearn==1.7.1 mlserver-xgboost==1.7.1 mlserver-lightgbm==1.7.1
    .peers/mlserver/bin/pip install xgboost-cpu lightgbm scikit-learn joblib   # not the NCCL-sized xgboost

    .venv/bin/python benchmarks/peers/classic_bench.py [--concurrency 1,8,32] [--seconds 4] [--rounds 2]

Models (written by `build`, 32 features, as tabular models are): a RandomForestClassifier (50 trees,
depth 8), an XGBClassifier (50 trees, depth 6) and a LightGBM binary booster (50 rounds), each in a
folder with a model-settings.json naming MLServer's runtime (`mlserver_sklearn.SKLearnModel`, ...),
which gpuserve serves with its own runtimes; and `mlflow`, the same forest saved by MLflow
(`mlserver_mlflow.MLflowRuntime`; MLServer's side needs `pip install --no-deps mlserver-mlflow==1.7.1`
and `pip install mlflow-skinny`). `--models mlflow` runs one model (the servers wait for those asked).
Load: benchmarks/loadgen.py's built-in closed-loop generator, V2 JSON (the protocol both speak over REST),
one row a request. Per point: req/s, p50/p99
and the server's CPU per request (its process group). Server order alternates by round (the VM is
noisy). Writes benchmarks/results/classic_bench.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import harness  # noqa: E402
import loadgen  # noqa: E402
from peers.classic_conformance import GPUSERVE, MLSERVER, free_port  # noqa: E402

FEATURES = 32
MODELS = {"forest": "mlserver_sklearn.SKLearnModel", "xgboost": "mlserver_xgboost.XGBoostModel",
          "lightgbm": "mlserver_lightgbm.LightGBMModel", "mlflow": "mlserver_mlflow.MLflowRuntime"}
OUT = harness.RESULTS / "classic_bench.json"


def build(root: Path) -> None:
    import joblib
    import lightgbm as lgb
    import xgboost as xgb
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(3)
    x = rng.normal(size=(5000, FEATURES)).astype(np.float32)
    y = (x[:, :4].sum(axis=1) + 0.5 * rng.normal(size=len(x)) > 0).astype(int)
    savers = {
        "forest": ("model.joblib", lambda p: joblib.dump(
            RandomForestClassifier(n_estimators=50, max_depth=8, random_state=0, n_jobs=1).fit(x, y), p)),
        "xgboost": ("model.json", xgb.XGBClassifier(n_estimators=50, max_depth=6, nthread=1).fit(x, y).save_model),
        "lightgbm": ("model.bst", lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1},
                                            lgb.Dataset(x, y), num_boost_round=50).save_model),
    }
    for name, (filename, save) in savers.items():
        (root / name).mkdir(parents=True)
        save(str(root / name / filename))
        (root / name / "model-settings.json").write_text(json.dumps({"name": name, "implementation": MODELS[name]}))
    # the same forest saved by MLflow (scikit-learn flavour, its tensor signature), served through mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.models import infer_signature

    forest = joblib.load(root / "forest" / "model.joblib")
    mlflow.sklearn.save_model(forest, str(root / "mlflow" / "model"), serialization_format="cloudpickle",
                              signature=infer_signature(x, forest.predict(x)))
    (root / "mlflow" / "model-settings.json").write_text(json.dumps({
        "name": "mlflow", "implementation": MODELS["mlflow"], "parameters": {"uri": "./model"}}))


def start(server: str, repo: Path, work: Path, models: List[str]):
    port = free_port()
    if server == "mlserver":
        env = {"MLSERVER_HTTP_PORT": str(port), "MLSERVER_GRPC_PORT": str(free_port()),
               "MLSERVER_METRICS_PORT": str(free_port()), "PATH": f"{MLSERVER.parent}:{os.environ.get('PATH', '')}"}
        command = [str(MLSERVER), "start", str(repo)]
    else:
        env = {}
        command = [str(GPUSERVE), "start", str(repo), "--host", "127.0.0.1", "--http-port", str(port),
                   "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
    # in the scratch folder: MLServer writes its metrics' `.metrics` folder where it starts
    process = harness.ServerProcess(server, command, work / f"{server}.log", env=env, cwd=work).start()
    base = f"http://127.0.0.1:{port}"
    process.wait_ready([f"{base}/v2/models/{name}/ready" for name in models])
    return process, base


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    if not MLSERVER.exists():
        print(__doc__)
        return 2
    concurrency = [int(c) for c in args.concurrency.split(",")]
    models = [m for m in args.models.split(",") if m]
    work = Path(tempfile.mkdtemp(prefix="classic-bench-"))
    build(work / "repo")
    rows: List[Dict] = []
    for round_ in range(args.rounds):
        for server in (["mlserver", "gpuserve"] if round_ % 2 == 0 else ["gpuserve", "mlserver"]):
            process, base = start(server, work / "repo", work, models)
            try:
                for model in models:
                    target = loadgen.make_target(base, model, "v2-json", "input-0", [1, FEATURES])
                    for c in concurrency:
                        rows.append(measure(process, target, c, args, round=round_, server=server, model=model))
            finally:
                process.stop()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "machine": harness.machine(), "rows": rows}, indent=1))
    print(table(rows))
    return 0


def measure(process, target: loadgen.Target, concurrency: int, args, **labels) -> Dict:
    """One point: a warm-up, then `args.seconds` of closed-loop load; req/s, latency and the server's CPU per
    request (its process group), printed and returned with `labels` in front."""
    loadgen.run_builtin(target, concurrency, args.warmup, warmup=0)  # warm-up, not counted
    cpu0 = harness._group_seconds(process.proc.pid)
    result = loadgen.run_builtin(target, concurrency, args.seconds, warmup=0)
    cpu = harness._group_seconds(process.proc.pid) - cpu0
    row = {**labels, "concurrency": concurrency, "rps": round(result.rps, 1), "p50_ms": round(result.p50_ms, 2),
           "p99_ms": round(result.p99_ms, 2), "errors": result.errors,
           "cpu_us_per_request": round(cpu / max(result.requests, 1) * 1e6, 1)}
    print(json.dumps(row), flush=True)
    return row


def table(rows: List[Dict], order: Optional[List[str]] = None) -> str:
    """A Markdown table of the rows, one line per model and concurrency; models in `order` (default: MODELS')."""
    order = order or list(MODELS)
    lines = ["| model | c | gpuserve req/s | MLServer req/s | ratio | p99 ms gpuserve / MLServer | "
             "CPU us a request gpuserve / MLServer |", "|---|---:|---:|---:|---:|---:|---:|"]
    keys = sorted({(r["model"], r["concurrency"]) for r in rows}, key=lambda k: (order.index(k[0]), k[1]))
    for model, c in keys:
        mine = [r for r in rows if (r["model"], r["concurrency"], r["server"]) == (model, c, "gpuserve")]
        peer = [r for r in rows if (r["model"], r["concurrency"], r["server"]) == (model, c, "mlserver")]
        span = lambda rs, k: "-".join(f"{v:,.{0 if k != 'p99_ms' else 1}f}"  # noqa: E731
                                      for v in sorted({min(r[k] for r in rs), max(r[k] for r in rs)}))
        ratios = [a["rps"] / b["rps"] for a, b in zip(mine, peer) if b["rps"]]
        ratio = "-".join(f"{v:.1f}x" for v in sorted({min(ratios), max(ratios)})) if ratios else "-"
        lines.append(f"| {model} | {c} | {span(mine, 'rps')} | {span(peer, 'rps')} | {ratio} | "
                     f"{span(mine, 'p99_ms')} / {span(peer, 'p99_ms')} | "
                     f"{span(mine, 'cpu_us_per_request')} / {span(peer, 'cpu_us_per_request')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
