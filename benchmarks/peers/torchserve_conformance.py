"""Real TorchServe 0.12 and gpuserve side by side on ONE model store (KServe's layout: config/config.properties +
model-store/*.mar), the same requests to both over REST and gRPC, answers compared: status (or gRPC code), content
type, body (JSON-parsed where JSON, with request ids, timestamps, pids, worker ids and ports normalised).

    bash benchmarks/peers/setup.sh torchserve
    .venv/bin/python benchmarks/peers/torchserve_conformance.py [--keep-store DIR] [--only SUBSTRING]

The archives reuse tests/test_torchserve.py's make_mar and handlers (a BaseHandler subclass over a TorchScript
Linear, a module-level `handle` that fails on "fail", an echo handler reporting the entry it got and setting a
status/content type) plus a probe handler reporting every request header TorchServe hands a handler and one that
always raises. Exit 0 when every case is the same or a listed KEPT difference (each with its reason).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT / "benchmarks"), str(ROOT / "tests")]

import httpx  # noqa: E402

from harness import ServerProcess, free_port, gpuserve_bin  # noqa: E402
from run_torchserve import TorchServe, available, snapshot_properties  # noqa: E402

PROBE_HANDLER = '''
def handle(data, context):
    if data is None:
        return None
    out = []
    for i, row in enumerate(data):
        props = context.request_processor[i].get_request_properties()
        # header names lowercased here: uvicorn hands gpuserve lowercase names (see KEPT)
        out.append({"keys": sorted(row), "headers": {k.lower(): v for k, v in props.items()},
                    "x-custom": context.get_request_header(i, "x-custom"), "batch": len(data)})
    return out
'''

RAISING_HANDLER = '''
class Raising:
    def initialize(self, context):
        self.initialized = True

    def handle(self, data, context):
        raise RuntimeError("raising on purpose")
'''

# case name -> why the difference stays (a deliberate gpuserve choice, or something no client sees)
KEPT = {
    "echo lowercase content-type": "header names reach gpuserve lowercased (ASGI) and its Context looks them up "
    "case-insensitively, so get_request_header(i, 'Content-Type') finds a lowercase-sent header; TorchServe's lookup "
    "is case-exact and answers None",
    "grpc StreamPredictions fn": "TorchServe 0.12's frontend fails (NullPointerException, 'Worker died.') when a "
    "handler answers a stream request without send_intermediate_predict_response; gpuserve answers it once",
    "unknown path": "gpuserve's HTTP port also serves KServe V1/V2, whose unknown paths answer 404 {\"error\": ...} "
    "(as KServe and Triton do); TorchServe answers 404 ResourceNotFoundException",
    "describe ex3": "TorchServe 0.12 registers from a JSON body with maxBatchDelay left at its placeholder "
    "-100 x 100 (its RegisterModelRequest's no-argument constructor) and describes -10000; gpuserve keeps the "
    "default 100",
    "describe lin all": "TorchServe 0.12 at times describes a version registered a moment ago with its worker "
    "UNLOADING while it serves (seen in one run of two); gpuserve says READY",
    "grpc ListModels": "proto3's unset limit is 0, which TorchServe 0.12 pages as 0 models (nextPageToken '0'); "
    "gpuserve reads it as REST's default 100 and lists the models",
}

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
VOLATILE = {"startTime": "<time>", "pid": "<pid>", "id": "<id>", "memoryUsage": "<mem>", "gpuUsage": "<gpu>",
            "host": "<host>", "content-length": "<len>", "user-agent": "<ua>"}


def build_store(root: Path) -> Path:
    import test_torchserve as t

    store = root / "model-store"
    t.make_mar(store / "lin.mar", "lin", t.CLASS_HANDLER, seed=1)
    t.make_mar(store / "fn.mar", "fn", t.FUNCTION_HANDLER, seed=2)
    t.make_mar(store / "echo.mar", "echo", t.ECHO_HANDLER, handler="echo.py:echo")
    t.make_mar(store / "probe.mar", "probe", PROBE_HANDLER, handler="probe.py")
    t.make_mar(store / "raising.mar", "raising", RAISING_HANDLER, handler="raising.py")
    t.make_mar(store / "batched.mar", "batched", t.CLASS_HANDLER, seed=3, version="2.0")
    # in the store, not in the config: for the management API's register
    t.make_mar(store / "extra.mar", "extra", t.CLASS_HANDLER, seed=5)
    t.make_mar(store / "lin2.mar", "lin", t.CLASS_HANDLER, seed=7, version="2.0")
    t.make_mar(store / "yamlcfg.mar", "yamlcfg", t.CLASS_HANDLER, seed=8, config_yaml=YAML_CONFIG)
    (root / "config").mkdir(parents=True, exist_ok=True)
    models = {n: {} for n in ("lin", "fn", "echo", "probe", "raising")}
    models["batched"] = {"version": "2.0", "batchSize": 4, "maxBatchDelay": 50}
    # the model API on (TorchServe 0.12 refuses register and unregister without it: REST 405, gRPC
    # PERMISSION_DENIED, both seen from it and in tests/test_torchserve.py); default_workers_per_model as
    # run_torchserve.py sets it
    (root / "config" / "config.properties").write_text(snapshot_properties(models) + "enable_model_api=true\n"
                                                        "default_workers_per_model=1\nmetrics_mode=prometheus\n")
    return root


MODELS = ("lin", "fn", "echo", "probe", "raising", "batched")
# an archive's model-config.yaml (torch-model-archiver --config-file): its values over the register's defaults
YAML_CONFIG = "minWorkers: 1\nmaxWorkers: 2\nbatchSize: 3\nmaxBatchDelay: 40\nresponseTimeout: 77\ndeviceType: cpu\n"


def normalise(value):
    if isinstance(value, dict):
        return {k: (VOLATILE[k] if k in VOLATILE else normalise(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if isinstance(value, str):
        return UUID.sub("<uuid>", value)
    return value


def body_of(content: bytes):
    try:
        return ("json", normalise(json.loads(content)))
    except ValueError:
        return ("bytes", UUID.sub("<uuid>", content.decode("latin-1")))


# REST ------------------------------------------------------------------------------------------------------------

BOUNDARY = "tsconformanceboundary"


def multipart(parts) -> bytes:
    out = b""
    for name, filename, ctype, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disp}\r\n".encode()
        if ctype:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


MP = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
# as curl and most clients send it; the lowercase form is its own case (KEPT)
OCTET = {"Content-Type": "application/octet-stream"}
JSONH = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

# (case, plane: "inference"|"management", method, path, body, headers)
REST = [
    ("ping", "inference", "GET", "/ping", None, {}),
    ("models", "management", "GET", "/models", None, {}),
    ("describe lin", "management", "GET", "/models/lin", None, {}),
    ("describe lin/1.0", "management", "GET", "/models/lin/1.0", None, {}),
    ("describe lin/all", "management", "GET", "/models/lin/all", None, {}),
    ("describe batched", "management", "GET", "/models/batched", None, {}),
    ("describe missing model", "management", "GET", "/models/nope", None, {}),
    ("describe missing version", "management", "GET", "/models/lin/9.0", None, {}),
    ("lin json list", "inference", "POST", "/predictions/lin", b"[1, 2, 3, 4]", JSONH),
    ("lin raw bytes", "inference", "POST", "/predictions/lin", b"[1, 2, 3, 4]", OCTET),
    ("lin version 1.0", "inference", "POST", "/predictions/lin/1.0", b"[1, 2, 3, 4]", JSONH),
    ("lin missing version", "inference", "POST", "/predictions/lin/9.0", b"[1, 2, 3, 4]", JSONH),
    ("missing model", "inference", "POST", "/predictions/nope", b"[1, 2, 3, 4]", JSONH),
    ("batched json list", "inference", "POST", "/predictions/batched", b"[1, 2, 3, 4]", JSONH),
    ("fn json", "inference", "POST", "/predictions/fn", b"[0.5, 1, 2, 3]", JSONH),
    ("fn handler failure", "inference", "POST", "/predictions/fn", b'"fail"', JSONH),
    ("raising handler", "inference", "POST", "/predictions/raising", b"[1]", JSONH),
    ("echo raw bytes", "inference", "POST", "/predictions/echo", b"abc\x00\xff", OCTET),
    ("echo no content type", "inference", "POST", "/predictions/echo", b"abc", {}),
    ("echo json object", "inference", "POST", "/predictions/echo", b'{"a": [1, 2]}', JSONH),
    ("echo json charset", "inference", "POST", "/predictions/echo", b'{"a": 1}',
     {"Content-Type": "application/json; charset=utf-8"}),
    ("echo lowercase content-type", "inference", "POST", "/predictions/echo", b"abc",
     {"content-type": "application/octet-stream"}),
    ("echo broken json", "inference", "POST", "/predictions/echo", b'{"a": [1', JSONH),
    ("echo text", "inference", "POST", "/predictions/echo", "h\u00e9llo".encode(), TEXT),
    ("echo multipart two parts", "inference", "POST", "/predictions/echo",
     multipart([("data", "f.bin", "application/octet-stream", b"\x01\x02"), ("x", None, None, b"12")]), MP),
    ("echo url-encoded form", "inference", "POST", "/predictions/echo", b"a=1&b=two+words&c=%41", FORM),
    ("echo status+content type", "inference", "POST", "/predictions/echo", b"teapot", TEXT),
    ("echo bytes answer", "inference", "POST", "/predictions/echo", b"bytes", TEXT),
    ("echo empty body", "inference", "POST", "/predictions/echo", b"", OCTET),
    ("probe headers", "inference", "POST", "/predictions/probe", b'{"q": 1}', {**JSONH, "x-custom": "yes"}),
    ("probe multipart headers", "inference", "POST", "/predictions/probe",
     multipart([("img", "a.png", "image/png", b"\x89PNG"), ("meta", None, None, b"{}")]), MP),
    ("probe form headers", "inference", "POST", "/predictions/probe", b"k=v", FORM),
    ("probe PUT", "inference", "PUT", "/predictions/probe", b"x", OCTET),
    ("probe GET", "inference", "GET", "/predictions/probe", None, {}),
    ("unknown path", "inference", "GET", "/nothing/here", None, {}),
]


# The management writes, in this order on each server (each changes what the next finds); ("wait", NAME) waits
# until NAME has a READY worker (after an asynchronous write) and is no case.
X = b"[1, 2, 3, 4]"
WRITES = [
    ("register extra", "management", "POST", "/models?url=extra.mar&initial_workers=1&synchronous=true", None, {}),
    ("register extra again", "management", "POST", "/models?url=extra.mar&initial_workers=1&synchronous=true",
     None, {}),
    ("register missing archive", "management", "POST", "/models?url=missing.mar", None, {}),
    ("register missing absolute path", "management", "POST", "/models?url=/abs/missing.mar", None, {}),
    ("register relative path", "management", "POST", "/models?url=../model-store/extra.mar", None, {}),
    ("register missing file url", "management", "POST", "/models?url=file:///nonexistent/x.mar", None, {}),
    ("register no url", "management", "POST", "/models", None, {}),
    ("register renamed batched", "management", "POST", "/models?url=extra.mar&model_name=ex2&batch_size=2&"
     "max_batch_delay=30&initial_workers=1&synchronous=true", None, {}),
    ("describe ex2", "management", "GET", "/models/ex2", None, {}),
    ("predict ex2", "inference", "POST", "/predictions/ex2", X, JSONH),
    ("models after register", "management", "GET", "/models", None, {}),
    ("models limit 2", "management", "GET", "/models?limit=2", None, {}),
    ("models limit 2 token 6", "management", "GET", "/models?limit=2&next_page_token=6", None, {}),
    ("models limit 0", "management", "GET", "/models?limit=0", None, {}),
    ("models limit abc", "management", "GET", "/models?limit=abc", None, {}),
    ("scale extra to 2", "management", "PUT", "/models/extra?min_worker=2&synchronous=true", None, {}),
    ("describe extra 2 workers", "management", "GET", "/models/extra", None, {}),
    ("predict extra 2 workers", "inference", "POST", "/predictions/extra", X, JSONH),
    ("scale extra to 0", "management", "PUT", "/models/extra?min_worker=0&synchronous=true", None, {}),
    ("describe extra 0 workers", "management", "GET", "/models/extra", None, {}),
    ("predict extra no worker", "inference", "POST", "/predictions/extra", X, JSONH),
    ("predict extra version no worker", "inference", "POST", "/predictions/extra/1.0", X, JSONH),
    ("scale extra to 1 async", "management", "PUT", "/models/extra?min_worker=1", None, {}),
    ("wait", "extra"),
    ("describe extra after async scale", "management", "GET", "/models/extra", None, {}),
    ("predict extra", "inference", "POST", "/predictions/extra", X, JSONH),
    ("scale missing model", "management", "PUT", "/models/nope?min_worker=1", None, {}),
    ("scale missing version", "management", "PUT", "/models/extra/9.0?min_worker=1", None, {}),
    ("scale max below min", "management", "PUT", "/models/extra?min_worker=3&max_worker=2", None, {}),
    ("scale extra version", "management", "PUT", "/models/extra/1.0?min_worker=1&synchronous=true", None, {}),
    ("register lin 2.0", "management", "POST", "/models?url=lin2.mar&initial_workers=1&synchronous=true", None, {}),
    ("describe lin all", "management", "GET", "/models/lin/all", None, {}),
    ("predict lin default", "inference", "POST", "/predictions/lin", X, JSONH),
    ("predict lin 2.0", "inference", "POST", "/predictions/lin/2.0", X, JSONH),
    ("set default lin 2.0", "management", "PUT", "/models/lin/2.0/set-default", None, {}),
    ("predict lin after set-default", "inference", "POST", "/predictions/lin", X, JSONH),
    ("describe lin default", "management", "GET", "/models/lin", None, {}),
    ("set default missing version", "management", "PUT", "/models/lin/9.0/set-default", None, {}),
    ("set default missing model", "management", "PUT", "/models/nope/1.0/set-default", None, {}),
    ("unregister default version", "management", "DELETE", "/models/lin", None, {}),
    ("unregister lin 1.0", "management", "DELETE", "/models/lin/1.0", None, {}),
    ("describe lin all after unregister", "management", "GET", "/models/lin/all", None, {}),
    ("predict lin 1.0 unregistered", "inference", "POST", "/predictions/lin/1.0", X, JSONH),
    ("unregister missing version", "management", "DELETE", "/models/lin/9.0", None, {}),
    ("unregister missing model", "management", "DELETE", "/models/nope", None, {}),
    ("unregister extra", "management", "DELETE", "/models/extra", None, {}),
    ("predict unregistered", "inference", "POST", "/predictions/extra", X, JSONH),
    ("describe unregistered", "management", "GET", "/models/extra", None, {}),
    ("register default workers", "management", "POST", "/models?url=extra.mar", None, {}),
    ("unregister extra again", "management", "DELETE", "/models/extra?synchronous=true", None, {}),
    ("register async", "management", "POST", "/models?url=extra.mar&initial_workers=1&synchronous=false", None, {}),
    ("wait", "extra"),
    ("describe after async register", "management", "GET", "/models/extra", None, {}),
    ("register json body", "management", "POST", "/models",
     b'{"url": "extra.mar", "model_name": "ex3", "initial_workers": 1}', JSONH),
    ("describe ex3", "management", "GET", "/models/ex3", None, {}),
    ("register zero workers", "management", "POST", "/models?url=extra.mar&model_name=ex4&initial_workers=0",
     None, {}),
    ("describe ex4", "management", "GET", "/models/ex4", None, {}),
    ("register with model-config.yaml", "management", "POST", "/models?url=yamlcfg.mar&initial_workers=1&"
     "synchronous=true", None, {}),
    ("describe yamlcfg", "management", "GET", "/models/yamlcfg", None, {}),
    ("predict yamlcfg", "inference", "POST", "/predictions/yamlcfg", X, JSONH),
    ("register yaml over given batch_size", "management", "POST", "/models?url=yamlcfg.mar&model_name=yaml2&"
     "batch_size=5&initial_workers=3&synchronous=true", None, {}),
    ("describe yaml2", "management", "GET", "/models/yaml2", None, {}),
    ("PATCH models", "management", "PATCH", "/models", None, {}),
    ("POST a model's path", "management", "POST", "/models/extra", None, {}),
]


def rest_answer(client: httpx.Client, base: str, method: str, path: str, body, headers):
    r = client.request(method, base + path, content=body, headers={"user-agent": "conformance", **headers})
    ctype = r.headers.get("content-type")
    return {"status": r.status_code, "content-type": ctype, "body": body_of(r.content)}


# gRPC ------------------------------------------------------------------------------------------------------------

def grpc_cases(pb):
    inf, man = "inference.InferenceAPIsService", "management.ManagementAPIsService"
    P, D, L = pb.PredictionsRequest, pb.DescribeModelRequest, pb.ListModelsRequest
    return [
        ("grpc Ping", "inference", inf, "Ping", pb.Empty(), pb.TorchServeHealthResponse, False),
        ("grpc Predictions lin", "inference", inf, "Predictions", P(model_name="lin", input={"data": b"[1, 2, 3, 4]"}),
         pb.PredictionResponse, False),
        ("grpc Predictions lin version", "inference", inf, "Predictions",
         P(model_name="lin", model_version="1.0", input={"data": b"[1, 2, 3, 4]"}), pb.PredictionResponse, False),
        ("grpc Predictions echo multi-key", "inference", inf, "Predictions",
         P(model_name="echo", input={"a": b"1", "b": b"xy"}), pb.PredictionResponse, False),
        ("grpc Predictions echo body", "inference", inf, "Predictions", P(model_name="echo", input={"body": b"abc"}),
         pb.PredictionResponse, False),
        ("grpc Predictions echo status", "inference", inf, "Predictions",
         P(model_name="echo", input={"body": b"teapot"}), pb.PredictionResponse, False),
        ("grpc Predictions probe", "inference", inf, "Predictions", P(model_name="probe", input={"data": b"1"}),
         pb.PredictionResponse, False),
        ("grpc Predictions missing model", "inference", inf, "Predictions", P(model_name="nope"),
         pb.PredictionResponse, False),
        ("grpc Predictions missing version", "inference", inf, "Predictions",
         P(model_name="lin", model_version="9.0", input={"data": b"[1]"}), pb.PredictionResponse, False),
        ("grpc Predictions no model_name", "inference", inf, "Predictions", P(), pb.PredictionResponse, False),
        ("grpc Predictions handler failure", "inference", inf, "Predictions",
         P(model_name="fn", input={"data": b'"fail"'}), pb.PredictionResponse, False),
        ("grpc Predictions raising", "inference", inf, "Predictions", P(model_name="raising", input={"data": b"1"}),
         pb.PredictionResponse, False),
        ("grpc StreamPredictions fn", "inference", inf, "StreamPredictions",
         P(model_name="fn", input={"data": b"[1, 2, 3, 4]"}), pb.PredictionResponse, True),
        ("grpc DescribeModel lin", "management", man, "DescribeModel", D(model_name="lin"), pb.ManagementResponse,
         False),
        ("grpc DescribeModel lin all", "management", man, "DescribeModel", D(model_name="lin", model_version="all"),
         pb.ManagementResponse, False),
        ("grpc DescribeModel missing version", "management", man, "DescribeModel",
         D(model_name="lin", model_version="9.0"), pb.ManagementResponse, False),
        ("grpc DescribeModel missing", "management", man, "DescribeModel", D(model_name="nope"),
         pb.ManagementResponse, False),
        ("grpc ListModels", "management", man, "ListModels", L(), pb.ManagementResponse, False),
        ("grpc ListModels limit 2", "management", man, "ListModels", L(limit=2), pb.ManagementResponse, False),
        ("grpc ListModels limit 2 token 2", "management", man, "ListModels", L(limit=2, next_page_token=2),
         pb.ManagementResponse, False),
        ("grpc ListModels token past end", "management", man, "ListModels", L(limit=2, next_page_token=50),
         pb.ManagementResponse, False),
    ]


def grpc_writes(pb):
    man = "management.ManagementAPIsService"
    R, S, U = pb.RegisterModelRequest, pb.ScaleWorkerRequest, pb.UnregisterModelRequest
    return [
        ("grpc RegisterModel", man, "RegisterModel", R(url="extra.mar", model_name="gx", initial_workers=1,
                                                        synchronous=True)),
        ("grpc RegisterModel again", man, "RegisterModel", R(url="extra.mar", model_name="gx", initial_workers=1,
                                                              synchronous=True)),
        ("grpc RegisterModel missing", man, "RegisterModel", R(url="missing.mar")),
        ("grpc RegisterModel no url", man, "RegisterModel", R()),
        ("grpc ScaleWorker gx 2", man, "ScaleWorker", S(model_name="gx", min_worker=2, synchronous=True)),
        ("grpc ScaleWorker missing", man, "ScaleWorker", S(model_name="nope", min_worker=1)),
        ("grpc ScaleWorker max below min", man, "ScaleWorker", S(model_name="gx", min_worker=3, max_worker=2)),
        ("grpc ScaleWorker async", man, "ScaleWorker", S(model_name="gx", min_worker=1)),
        ("wait", "gx"),
        ("grpc SetDefault missing version", man, "SetDefault", pb.SetDefaultRequest(model_name="gx",
                                                                                     model_version="9.0")),
        ("grpc SetDefault", man, "SetDefault", pb.SetDefaultRequest(model_name="gx", model_version="1.0")),
        ("grpc UnregisterModel missing", man, "UnregisterModel", U(model_name="nope")),
        ("grpc UnregisterModel missing version", man, "UnregisterModel", U(model_name="gx", model_version="9.0")),
        ("grpc UnregisterModel gx", man, "UnregisterModel", U(model_name="gx")),
        ("grpc RegisterModel async", man, "RegisterModel", R(url="extra.mar", model_name="gy", initial_workers=1)),
        ("wait", "gy"),
        ("grpc DescribeModel gy", man, "DescribeModel", pb.DescribeModelRequest(model_name="gy")),
    ]


# TorchServe's metrics (metrics_mode=prometheus; gpuserve's server/torchserve_metrics.py)
TS_FAMILIES = ("ts_inference_requests_total", "ts_inference_latency_microseconds", "ts_queue_latency_microseconds",
               "Requests2XX", "Requests4XX", "Requests5XX", "HandlerTime", "PredictionTime")
LABEL = re.compile(r'(\w+)="([^"]*)"')


def metrics_summary(text: str) -> dict:
    """Each TorchServe family's HELP, TYPE and samples (labels, the host normalised), with the request counts'
    values; the others' vary from run to run (timings), and the status-class counters count every request on
    TorchServe's ports (its own polls too) but only those of the TorchServe routes on gpuserve's."""
    out = {}
    for family in TS_FAMILIES:
        helps = re.search(rf"^# HELP {family} (.*)$", text, re.M)
        types = re.search(rf"^# TYPE {family} (\S+)$", text, re.M)
        samples = {}
        for match in re.finditer(rf"^{family}\{{([^}}]*)\}} (\S+)$", text, re.M):
            labels = ",".join(f"{k}={'<host>' if k.lower() == 'hostname' else v}"
                              for k, v in LABEL.findall(match.group(1)))
            samples[labels] = float(match.group(2)) if family == "ts_inference_requests_total" else "<value>"
        out[family] = {"help": helps and helps.group(1), "type": types and types.group(1),
                       "samples": "<host counter>" if family.startswith("Requests") else samples}
    return out


def scrape(client: httpx.Client, base: str) -> dict:
    return {"body": ("json", metrics_summary(client.get(f"{base}/metrics").text))}


def wait_ready(client: httpx.Client, base: str, name: str, timeout: float = 120.0) -> None:
    """Until `name` has a READY worker (an asynchronous write done), on either server."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"{base}/models/{name}")
        if r.status_code == 200 and any(w.get("status") == "READY" for w in r.json()[0].get("workers", [])):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{name} has no READY worker after {timeout:.0f} s")


