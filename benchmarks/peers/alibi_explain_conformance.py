"""MLServer's Alibi-Explain runtime (mlserver 1.7.1 + mlserver-alibi-explain 1.6.1, whose runtime.py, common.py
and black_box_runtime.py are 1.7.1's) against gpuserve's (gpuserve/runtimes_alibi_explain) on one folder of
explainers: the same V2 requests to both, status, the x-seldon-alibi-* headers and the answer side by side, the
explanation (JSON inside the BYTES output) compared by its key tree and its deterministic values (rounded to 5
digits); an anchor's precision and coverage come from random samples and are left out. Not a test; run by hand
after

    python3 -m venv .peers/mlserver-ax
    .peers/mlserver-ax/bin/pip install mlserver==1.7.1 mlserver-sklearn==1.7.1 uvloop==0.21.0
    .peers/mlserver-ax/bin/pip install --no-deps mlserver-alibi-explain==1.6.1 mlserver-xgboost==1.7.1 \
        xgboost-cpu==3.2.0   # its white-box runtime imports them
    .peers/mlserver-ax/bin/pip install "alibi[shap]==0.9.6" "numpy<2" "pandas<3"

    .venv/bin/python benchmarks/peers/alibi_explain_conformance.py   # a venv with gpuserve[alibi-explain]

MLServer's side runs alibi as its pins ask (numpy 1.26, shap 0.43: alibi 0.9's JSON encoder names np.float_,
gone in numpy 2, so on numpy 2 no MLServer explanation answers); the folder is written by that venv's Python
(numpy 1 pickles, which numpy 2 reads). Each server first serves the models that are explained (an sklearn
classifier and forest, a custom runtime on images), then the explainers are moved in and loaded through the
repository API: AnchorTabular and KernelShap call their model as they load, and a model that fails at start-up
stops MLServer 1.7.1 whole. Each explainer asks the server it is served by.

Last run 2026-12-07 (no GPU; this session's machine): 29 cases, 12 differ, none in an explanation. The same:
metadata, the loads of AnchorTabular, KernelShap (twice), TreeShap and TreePartialDependence (from init_parameters),
AnchorTabular with and without explain_parameters (anchor, instance, prediction, meta), KernelShap over 3 rows
(shap values, expected values, raw predictions), TreeShap, TreePartialDependence (pd values, deciles), two inputs
(400), an unknown explain keyword (ignored by alibi), `POST /explain`, KernelShap over gRPC, the model after the
refusals. Differ: an AnchorImage built from init_parameters whose infer_uri is the same server: MLServer builds it
on its event loop and its predictor's blocking call to that same server never returns (the load and everything
after it hang; gpuserve answers); a KernelShap without explainer_batch (both 400: alibi gets a 1-D row; the
messages differ); a wrong width or no rows (MLServer 500 with a plain-text traceback, gpuserve 400); and on
purpose (gpuserve's rules for every model) a load that fails (unreachable infer_uri, misspelt setting, unknown
explainer_type, broken folder) is a 500 with `{"error"}` (MLServer: 500 with a plain-text traceback) and the model
then answers 503 (MLServer forgot it: 404); an unreachable infer_uri fails the load after 5 s (CONNECT_WAIT_S: a
server that is still starting is waited for), MLServer's at once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers.mlserver_conformance import call_json, free_ports, start, stop, wait_until_ready  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from alibi_digits import DIGITS_RUNTIME, SEGMENTATION  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PEER = Path(os.environ.get("MLSERVER_AX_BIN", ROOT / ".peers" / "mlserver-ax" / "bin"))
GPUSERVE = Path(sys.executable).parent / "gpuserve"
RUNTIME = "mlserver_alibi_explain.AlibiExplainRuntime"
MODELS = ["clf", "forest", "boosted", "digits"]  # served from the start
FEATURES = ["a", "b", "c", "d"]
ROWS = [[0.9, 0.2, 0.5, 0.5], [0.1, 0.8, 0.3, 0.6], [0.7, 0.7, 0.1, 0.9]]

# Run by the peer venv's Python (numpy 1): the models and the saved explainers, into argv[1] (models) and
# argv[2] (explainers, their infer_uri holding PORT for the server's own port)
BUILD = r'''
import json, sys
from pathlib import Path
import joblib, numpy as np
from alibi.explainers import AnchorTabular, KernelShap, TreeShap
from sklearn.datasets import load_digits
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
models, explainers = Path(sys.argv[1]), Path(sys.argv[2])
features = ["a", "b", "c", "d"]
rng = np.random.default_rng(7)
X = rng.random((300, 4)).astype(np.float32)
Y = (X[:, 0] > 0.5).astype(int)
clf = LogisticRegression(C=1000.0).fit(X, Y)
forest = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0).fit(X, Y)
boosted = GradientBoostingClassifier(n_estimators=5, max_depth=2, random_state=0).fit(X, Y)
digits = load_digits()
images = (digits.images / 16.0).reshape(len(digits.images), -1)
digits_clf = LogisticRegression(max_iter=500).fit(images, digits.target)
def folder(root, name, settings):
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "model-settings.json").write_text(json.dumps({"name": name, **settings}))
    return path
for name, model in (("clf", clf), ("forest", forest), ("boosted", boosted)):
    joblib.dump(model, folder(models, name, {"implementation": "mlserver_sklearn.SKLearnModel",
                                             "parameters": {"uri": "./model.joblib"}}) / "model.joblib")
path = folder(models, "digits", {"implementation": "models.Digits", "parameters": {"uri": "./model.joblib"}})
joblib.dump(digits_clf, path / "model.joblib")
(path / "models.py").write_text(sys.argv[3])
def explainer(name, saved=None, **extra):
    parameters = {"extra": extra}
    if saved is not None:
        parameters["uri"] = "./explainer"
    path = folder(explainers, name, {"implementation": "mlserver_alibi_explain.AlibiExplainRuntime",
                                     "parameters": parameters})
    if saved is not None:
        saved.save(str(path / "explainer"))
anchors = AnchorTabular(clf.predict, features, seed=1)
anchors.fit(X, disc_perc=(25, 50, 75))
uri = "http://127.0.0.1:PORT/v2/models/{}/infer"
explainer("anchors", anchors, explainer_type="anchor_tabular", infer_uri=uri.format("clf"))
shap = KernelShap(clf.predict_proba, feature_names=features, seed=1)
shap.fit(X[:20])
explainer("shap", shap, explainer_type="kernel_shap", infer_uri=uri.format("clf"), infer_output="predict_proba",
          explainer_batch=True)
explainer("shap-unbatched", shap, explainer_type="kernel_shap", infer_uri=uri.format("clf"),
          infer_output="predict_proba")
tree = TreeShap(forest, model_output="raw", feature_names=features)
tree.fit()
explainer("tree-shap", tree, explainer_type="tree_shap", infer_uri=str(models / "forest" / "model.joblib"))
explainer("tree-pd", explainer_type="tree_partial_dependence", infer_uri=str(models / "boosted" / "model.joblib"),
          init_parameters={"feature_names": features})
explainer("anchor-image", explainer_type="anchor_image", infer_uri=uri.format("digits"),
          init_parameters={"image_shape": [8, 8, 1], "segmentation_fn": "slic", "seed": 1,
                           "segmentation_kwargs": json.loads(sys.argv[4])})
explainer("unreachable", shap, explainer_type="kernel_shap", infer_uri="http://127.0.0.1:9/v2/models/clf/infer",
          explainer_batch=True)
explainer("misspelt", anchors, explainer_type="anchor_tabular", infer_uri=uri.format("clf"), explainer_btch=True)
explainer("unknown-type", anchors, explainer_type="anchors", infer_uri=uri.format("clf"))
path = folder(explainers, "broken", {"implementation": "mlserver_alibi_explain.AlibiExplainRuntime",
               "parameters": {"uri": "./explainer", "extra": {"explainer_type": "anchor_tabular",
                                                              "infer_uri": uri.format("clf")}}})
(path / "explainer").mkdir()
(path / "explainer" / "meta.dill").write_bytes(b"not a dill file")
'''


EXPLAINERS = ["anchors", "shap", "shap-unbatched", "tree-shap", "tree-pd", "unreachable", "misspelt", "unknown-type",
              "broken", "anchor-image"]


def tensor(rows, datatype="FP32", name="x"):
    rows = np.asarray(rows)
    return {"name": name, "shape": list(rows.shape), "datatype": datatype, "data": rows.ravel().tolist()}


def cases():
    rows = {"inputs": [tensor(ROWS)]}
    out = [("metadata clf", "GET", "/v2/models/clf", None)]
    out += [(f"load {name}", "POST", f"/v2/repository/models/{name}/load", {}) for name in EXPLAINERS[:-1]]
    out += [("metadata anchors", "GET", "/v2/models/anchors", None),
            ("anchors", "POST", "/v2/models/anchors/infer", rows),
            ("anchors threshold 0.8", "POST", "/v2/models/anchors/infer",
             {**rows, "parameters": {"explain_parameters": {"threshold": 0.8, "coverage_samples": 500}}}),
            ("shap batch", "POST", "/v2/models/shap/infer", rows),
            ("shap unbatched (first row, 1-D)", "POST", "/v2/models/shap-unbatched/infer", rows),
            ("tree-shap", "POST", "/v2/models/tree-shap/infer", {"inputs": [tensor(ROWS[:2])]}),
            ("tree-pd", "POST", "/v2/models/tree-pd/infer",
             {"inputs": [tensor(np.random.default_rng(7).random((50, 4)).astype(np.float32))],
              "parameters": {"explain_parameters": {"features": [0], "grid_resolution": 5}}}),
            ("anchors two inputs", "POST", "/v2/models/anchors/infer",
             {"inputs": [tensor(ROWS), tensor(ROWS, name="y")]}),
            ("shap wrong width", "POST", "/v2/models/shap/infer", {"inputs": [tensor(np.asarray(ROWS)[:, :3])]}),
            ("anchors no rows", "POST", "/v2/models/anchors/infer", {"inputs": [tensor(np.zeros((0, 4)))]}),
            ("anchors unknown explain keyword", "POST", "/v2/models/anchors/infer",
             {**rows, "parameters": {"explain_parameters": {"no_such_keyword": 1}}}),
            ("unreachable", "POST", "/v2/models/unreachable/infer", rows),
            ("broken", "POST", "/v2/models/broken/infer", rows),
            ("ready unreachable", "GET", "/v2/models/unreachable/ready", None),
            ("/explain (plain JSON)", "POST", "/explain", rows),
            ("clf after the refusals", "POST", "/v2/models/clf/infer", rows)]
    return out


def last_cases():
    """AnchorImage calls its predictor as it is built from init_parameters: MLServer 1.7.1 builds it on its
    event loop, so a predictor asking that same server blocks it for good (requests.post has no timeout).
    Last, with a short timeout."""
    from sklearn.datasets import load_digits

    images = (load_digits().images[:2] / 16.0)[..., None]
    return [("load anchor-image (init_parameters)", "POST", "/v2/repository/models/anchor-image/load", {}),
            ("anchor-image", "POST", "/v2/models/anchor-image/infer",
             {"inputs": [tensor(images, "FP64")],
              "parameters": {"explain_parameters": {"threshold": 0.9, "p_sample": 0.5}}})]


# Values drawn from random samples (anchors), or that name where they ran
RANDOM = {"precision", "coverage", "examples", "num_preds", "names", "feature", "mean", "instances_covered"}


def rounded(value):
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, list):
        return [rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: ("(random)" if k in RANDOM else rounded(v)) for k, v in value.items()}
    return value


def explanation_view(explanation):
    """Its keys and deterministic values; an anchor's sampled values as "(random)"."""
    view = rounded(explanation)
    raw = view.get("data", {}).get("raw", {})
    if isinstance(raw, dict) and "instances" in raw and isinstance(raw.get("instances"), list):
        raw["instances"] = rounded(raw["instances"])
    return view


