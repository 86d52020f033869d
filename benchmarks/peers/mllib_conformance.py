"""MLServer's Spark MLlib runtime (mlserver 1.7.1 + mlserver-mllib 1.7.1) against gpuserve's
(gpuserve/runtimes_mllib.py) on one folder of `pyspark.mllib` models saved here: the same V2 requests (REST, and
gRPC ModelInfer) to both, status and body side by side (values rounded to 5 digits, error bodies compared by their
keys, a plain-text error by its last line). Not a test; run by hand after

    python3 -m venv .peers/mlserver-ml
    .peers/mlserver-ml/bin/pip install mlserver==1.7.1 uvloop==0.21.0 "pyspark>=4,<5"
    .peers/mlserver-ml/bin/pip install --no-deps mlserver-mllib==1.7.1

    .venv/bin/python benchmarks/peers/mllib_conformance.py   # a venv with gpuserve[mllib]; Java 17+ on PATH

Three runs, each a fresh server of each kind, as MLServer loads one MLlib model per process (its runtime starts a
SparkContext per model; the second load fails): LogisticRegression at start (the bad requests, then the repository
loading a RandomForest beside it, a broken folder, an unknown and a missing `format`), IsotonicRegression at start,
RandomForest at start, and none at start (then a `format` unknown, missing, a broken folder, and LogisticRegression
loaded through the repository API in turn).

Last run 2026-12-07 (no GPU; this session's machine, pyspark 4.3.0 both sides, OpenJDK 17): 28 cases, 3 the same
(metadata; two inputs: 400 with MLServer's words over REST, INVALID_ARGUMENT over gRPC). MLServer 1.7.1's runtime
answers no prediction: every LogisticRegression and RandomForest request is a 500 (plain-text traceback; gRPC
INTERNAL) "Cannot convert type <class 'mlserver.types.dataplane.TensorData'> into Vector", as it hands pyspark the
TensorData object; IsotonicRegression is a 500 over REST (pydantic cannot serialize the ndarray np.interp returns)
and over gRPC answers shape [1] holding 4 values. gpuserve answers each with the model's own predictions: shape [1]
for one vector, [n] for n rows (isotonic: one per number), FP32; a wrong width or BYTES is a 400 (MLServer 500).
A second MLlib model fails to load in MLServer ("Cannot run multiple SparkContexts at once", 500; then 404 on infer);
so does every MLlib load after a failed one (its runtime starts the SparkContext before reading `format` and never
stops it), so a server whose first MLlib load had an unknown `format` serves no MLlib model again. gpuserve loads
them all on one context. An unknown `format` as the first load: MLServer 400 "Invalid MLlib format for model
word2vec", gpuserve 500 with the same words plus the format and the known ones (gpuserve's rule: a failed
repository load is a 500); a model that failed to load answers 503 on ready and infer (MLServer forgot it: 404).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers.mlserver_conformance import call_json, free_ports, start, stop, wait_until_ready  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MLSERVER = ROOT / ".peers" / "mlserver-ml" / "bin" / "mlserver"
GPUSERVE = Path(sys.executable).parent / "gpuserve"
RUNTIME = "mlserver_mllib.MLlibModel"
FORMATS = {"lr": "LogisticRegression", "forest": "RandomForest", "isotonic": "IsotonicRegression",
           "broken": "LogisticRegression", "word2vec": "Word2Vec", "no-format": None}
ROWS = np.round(np.random.default_rng(8).normal(size=(3, 4)), 3)


def build(root: Path) -> None:
    from pyspark.mllib.classification import LogisticRegressionModel
    from pyspark.mllib.regression import IsotonicRegressionModel, LabeledPoint
    from pyspark.mllib.tree import RandomForest

    from gpuserve.runtimes_mllib import SPARK

    sc = SPARK.acquire()
    rng = np.random.default_rng(7)
    x = rng.normal(size=(40, 4))
    points = sc.parallelize([LabeledPoint(float(row[0] + row[1] > 0), row) for row in x], 1)
    models = {"lr": LogisticRegressionModel([1.5, 1.2, -0.3, 0.1], 0.2, 4, 2),
              "forest": RandomForest.trainRegressor(points, {}, numTrees=3, maxDepth=3, seed=1),
              "isotonic": IsotonicRegressionModel(np.array([-1.0, 0.0, 1.0]), np.array([0.0, 0.5, 2.0]), True)}
    for name, model in models.items():
        model.save(sc, str(root / name / "model"))
    models.clear()
    SPARK.release()
    (root / "broken" / "model").mkdir(parents=True)
    (root / "broken" / "model" / "metadata").write_text("not a saved model\n")
    for name in ("word2vec", "no-format"):
        shutil.copytree(root / "lr" / "model", root / name / "model")
    for name, fmt in FORMATS.items():
        parameters = {"uri": "./model", **({"format": fmt} if fmt else {})}
        (root / name / "model-settings.json").write_text(json.dumps({"name": name, "implementation": RUNTIME,
                                                                     "parameters": parameters}))


def tensor(values, datatype="FP64", name="x"):
    values = np.asarray(values)
    return {"name": name, "shape": list(values.shape), "datatype": datatype, "data": values.ravel().tolist()}


RUNS = {
    "lr": [("metadata lr", "GET", "/v2/models/lr", None),
           ("lr one vector [4]", "POST", "/v2/models/lr/infer", {"inputs": [tensor(ROWS[0])]}),
           ("lr one row [1,4] FP32", "POST", "/v2/models/lr/infer", {"inputs": [tensor(ROWS[:1], "FP32")]}),
           ("lr three rows [3,4]", "POST", "/v2/models/lr/infer", {"inputs": [tensor(ROWS)]}),
           ("lr two inputs", "POST", "/v2/models/lr/infer",
            {"inputs": [tensor(ROWS[0]), tensor(ROWS[0], name="y")]}),
           ("lr wrong width [3]", "POST", "/v2/models/lr/infer", {"inputs": [tensor(ROWS[0, :3])]}),
           ("lr BYTES", "POST", "/v2/models/lr/infer",
            {"inputs": [{"name": "x", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]}),
           ("load forest beside lr", "POST", "/v2/repository/models/forest/load", {}),
           ("forest one vector", "POST", "/v2/models/forest/infer", {"inputs": [tensor(ROWS[0])]}),
           ("load broken", "POST", "/v2/repository/models/broken/load", {}),
           ("load word2vec", "POST", "/v2/repository/models/word2vec/load", {}),
           ("load no-format", "POST", "/v2/repository/models/no-format/load", {}),
           ("ready broken", "GET", "/v2/models/broken/ready", None),
           ("infer broken", "POST", "/v2/models/broken/infer", {"inputs": [tensor(ROWS[0])]}),
           ("lr after the refusals", "POST", "/v2/models/lr/infer", {"inputs": [tensor(ROWS[0])]})],
    "isotonic": [("isotonic three numbers [3]", "POST", "/v2/models/isotonic/infer",
                  {"inputs": [tensor([-0.5, 0.25, 3.0])]}),
                 ("isotonic one number [1]", "POST", "/v2/models/isotonic/infer", {"inputs": [tensor([0.5])]})],
    "forest": [("forest alone, one vector", "POST", "/v2/models/forest/infer", {"inputs": [tensor(ROWS[0])]})],
    # no model at start: the failing loads are each the server's first MLlib load
    "": [("load word2vec first", "POST", "/v2/repository/models/word2vec/load", {}),
         ("load no-format after it", "POST", "/v2/repository/models/no-format/load", {}),
         ("load broken after them", "POST", "/v2/repository/models/broken/load", {}),
         ("load lr after them", "POST", "/v2/repository/models/lr/load", {}),
         ("lr after them", "POST", "/v2/models/lr/infer", {"inputs": [tensor(ROWS[0])]})],
}


def comparable(status, body):
    if isinstance(body, dict) and "outputs" in body:
        body = {k: v for k, v in body.items() if k != "id"}
        body["outputs"] = [{k: (np.round(np.asarray(v, dtype=float), 5).tolist() if k == "data" else v)
                            for k, v in o.items()} for o in body["outputs"]]
    elif isinstance(body, dict) and set(body) <= {"error", "detail"}:
        body = {"error keys": sorted(body), "error": str(body.get("error", body.get("detail")))[:200]}
    elif isinstance(body, str):
        body = {"plain text, last line": body.strip().splitlines()[-1][:200] if body.strip() else ""}
    return {"status": status, "body": body}


def grpc_infer(port, model, inputs):
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name=model)
    for name, values in inputs:
        values = np.asarray(values, dtype=np.float64)
        given = request.inputs.add(name=name, datatype="FP64", shape=list(values.shape))
        given.contents.fp64_contents.extend(values.ravel().tolist())
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            answer = stub.ModelInfer(request, timeout=120)
        except grpc.RpcError as exc:
            return {"code": exc.code().name, "details": (exc.details() or "")[:200]}
    outputs = []
    raw = list(answer.raw_output_contents)
    for index, out in enumerate(answer.outputs):
        values = list(out.contents.fp32_contents or out.contents.fp64_contents or out.contents.int64_contents)
        if not values and raw:
            values = np.frombuffer(raw[index], {"FP32": np.float32, "FP64": np.float64}[out.datatype]).tolist()
        outputs.append({"name": out.name, "datatype": out.datatype, "shape": list(out.shape),
                        "data": np.round(values, 5).tolist()})
    return {"outputs": outputs}


def main() -> int:
    if not MLSERVER.exists():
        raise SystemExit(f"no {MLSERVER}: see this file's docstring")
    work = Path(tempfile.mkdtemp(prefix="mllib-conf-"))
    build(work / "built")
    answers = {"mlserver": {}, "gpuserve": {}}
    for first, cases in RUNS.items():
        for name in ("mlserver", "gpuserve"):
            repo = work / f"{name}-{first}" / "models"
            repo.mkdir(parents=True)
            if first:
                shutil.copytree(work / "built" / first, repo / first)
            ports = free_ports(3)
            proc = start(name, repo, ports, work / f"{name}-{first or 'empty'}.log", MLSERVER,
                         MLSERVER_PARALLEL_WORKERS="0")
            try:
                wait_until_ready(ports[0], proc, [f"/v2/models/{first}/ready" if first else "/v2/health/ready"])
                for other in FORMATS:  # the others, loaded later through the repository API
                    if other != first:
                        shutil.copytree(work / "built" / other, repo / other)
                got = answers[name]
                for label, method, path, body in cases:
                    got[label] = comparable(*call_json(ports[0], method, path, body, timeout=120)[:2])
                if first:
                    got[f"grpc {first} one vector"] = grpc_infer(ports[1], first, [("x", ROWS[0])])
                if first == "lr":
                    got["grpc lr three rows"] = grpc_infer(ports[1], "lr", [("x", ROWS)])
                    got["grpc lr two inputs"] = grpc_infer(ports[1], "lr", [("x", ROWS[0]), ("y", ROWS[0])])
            finally:
                stop(proc, 60)
    (work / "answers.json").write_text(json.dumps(answers, indent=1))
    differ = 0
    for label in answers["mlserver"]:
        a, b = answers["mlserver"][label], answers["gpuserve"][label]
        same = a == b
        differ += not same
        print(f"{'same  ' if same else 'DIFFER'} {label}")
        if not same:
            print(f"    mlserver: {json.dumps(a)[:700]}\n    gpuserve: {json.dumps(b)[:700]}")
    print(f"\n{len(answers['mlserver'])} cases, {differ} differ (logs in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