def grpc_answer(grpc, channel, service, method, message, response, streaming):
    path = f"/org.pytorch.serve.grpc.{service}/{method}"
    make = channel.unary_stream if streaming else channel.unary_unary
    stub = make(path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=response.FromString)
    try:
        got = stub(message, timeout=60)
        got = list(got) if streaming else [got]
    except grpc.RpcError as exc:
        return {"code": exc.code().name, "details": UUID.sub("<uuid>", exc.details() or "")}
    out = []
    for item in got:
        fields = {f.name: v for f, v in item.ListFields()}
        for key in ("prediction", "msg", "health"):
            if key in fields:
                raw = fields[key]
                fields[key] = body_of(raw if isinstance(raw, bytes) else raw.encode())
        out.append(fields)
    return {"code": "OK", "answers": out}


# both servers ----------------------------------------------------------------------------------------------------

def start_gpuserve(store: Path, work: Path):
    http, grpc_port, metrics = free_port(), free_port(), free_port()
    cmd = [gpuserve_bin(), "start", str(store), "--http-port", str(http), "--grpc-port", str(grpc_port),
           "--metrics-port", str(metrics)]
    process = ServerProcess("gpuserve", cmd, work / "gpuserve.log").start()
    base = f"http://127.0.0.1:{http}"
    bases = {"inference": base, "management": base, "metrics": f"http://127.0.0.1:{metrics}"}
    process.wait_ready([f"{base}/v2/health/live"] + [f"{base}/v2/models/{m}/ready" for m in MODELS], timeout=180)
    addr = f"127.0.0.1:{grpc_port}"
    return process, bases, {"inference": addr, "management": addr}