def comparable(status, body, headers):
    if isinstance(body, dict) and "outputs" in body:
        body = {k: v for k, v in body.items() if k != "id"}
        outputs = []
        for output in body["outputs"]:
            output = dict(output)
            if output.get("datatype") == "BYTES" and output.get("name") == "explanation":
                output["data"] = [explanation_view(json.loads(item)) for item in output["data"]]
            elif output.get("datatype") != "BYTES":
                output["data"] = rounded([float(v) for v in output["data"]])
            outputs.append(output)
        body["outputs"] = outputs
    elif isinstance(body, dict) and "meta" in body and "data" in body:
        body = explanation_view(body)
    elif isinstance(body, dict) and set(body) <= {"error", "detail"}:
        body = {"error keys": sorted(body), "error": str(next(iter(body.values())))[:160]}
    return {"status": status, "body": body, "headers": headers}


def grpc_explain(port, model, rows):
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    rows = np.asarray(rows, dtype=np.float32)
    request = service_pb2.ModelInferRequest(model_name=model)
    given = request.inputs.add(name="x", datatype="FP32", shape=list(rows.shape))
    given.contents.fp32_contents.extend(rows.ravel().tolist())
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            answer, call_ = stub.ModelInfer.with_call(request, timeout=120)
        except grpc.RpcError as exc:
            return {"code": exc.code().name}
    outputs = []
    raw = list(answer.raw_output_contents)
    for index, out in enumerate(answer.outputs):
        items = list(out.contents.bytes_contents)
        if not items and raw:  # raw: 4-byte little-endian length, then the bytes
            buffer = raw[index]
            items = [buffer[4:4 + int.from_bytes(buffer[:4], "little")]]
        outputs.append({"name": out.name, "datatype": out.datatype, "shape": list(out.shape),
                        "parameters": {k: str(v).strip() for k, v in out.parameters.items()},
                        "data": [explanation_view(json.loads(item)) for item in items]})
    metadata = dict(call_.initial_metadata() or ()) | dict(call_.trailing_metadata() or ())
    return {"outputs": outputs, "metadata": {k: v for k, v in metadata.items() if k.startswith("x-seldon")}}


