"""MLServer's MLflow runtime (mlserver-mlflow 1.7.1) against gpuserve's (gpuserve/runtimes_mlflow.py) on one
folder of MLflow models saved here: the same V2 requests, metadata reads and MLflow scoring-protocol requests
to both, status and body side by side (values rounded to 5 digits, error bodies compared by their keys).
Not a test; run by hand after

    bash benchmarks/peers/setup.sh mlserver
    .peers/mlserver/bin/pip install --no-deps mlserver-mlflow==1.7.1
    .peers/mlserver/bin/pip install mlflow-skinny scikit-learn

    .venv/bin/python benchmarks/peers/mlflow_conformance.py

Models (model-settings.json naming `mlserver_mlflow.MLflowRuntime`): cols (a PythonModel from code, column
signature a, b, a `scale` param), tensors (named float32 tensors x, y answering a dict of sum and diff), sk (a
scikit-learn LogisticRegression, tensor signature) and nested (a column of arrays, `pd_json`). MLflow's scoring
routes are one per server in both (the first model's), so they are asked of a second pair of servers that
serve cols alone. The differences kept on purpose are listed in the docstring of gpuserve/runtimes_mlflow.py.

Last run 2026-12-06 (session 25): 21 cases, 8 differ, all on purpose: the four models' metadata, the tensor,
scikit-learn and pd_json answers and MLflow's scoring answers are the same; MLServer fails cols' answer (a
pandas Series: 500 "'float' object has no attribute 'dtype'") where gpuserve sends it (2 cases); input the
signature refuses is MLServer's 500, gpuserve's 400 (3 V2 cases); on /invocations gpuserve answers as MLflow's
own scoring server does where MLServer does not: its error bodies carry MLflow's `error_code` and `message`
beside `error` (2), a body that is not JSON is a 400 (MLServer 500), a content type MLflow does not read a 415
(MLServer 400).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers.classic_conformance import GPUSERVE, MLSERVER, comparable, free_port  # noqa: E402
from peers.mlserver_conformance import stop as stop_one  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from mlflow_models import COLUMNS_MODEL, TENSORS_MODEL, nested_model  # noqa: E402

NESTED_MODEL = nested_model("np.array")


def build(root: Path) -> None:
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.pyfunc import save_model
    from mlflow.types.schema import Array, ColSpec, DataType, Schema, TensorSpec
    from sklearn.linear_model import LogisticRegression

    def from_code(name, source, signature):
        (root / name).mkdir(parents=True)
        code = root / name / "model_code.py"
        code.write_text(textwrap.dedent(source))
        save_model(str(root / name / "model"), python_model=str(code), signature=signature)

    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    from_code("cols", COLUMNS_MODEL, infer_signature(frame, np.array([4.0, 6.0]), params={"scale": 1.0}))
    tensors = [TensorSpec(np.dtype(np.float32), (-1, 2), n) for n in ("x", "y")]
    outputs = [TensorSpec(np.dtype(np.float32), (-1, 2), n) for n in ("sum", "diff")]
    from_code("tensors", TENSORS_MODEL, ModelSignature(Schema(tensors), Schema(outputs)))
    from_code("nested", NESTED_MODEL, ModelSignature(Schema([ColSpec(Array(DataType.double), "items")]),
                                                     Schema([TensorSpec(np.dtype(np.float64), (-1,))])))
    x = np.random.default_rng(0).normal(size=(40, 4))
    classifier = LogisticRegression().fit(x, (x[:, 0] + x[:, 1] > 0).astype(np.int64))
    mlflow.sklearn.save_model(classifier, str(root / "sk" / "model"), serialization_format="cloudpickle",
                              signature=infer_signature(x, classifier.predict(x)))
    for name in ("cols", "tensors", "nested", "sk"):
        (root / name / "model-settings.json").write_text(json.dumps({
            "name": name, "implementation": "mlserver_mlflow.MLflowRuntime", "parameters": {"uri": "./model"}}))


def request(port: int, path: str, body=None, content_type: str = "application/json"):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=30) as reply:
            status, raw = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError):  # not listening yet
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def start(repo: Path, work: Path, names):
    ports = {"mlserver": free_port(), "gpuserve": free_port()}
    env = {**os.environ, "MLSERVER_HTTP_PORT": str(ports["mlserver"]), "MLSERVER_GRPC_PORT": str(free_port()),
           "MLSERVER_METRICS_PORT": str(free_port()), "PATH": f"{MLSERVER.parent}:{os.environ.get('PATH', '')}"}
    lines = {"mlserver": ([str(MLSERVER), "start", str(repo)], env),
             "gpuserve": ([str(GPUSERVE), "start", str(repo), "--host", "127.0.0.1", "--http-port",
                           str(ports["gpuserve"]), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())],
                          None)}
    procs = {name: subprocess.Popen(line, env=environ, start_new_session=True, stderr=subprocess.STDOUT, cwd=work,
                                    stdout=open(work / f"{name}-{repo.name}.log", "w"))
             for name, (line, environ) in lines.items()}
    deadline = time.time() + 180
    for name, proc in procs.items():
        while not all(request(ports[name], f"/v2/models/{n}/ready")[0] == 200 for n in names):
            if proc.poll() is not None or time.time() > deadline:
                stop(procs)
                raise SystemExit(f"{name} did not get ready (log in {work})")
            time.sleep(0.5)
    return procs, ports


def stop(procs) -> None:
    for proc in procs.values():
        stop_one(proc)


def _column(name, values, datatype="FP64"):
    return {"name": name, "shape": [len(values), 1], "datatype": datatype, "data": values}


def v2_cases():
    x = np.random.default_rng(1).normal(size=(3, 4))
    tensors = {"inputs": [{"name": n, "shape": [2, 2], "datatype": "FP32", "data": v}
                          for n, v in (("x", [1.0, 2.0, 3.0, 4.0]), ("y", [0.5, 0.5, 1.0, 1.0]))]}
    cases = [(f"metadata {n}", f"/v2/models/{n}", None) for n in ("cols", "tensors", "nested", "sk")]
    cases += [
        ("cols", "/v2/models/cols/infer", {"inputs": [_column("a", [1.0, 2.0]), _column("b", [3.0, 4.0])]}),
        ("cols with params", "/v2/models/cols/infer", {"inputs": [_column("a", [1.0]), _column("b", [3.0])],
                                                        "parameters": {"scale": 2.0}}),
        ("cols missing column", "/v2/models/cols/infer", {"inputs": [_column("a", [1.0])]}),
        ("cols wrong param type", "/v2/models/cols/infer", {"inputs": [_column("a", [1.0]), _column("b", [1.0])],
                                                             "parameters": {"scale": "big"}}),
        ("tensors", "/v2/models/tensors/infer", tensors),
        ("sk", "/v2/models/sk/infer", {"inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "FP64",
                                                   "data": x.ravel().tolist()}]}),
        ("sk wrong width", "/v2/models/sk/infer", {"inputs": [_column("input-0", [1.0])]}),
        ("nested", "/v2/models/nested/infer", {"inputs": [{"name": "items", "shape": [2, 1], "datatype": "BYTES",
                                                           "data": ["[1.0, 2.5]", "[3.0]"],
                                                           "parameters": {"content_type": "pd_json"}}]}),
    ]
    return cases


def scoring_cases():
    split = {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 3.0], [2.0, 4.0]]}}
    return [
        ("ping", "/ping", None, "application/json"),
        ("dataframe_split", "/invocations", split, "application/json"),
        ("dataframe_split + params", "/invocations", {**split, "params": {"scale": 3.0}}, "application/json"),
        ("dataframe_records", "/invocations", {"dataframe_records": [{"a": 1.0, "b": 1.0}]}, "application/json"),
        ("inputs", "/invocations", {"inputs": {"a": [1.0], "b": [2.0]}}, "application/json"),
        ("csv", "/invocations", b"a,b\n1.0,2.0\n", "text/csv"),
        ("missing column", "/invocations", {"dataframe_records": [{"a": 1.0}]}, "application/json"),
        ("not json", "/invocations", b"{not json", "application/json"),
        ("text/plain", "/invocations", b"a b", "text/plain"),
    ]


def _comparable(answer):
    """V2 answers as classic_conformance compares them; MLflow's `predictions` (numbers or records) rounded."""
    if isinstance(answer, dict) and "predictions" in answer:
        return {"predictions": _rounded(answer["predictions"])}
    return comparable(answer) if isinstance(answer, dict) else answer


def _rounded(value):
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def main() -> int:
    if not MLSERVER.exists():
        print(__doc__)
        return 2
    work = Path(tempfile.mkdtemp(prefix="mlflow-conf-"))
    build(work / "repo")
    (work / "single").mkdir()
    shutil.copytree(work / "repo" / "cols", work / "single" / "cols")
    differ = total = 0
    for repo, names, cases in ((work / "repo", ["cols", "tensors", "nested", "sk"],
                                [(n, p, b, "application/json") for n, p, b in v2_cases()]),
                               (work / "single", ["cols"], scoring_cases())):
        procs, ports = start(repo, work, names)
        try:
            for what, path, body, content_type in cases:
                out = {}
                for name, port in ports.items():
                    status, answer = request(port, path, body, content_type)
                    out[name] = [status, _comparable(answer)]
                same = json.dumps(out["mlserver"], sort_keys=True) == json.dumps(out["gpuserve"], sort_keys=True)
                total += 1
                differ += not same
                print(("  same " if same else "DIFFER"), what)
                if not same:
                    for name in out:
                        print(f"    {name:9s} {json.dumps(out[name], sort_keys=True)[:500]}")
        finally:
            stop(procs)
    print(f"\n{total} cases, {differ} differ (logs in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
