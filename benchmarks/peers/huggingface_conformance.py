"""MLServer's HuggingFace runtime (mlserver-huggingface 1.7.1) against gpuserve's (gpuserve/huggingface) on one
folder of tiny HuggingFace models built here (tests/hf_models.py: a BERT text classifier, a BERT question
answerer, a GPT-2 text generator; random weights, no download): the same V2 requests (REST, and one over
gRPC), metadata reads and concurrent requests to adaptively batched models, to both; status and body side by
side (`id` aside, floats inside the JSON answers rounded to 5 digits, error bodies compared by their keys).
Not a test; run by hand after building MLServer's side:

    P=.peers/mlserver-hf; /usr/bin/python3.11 -m venv $P
    $P/bin/pip install mlserver{,-huggingface}==1.7.1 uvloop==0.21.0 transformers==4.41.2 "pandas<3" torch==2.13.0
    $P/bin/pip install --no-deps optimum==1.20.0

(torch: the CPU wheel gpuserve's .venv has; all in one command, as pip given torch and transformers first
backtracks for many minutes over the rest. optimum 1.27, which pip picks, imports torch.onnx's `_attention_scale`,
gone in torch 2.13: mlserver_huggingface fails at import and MLServer never gets ready; optimum 1.20, of
transformers 4.41's time, does not import it.)

    .venv/bin/python benchmarks/peers/huggingface_conformance.py      # MLSERVER_HF=path/to/bin/mlserver

The differences kept on purpose are listed in the docstrings of gpuserve/huggingface/runtime.py and common.py.

Last run 2026-12-07 (MLServer 1.7.1 + mlserver-huggingface 1.7.1 on transformers 4.41.2; gpuserve on transformers
4.57.6; torch 2.13.0 CPU for both): 23 cases, 10 differ, all on purpose. The same: every answer (text
classification one text and a list, a `raw` keyword, the request-level content type; text generation as `args`,
as `array_inputs` and with a `raw` max_new_tokens; question answering by name, with top_k, and as one `hg_json`
input; gRPC), and concurrent requests to the adaptively batched classifier and generator. Differ: the five
models' metadata (gpuserve adds `parameters.device`); input the pipeline refuses or cannot decode (two texts as
`args`, bad JSON in `hg_json`, an unknown input name, no inputs) is MLServer's 500 with a plain-text traceback
and gpuserve's 400 `{"error": ...}` (4 cases); three concurrent requests of `args` to a batched model are
MLServer's three 500s (the batch calls the pipeline with three positional texts) and gpuserve's three answers
(gpuserve retries a failed batch request by request, gpuserve/adaptive.py).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
from peers.classic_conformance import GPUSERVE, free_port  # noqa: E402
from peers.mlserver_conformance import stop  # noqa: E402
from hf_models import TASKS, build_models, write_settings  # noqa: E402

MLSERVER = Path(os.environ.get("MLSERVER_HF", ROOT / ".peers" / "mlserver-hf" / "bin" / "mlserver"))
BATCHED = {"clsb": ("cls", {"max_batch_size": 4, "max_batch_time": 0.5}),
           "genb": ("gen", {"max_batch_size": 4, "max_batch_time": 0.5})}
NAMES = [*TASKS, *BATCHED]


def build(repo: Path) -> None:
    import shutil

    folders = build_models(repo / "_built")
    for name in TASKS:
        shutil.copytree(folders[name], repo / name)
        write_settings(repo / name, name, TASKS[name])
    for name, (base, more) in BATCHED.items():
        shutil.copytree(folders[base], repo / name)
        write_settings(repo / name, name, TASKS[base], **more)
    shutil.rmtree(repo / "_built")


def text(name, values, content_type=None, datatype="BYTES"):
    tensor = {"name": name, "shape": [len(values)], "datatype": datatype, "data": list(values)}
    if content_type:
        tensor["parameters"] = {"content_type": content_type}
    return tensor


def call(port, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            raw = reply.read()
            return reply.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw or b"null")
        except ValueError:
            return exc.code, raw.decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:  # not listening yet
        return 0, str(exc)


def _round(value):
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, list):
        return [_round(v) for v in value]
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return value


def comparable(body):
    if isinstance(body, dict) and "outputs" in body:
        outputs = []
        for output in body["outputs"]:
            data = output.get("data")
            if output.get("datatype") == "BYTES" and isinstance(data, list):
                try:
                    data = [json.dumps(_round(json.loads(d))) for d in data]
                except (TypeError, ValueError):
                    pass
            outputs.append({**output, "data": data})
        return {**{k: v for k, v in body.items() if k not in ("id", "outputs")}, "outputs": outputs}
    if isinstance(body, dict) and set(body) <= {"error", "detail"}:
        return sorted(body)  # an error: its keys, not its words
    return body


def grpc_case(port):
    import numpy as np
    import tritonclient.grpc as triton

    with triton.InferenceServerClient(f"127.0.0.1:{port}") as client:
        tensor = triton.InferInput("args", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([b"this is a good movie"], dtype=object))
        result = client.infer("cls", [tensor])
        output = result.get_response().outputs[0]
        return {"name": output.name, "shape": list(output.shape), "datatype": output.datatype,
                "content_type": output.parameters["content_type"].string_param,
                "data": [json.dumps(_round(json.loads(v))) for v in result.as_numpy("output").ravel()]}


def start(repo: Path, work: Path):
    ports = {name: {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
             for name in ("mlserver", "gpuserve")}
    (repo / "settings.json").write_text(json.dumps({"http_port": ports["mlserver"]["http"], "grpc_port":
                                                    ports["mlserver"]["grpc"], "metrics_port":
                                                    ports["mlserver"]["metrics"], "parallel_workers": 0}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    g = ports["gpuserve"]
    lines = {"mlserver": [str(MLSERVER), "start", str(repo)],
             "gpuserve": [str(GPUSERVE), "start", str(repo), "--host", "127.0.0.1", "--http-port", str(g["http"]),
                          "--grpc-port", str(g["grpc"]), "--metrics-port", str(g["metrics"])]}
    procs = {name: subprocess.Popen(line, env=env, start_new_session=True, stderr=subprocess.STDOUT, cwd=work,
                                    stdout=open(work / f"{name}.log", "w")) for name, line in lines.items()}
    deadline = time.time() + 300
    try:
        for name, proc in procs.items():
            while not all(call(ports[name]["http"], f"/v2/models/{n}/ready")[0] == 200 for n in NAMES):
                if proc.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"{name} did not get ready (log in {work})")
                time.sleep(0.5)
    except BaseException:  # never leave the servers running
        for proc in procs.values():
            stop(proc)
        raise
    return procs, ports


def cases():
    good, bad = "this is a good movie", "bad movie"
    question = [text("question", ["who serves models"]), text("context", ["seldon serves models fast"])]
    infer = lambda model, *inputs, **more: (f"/v2/models/{model}/infer", {"inputs": list(inputs), **more})  # noqa
    return {
        "cls args": infer("cls", text("args", [good])),
        "cls array_inputs x2": infer("cls", text("array_inputs", [good, bad])),
        "cls args x2": infer("cls", text("args", [good, bad])),
        "cls request content type str": infer("cls", text("args", [good]), parameters={"content_type": "str"}),
        "cls top_k raw": infer("cls", text("args", [good]), {"name": "top_k", "shape": [1], "datatype": "INT32",
                                                              "data": [2], "parameters": {"content_type": "raw"}}),
        "cls hg_json bad JSON": infer("cls", text("args", ["{nope"], "hg_json")),
        "cls no inputs": infer("cls"),
        "gen args": infer("gen", text("args", ["this is a test"])),
        "gen array_inputs x2": infer("gen", text("array_inputs", ["this is a test", "the gpu"])),
        "gen max_new_tokens raw": infer("gen", text("args", ["the server"]),
                                        {"name": "max_new_tokens", "shape": [1], "datatype": "INT32", "data": [2],
                                         "parameters": {"content_type": "raw"}}),
        "qa question+context": infer("qa", *question),
        "qa top_k raw": infer("qa", *question, {"name": "top_k", "shape": [1], "datatype": "INT32", "data": [2],
                                                "parameters": {"content_type": "raw"}}),
        "qa unknown input": infer("qa", text("query", ["who"])),
        "qa as hg_json": infer("qa", {"name": "args", "shape": [1], "datatype": "BYTES", "parameters":
                                      {"content_type": "hg_json"}, "data": [json.dumps(
                                          {"question": "who serves models", "context": "seldon serves models fast"})]}),
        **{f"metadata {n}": (f"/v2/models/{n}", None) for n in NAMES},
    }


def batched(port, model, name, texts):
    def ask(t):
        return call(port, f"/v2/models/{model}/infer", {"inputs": [text(name, [t])]})

    with concurrent.futures.ThreadPoolExecutor(len(texts)) as pool:
        return list(pool.map(ask, texts))


def main() -> int:
    if not MLSERVER.exists():
        print(__doc__)
        return 2
    work = Path(tempfile.mkdtemp(prefix="hf-conformance-"))
    build(work / "repo")
    procs, ports = start(work / "repo", work)
    differ = total = 0
    try:
        results = {}
        for server in procs:
            got = {label: call(ports[server]["http"], path, body) for label, (path, body) in cases().items()}
            texts = ["this is a good movie", "bad movie", "the gpu is fast"]
            got["clsb array_inputs x3 concurrent"] = batched(ports[server]["http"], "clsb", "array_inputs", texts)
            got["clsb args x3 concurrent"] = batched(ports[server]["http"], "clsb", "args", texts)
            got["genb array_inputs x3 concurrent"] = batched(ports[server]["http"], "genb", "array_inputs",
                                                             ["this is a test", "the gpu", "what is it"])
            try:
                got["grpc cls args"] = grpc_case(ports[server]["grpc"])
            except Exception as exc:  # noqa: BLE001 - reported as the case's answer
                got["grpc cls args"] = f"{type(exc).__name__}: {exc}"
            results[server] = got
        for label in results["mlserver"]:
            total += 1
            a, b = results["mlserver"][label], results["gpuserve"][label]
            norm = (lambda r: [(s, comparable(x)) for s, x in r] if isinstance(r, list) else
                    (r[0], comparable(r[1])) if isinstance(r, tuple) else r)
            same = norm(a) == norm(b)
            differ += not same
            print(f"{'same  ' if same else 'DIFFER'} {label}")
            if not same:
                print(f"    mlserver: {json.dumps(a)[:600]}\n    gpuserve: {json.dumps(b)[:600]}")
    finally:
        for proc in procs.values():
            stop(proc)
    print(f"{total} cases, {differ} differ (logs in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