def main() -> int:
    if not (PEER / "mlserver").exists():
        raise SystemExit(f"no {PEER / 'mlserver'}: see this file's docstring")
    work = Path(tempfile.mkdtemp(prefix="explain-conf-"))
    subprocess.run([str(PEER / "python"), "-c", BUILD, str(work / "models"), str(work / "explainers"),
                    DIGITS_RUNTIME, json.dumps(SEGMENTATION)], check=True)
    answers, procs = {}, {}
    try:
        for name in ("mlserver", "gpuserve"):
            repo = work / name / "models"
            shutil.copytree(work / "models", repo)
            (repo / "settings.json").write_text(json.dumps({"parallel_workers": 0}))
            ports = free_ports(3)
            procs[name] = start(name, repo, ports, work / f"{name}.log", PEER / "mlserver")
            wait_until_ready(ports[0], procs[name], [f"/v2/models/{m}/ready" for m in MODELS])
            for explainer in EXPLAINERS:
                shutil.copytree(work / "explainers" / explainer, repo / explainer)
                settings = repo / explainer / "model-settings.json"
                settings.write_text(settings.read_text().replace("PORT", str(ports[0])))
            answers[name] = {}
            for label, method, path, body in cases():
                started = time.monotonic()
                answers[name][label] = comparable(*call_json(ports[0], method, path, body, timeout=120))
                answers[name][label]["seconds"] = round(time.monotonic() - started, 1)
            answers[name]["grpc shap batch"] = grpc_explain(ports[1], "shap", ROWS)
            for label, method, path, body in last_cases():
                started = time.monotonic()
                answers[name][label] = comparable(*call_json(ports[0], method, path, body, timeout=30))
                answers[name][label]["seconds"] = round(time.monotonic() - started, 1)
            stop(procs.pop(name))
    finally:
        for proc in procs.values():
            stop(proc)
    (work / "answers.json").write_text(json.dumps(answers, indent=1))
    differ = 0
    for label in answers["mlserver"]:
        a, b = dict(answers["mlserver"][label]), dict(answers["gpuserve"][label])
        times = a.pop("seconds", None), b.pop("seconds", None)
        same = a == b
        differ += not same
        print(f"{'same  ' if same else 'DIFFER'} {label}   (s: mlserver {times[0]}, gpuserve {times[1]})")
        if not same:
            print(f"    mlserver: {json.dumps(a)[:1200]}\n    gpuserve: {json.dumps(b)[:1200]}")
    print(f"\n{len(answers['mlserver'])} cases, {differ} differ (logs and answers.json in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