def collect(bases, addrs, only: str):
    import grpc

    from gpuserve.server.grpc import torchserve_pb2 as pb

    answers = {}
    with httpx.Client(timeout=60) as client:
        for name, plane, method, path, body, headers in REST:
            if only in name:
                answers[name] = rest_answer(client, bases[plane], method, path, body, headers)
    channels = {k: grpc.insecure_channel(v) for k, v in addrs.items()}
    try:
        for name, plane, service, method, message, response, streaming in grpc_cases(pb):
            if only in name:
                answers[name] = grpc_answer(grpc, channels[plane], service, method, message, response, streaming)
        with httpx.Client(timeout=120) as client:  # the writes run whole: each case finds what the last made
            if only in "metrics after the reads":
                answers["metrics after the reads"] = scrape(client, bases["metrics"])
            for name, *step in WRITES:
                if name == "wait":
                    wait_ready(client, bases["management"], step[0])
                    continue
                plane, method, path, body, headers = step
                answer = rest_answer(client, bases[plane], method, path, body, headers)
                if only in name:
                    answers[name] = answer
            for name, *step in grpc_writes(pb):
                if name == "wait":
                    wait_ready(client, bases["management"], step[0])
                    continue
                service, method, message = step
                answer = grpc_answer(grpc, channels["management"], service, method, message, pb.ManagementResponse,
                                     False)
                if only in name:
                    answers[name] = answer
            if only in "metrics after the writes":
                answers["metrics after the writes"] = scrape(client, bases["metrics"])
    finally:
        for c in channels.values():
            c.close()
    return answers


