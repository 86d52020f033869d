"""KServe's own sklearnserver, xgbserver and lgbserver (from KServe's source, on the kserve SDK in .peers/kserve)
against gpuserve's commands of the same names (gpuserve/kserve_runtimes.py), the same launch line and requests to
both: V1 and V2 predictions, PREDICT_PROBA, records with feature names, wrong widths, empty instances, model
metadata, an unknown model, and a folder of model folders (multi-model). Status and JSON bodies side by side.
Not a test; run by hand after

    bash benchmarks/peers/setup.sh kserve
    .peers/kserve/bin/pip install kserve-storage==0.21.0 scikit-learn joblib xgboost lightgbm
    git clone --depth 1 https://github.com/kserve/kserve /tmp/kserve   # KServe's runtimes live in its repo only
    .venv/bin/python benchmarks/peers/kserve_runtimes_conformance.py --kserve-src /tmp/kserve/python

Differences kept on purpose are in KEPT with their reasons; the rest are to fix.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kserve_conformance import PYTHONS, drop_nulls, free_port, http  # noqa: E402

KEPT: dict = {}


def build_models(root: Path) -> dict:
    """An iris classifier for each framework, and a folder of two scikit-learn models (multi-model)."""
    code = f"""
import os, joblib, numpy as np, xgboost as xgb, lightgbm as lgb
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True)
root = {str(root)!r}
for d in ("sklearn", "xgb", "lgb", "multi/first", "multi/second"):
    os.makedirs(os.path.join(root, d), exist_ok=True)
joblib.dump(LogisticRegression(max_iter=500).fit(X, y), os.path.join(root, "sklearn", "model.joblib"))
joblib.dump(LogisticRegression(max_iter=500).fit(X, y), os.path.join(root, "multi/first", "model.joblib"))
joblib.dump(LogisticRegression(max_iter=500, C=0.01).fit(X, y), os.path.join(root, "multi/second", "model.pkl"))
xgb.train({{"objective": "multi:softprob", "num_class": 3, "max_depth": 3}}, xgb.DMatrix(X, label=y),
          10).save_model(os.path.join(root, "xgb", "model.json"))
import pandas as pd
frame = pd.DataFrame(X, columns=["sepal_length", "sepal_width", "petal_length", "petal_width"])
lgb.train({{"objective": "multiclass", "num_class": 3, "verbose": -1}}, lgb.Dataset(frame, label=y),
          10).save_model(os.path.join(root, "lgb", "model.bst"))
"""
    subprocess.run([str(PYTHONS["gpuserve"]), "-c", code], check=True)
    return {"sklearn": root / "sklearn", "xgb": root / "xgb", "lgb": root / "lgb", "multi": root / "multi"}


ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]
V2 = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": sum(ROWS, [])}]}
RECORDS = [{"sepal_length": 6.8, "sepal_width": 2.8, "petal_length": 4.8, "petal_width": 1.4}]


def cases(name: str) -> list:
    """(label, method, path, body) for a model served as `name`."""
    v1, v2 = f"/v1/models/{name}:predict", f"/v2/models/{name}/infer"
    return [
        ("V1 instances", "POST", v1, {"instances": ROWS}),
        ("V1 inputs", "POST", v1, {"inputs": ROWS}),
        ("V2 FP32", "POST", v2, V2),
        ("V2 FP64", "POST", v2, {"inputs": [{**V2["inputs"][0], "datatype": "FP64"}]}),
        ("V1 records", "POST", v1, {"instances": RECORDS}),
        ("V1 wrong width", "POST", v1, {"instances": [[1.0, 2.0]]}),
        ("V1 empty", "POST", v1, {"instances": []}),
        ("V2 wrong width", "POST", v2, {"inputs": [{"name": "input-0", "shape": [1, 2], "datatype": "FP32",
                                                    "data": [1.0, 2.0]}]}),
        ("V1 model ready", "GET", f"/v1/models/{name}", None),
        ("V2 model ready", "GET", f"/v2/models/{name}/ready", None),
        ("unknown model", "POST", "/v1/models/nope:predict", {"instances": ROWS}),
    ]


def launch(server: str, runtime: str, src: Path, model_dir: Path, name: str, work: Path, env_extra: dict):
    port, grpc = free_port(), free_port()
    if server == "kserve":
        cmd = [str(PYTHONS["kserve"]), "-m", runtime]
        env = {**os.environ, "PYTHONPATH": str(src / runtime)}
    else:
        cmd = [str(PYTHONS["gpuserve"]), "-m", "gpuserve.kserve_runtimes", runtime]
        env = dict(os.environ)
    env.update(env_extra)
    cmd += ["--model_name", name, "--model_dir", str(model_dir), "--http_port", str(port), "--grpc_port", str(grpc)]
    log = open(work / f"{server}-{runtime}-{port}.log", "w")
    proc = subprocess.Popen(cmd, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{server} {runtime} exited early (log: {log.name})")
        try:
            if http(port, "GET", "/v2/health/live")[0] == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{server} {runtime} not live after 90 s")


def normal(outcome):
    status, body, _ = outcome
    if isinstance(body, dict):
        body = {k: v for k, v in drop_nulls(body).items() if k != "id"}
    return [status, body]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kserve-src", type=Path, required=True, help="KServe's python/ folder (its runtimes)")
    parser.add_argument("-v", action="store_true", help="print the cases that agree too")
    args = parser.parse_args()
    same = differ = kept = 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = build_models(work / "models")
        runs = [("sklearnserver", models["sklearn"], "sklearn-iris", {}, cases("sklearn-iris")),
                ("sklearnserver", models["sklearn"], "sklearn-iris", {"PREDICT_PROBA": "true"},
                 cases("sklearn-iris")[:3]),
                ("xgbserver", models["xgb"], "xgb-iris", {}, cases("xgb-iris")),
                ("lgbserver", models["lgb"], "lgb-iris", {}, cases("lgb-iris")),
                ("sklearnserver", models["multi"], "absent", {},
                 cases("first")[:1] + cases("second")[:1] + [("multi: the named model", "GET", "/v1/models/absent",
                                                              None)])]
        for runtime, model_dir, name, env, checks in runs:
            procs = {}
            try:
                for server in ("kserve", "gpuserve"):
                    procs[server] = launch(server, runtime, args.kserve_src, model_dir, name, work, env)
                for label, method, path, body in checks:
                    outcomes = {server: normal(http(port, method, path, body)) for server, (_, port) in procs.items()}
                    key = f"{runtime}{' ' + json.dumps(env) if env else ''}: {label}"
                    if outcomes["kserve"] == outcomes["gpuserve"]:
                        same += 1
                        if args.v:
                            print(f"[  same] {key}: {outcomes['kserve']}")
                    elif key in KEPT:
                        kept += 1
                        print(f"[  KEPT] {key}: {KEPT[key]}")
                    else:
                        differ += 1
                        print(f"[DIFFER] {key}\n   kserve:   {outcomes['kserve']}\n   gpuserve: {outcomes['gpuserve']}")
            finally:
                for proc, _ in procs.values():
                    proc.terminate()
                    proc.wait(30)
    print(f"{same + differ + kept} cases: {same} the same, {kept} kept on purpose, {differ} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
