"""MLServer's scikit-learn, XGBoost and LightGBM runtimes (mlserver-sklearn / -xgboost / -lightgbm 1.7.1)
against gpuserve on one folder of tiny models (.joblib scikit-learn forests, alone and ending a Pipeline,
.json/.ubj/.bst XGBoost files, .bst LightGBM files, model-settings.json naming `mlserver_sklearn.SKLearnModel`,
`mlserver_xgboost.XGBoostModel` / `mlserver_lightgbm.LightGBMModel`): the same V2 and V1 requests to both,
status and body side by side (values rounded to 5 digits). Not a test; run by hand after

    bash benchmarks/peers/setup.sh mlserver
    .peers/mlserver/bin/pip install --no-deps mlserver-sklearn==1.7.1 mlserver-xgboost==1.7.1 mlserver-lightgbm==1.7.1
    .peers/mlserver/bin/pip install xgboost-cpu lightgbm scikit-learn joblib   # not the NCCL-sized xgboost

    .venv/bin/python benchmarks/peers/classic_conformance.py

Compared: status, output names, datatypes, shapes and values, the keys of error bodies (MLServer's empty
top-level `"parameters": {}` is left aside). Differences seen on 2026-11-25, kept on purpose: a
wrong feature count is MLServer's 500, gpuserve's 400; MLServer serves no V1 (404); MLServer's LightGBM
runtime ignores the requested outputs and answers `predict` to a request for `predict_proba`, gpuserve
answers 400 (LightGBM only has `predict`). Outputs (names, datatypes, shapes, values) are the same.
Last run 2026-12-04 (session 7, after gpuserve's forest, XGBoost and LightGBM fast paths): 35 cases, the
18 differences are exactly those (7 wrong widths, 7 V1, 4 LightGBM `predict_proba`); scikit-learn's
forest and Pipeline answer as MLServer's runtime does.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
MLSERVER = ROOT / ".peers" / "mlserver" / "bin" / "mlserver"
GPUSERVE = ROOT / ".venv" / "bin" / "gpuserve"
NAMES = ["skl-forest", "skl-pipeline", "xgb-clf", "xgb-booster", "xgb-reg", "lgb-multi", "lgb-binary"]


def build(root: Path) -> None:
    import joblib
    import lightgbm as lgb
    import xgboost as xgb
    from sklearn.ensemble import ExtraTreesRegressor, RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(11)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    multi = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.3).astype(int)
    binary = (x[:, 0] + x[:, 2] > 0).astype(int)
    target = (2 * x[:, 0] - x[:, 3]).astype(np.float32)

    def folder(name, settings, save, filename):
        (root / name).mkdir(parents=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # xgboost: .bst is written as UBJSON
            save(str(root / name / filename))
        (root / name / "model-settings.json").write_text(json.dumps({"name": name, **settings}))

    skl_impl = {"implementation": "mlserver_sklearn.SKLearnModel"}
    folder("skl-forest", skl_impl, lambda p: joblib.dump(
        RandomForestClassifier(n_estimators=8, max_depth=4, random_state=0).fit(x, multi), p), "model.joblib")
    folder("skl-pipeline", skl_impl, lambda p: joblib.dump(
        make_pipeline(StandardScaler(), ExtraTreesRegressor(n_estimators=5, random_state=0)).fit(x, target), p),
        "model.joblib")
    xgb_impl = {"implementation": "mlserver_xgboost.XGBoostModel"}
    lgb_impl = {"implementation": "mlserver_lightgbm.LightGBMModel"}
    folder("xgb-clf", xgb_impl, xgb.XGBClassifier(n_estimators=6, max_depth=2).fit(x, multi).save_model, "model.json")
    folder("xgb-booster", xgb_impl, xgb.train({"objective": "binary:logistic", "max_depth": 2},
                                              xgb.DMatrix(x, label=binary), 6).save_model, "model.ubj")
    folder("xgb-reg", {**xgb_impl, "parameters": {"uri": "./regressor.bst", "version": "v0.1.0"}},
           xgb.XGBRegressor(n_estimators=6, max_depth=2).fit(x, target).save_model, "regressor.bst")
    params = {"num_leaves": 4, "min_data_in_leaf": 5, "verbose": -1}
    folder("lgb-multi", lgb_impl, lgb.train({**params, "objective": "multiclass", "num_class": 3},
                                            lgb.Dataset(x, label=multi), 5).save_model, "model.bst")
    folder("lgb-binary", {**lgb_impl, "parameters": {"uri": "./iris-lightgbm.bst"}},
           lgb.train({**params, "objective": "binary"}, lgb.Dataset(x, label=binary), 5).save_model,
           "iris-lightgbm.bst")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, proc, timeout=120):
    start = time.time()
    while time.time() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"a server exited early ({proc.args[0]})")
        try:
            if all(urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/{n}/ready", timeout=2).status == 200
                   for n in NAMES):
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"not ready after {timeout} s ({proc.args[0]})")


def post(port, path, body):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def comparable(body):
    rounded = lambda v: np.round(np.asarray(v, dtype=float), 5).tolist()  # noqa: E731
    if isinstance(body, dict) and "outputs" in body:  # MLServer's empty top-level "parameters" aside
        outputs = [{k: rounded(v) if k == "data" else v for k, v in o.items()} for o in body["outputs"]]
        return {"outputs": outputs, **{k: v for k, v in body.items()
                                       if k not in ("outputs", "id") and not (k == "parameters" and v == {})}}
    if isinstance(body, dict) and "predictions" in body:
        return {"predictions": rounded(body["predictions"])}
    if isinstance(body, dict):  # an error: its keys, not its words
        return sorted(body)
    return body


def main() -> int:
    if not MLSERVER.exists():
        print(__doc__)
        return 2
    work = Path(tempfile.mkdtemp(prefix="classic-"))
    build(work / "repo")
    q = np.random.default_rng(7).normal(size=(3, 4)).astype(np.float32)
    v2 = {"inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "FP32", "data": q.ravel().tolist()}]}
    cases = []
    for n in NAMES:
        path = f"/v2/models/{n}/infer"
        cases += [(n, "default", path, v2), (n, "predict_proba", path, {**v2, "outputs": [{"name": "predict_proba"}]}),
                  (n, "both", path, {**v2, "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}),
                  (n, "wrong width", path, {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                                                        "data": [1, 2, 3]}]}),
                  (n, "v1", f"/v1/models/{n}:predict", {"instances": q.tolist()})]
    ports = {"mlserver": free_port(), "gpuserve": free_port()}
    env = {**os.environ, "MLSERVER_HTTP_PORT": str(ports["mlserver"]), "MLSERVER_GRPC_PORT": str(free_port()),
           "MLSERVER_METRICS_PORT": str(free_port()), "PATH": f"{MLSERVER.parent}:{os.environ.get('PATH', '')}"}
    procs = {"mlserver": subprocess.Popen([str(MLSERVER), "start", str(work / "repo")], env=env,
                                          stdout=open(work / "mlserver.log", "w"), stderr=subprocess.STDOUT,
                                          start_new_session=True),
             "gpuserve": subprocess.Popen([str(GPUSERVE), "start", str(work / "repo"), "--host", "127.0.0.1",
                                           "--http-port", str(ports["gpuserve"]), "--grpc-port", str(free_port()),
                                           "--metrics-port", str(free_port())],
                                          stdout=open(work / "gpuserve.log", "w"), stderr=subprocess.STDOUT,
                                          start_new_session=True)}
    differ = 0
    try:
        for name, proc in procs.items():
            wait_ready(ports[name], proc)
        for model, what, path, body in cases:
            out = {name: [*post(port, path, body)] for name, port in ports.items()}
            out = {name: [status, comparable(answer)] for name, (status, answer) in out.items()}
            same = json.dumps(out["mlserver"], sort_keys=True) == json.dumps(out["gpuserve"], sort_keys=True)
            differ += not same
            print(("  same " if same else "DIFFER"), model, what)
            if not same:
                for name in out:
                    print(f"    {name:9s} {json.dumps(out[name], sort_keys=True)[:600]}")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
    print(f"\n{len(cases)} cases, {differ} differ (see the docstring for the ones kept on purpose)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