def short(value, width: int = 150) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= width else text[:width - 3] + "..."


def diff_paths(a, b, prefix=""):
    """Where two answers differ (dotted paths), for a readable table."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{prefix}{k}({'ts only' if k in a else 'gpuserve only'})")
            else:
                out += diff_paths(a[k], b[k], f"{prefix}{k}.")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += diff_paths(x, y, f"{prefix}{i}.")
        return out
    return [] if a == b else [prefix.rstrip(".") or "value"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep-store", type=Path, default=None, help="build the store here and keep it")
    parser.add_argument("--only", default="", help="run only cases whose name contains this")
    parser.add_argument("--work", type=Path, default=None, help="keep the servers' logs here")
    parser.add_argument("--json", type=Path, default=None, help="write both sides' answers here")
    args = parser.parse_args(argv)
    reason = available()
    if reason:
        print(f"torchserve peer unavailable: {reason}", file=sys.stderr)
        return 2
    scratch = args.work or Path(tempfile.mkdtemp(prefix="ts-conformance-"))
    store = build_store(args.keep_store or scratch / "store")
    try:
        with TorchServe(store, scratch / "ts", MODELS) as ts:
            theirs = collect({"inference": ts.inference, "management": ts.management,
                              "metrics": f"http://127.0.0.1:{ts.ports['metrics']}"},
                             {"inference": ts.grpc_inference, "management": ts.grpc_management}, args.only)
        process, bases, addrs = start_gpuserve(store, scratch)
        try:
            ours = collect(bases, addrs, args.only)
        finally:
            process.stop()
    finally:
        if args.work is None:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps({"torchserve": theirs, "gpuserve": ours}, indent=1, default=str))
    counts = {"same": 0, "kept": 0, "differ": 0}
    print("| case | outcome | TorchServe 0.12 | gpuserve |\n|---|---|---|---|")
    for name in theirs:
        a, b = theirs[name], ours[name]
        if a == b:
            counts["same"] += 1
            print(f"| {name} | same | | |")
            continue
        outcome = "kept" if name in KEPT else "differ"
        counts[outcome] += 1
        where = ", ".join(diff_paths(a, b))
        print(f"| {name} | {outcome}: {where} | {short(a)} | {short(b)} |")
    print()
    for name, why in KEPT.items():
        if name in theirs and theirs[name] != ours.get(name):
            print(f"kept: {name}: {why}")
    print(textwrap.dedent(f"""
        {len(theirs)} cases: {counts['same']} same, {counts['kept']} kept, {counts['differ']} differ"""))
    return 0 if counts["differ"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
