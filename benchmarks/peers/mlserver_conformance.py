"""Custom MLServer runtimes (`mlserver.MLModel` subclasses) on real MLServer 1.7.1 and on gpuserve, side by side.

Why: an MLServer user's folder of model-settings.json files and runtimes must answer on gpuserve what it
answers on MLServer. This script builds one folder of small runtimes covering what such users bring
(NumpyCodec, StringCodec, Base64Codec, DatetimeCodec and PandasCodec at request and input level,
`@decode_args`, request/response `parameters` and headers, requested outputs, errors, adaptive batching,
two versions of one model, declared metadata), serves it with both servers, sends the same requests and
prints each case's status and body (and the headers a user reads) side by side.

Not a test: it needs the MLServer peer venv (bash benchmarks/peers/setup.sh mlserver). Run by hand:

    .venv/bin/python benchmarks/peers/mlserver_conformance.py [--only SUBSTRING] [--show-all] [--keep DIR]

Compared exactly: status (HTTP status / gRPC code), bodies with request ids, UUIDs and times masked and
the order of dict keys ignored; error bodies by their keys only (messages are shown, not compared).
Ports: MLServer 9600-9602, gpuserve 9610-9612 (--port-base moves both).

Counts, session 18 (2026-12-05): before the fixes 102 cases, 24 differ (2 of them because the peer venv had
pandas 3, where MLServer 1.7.1's PandasCodec fails with KeyError 'O': setup.sh pins pandas<3); after them, with
19 more cases (custom handler, gzip, text/plain, requested outputs' content types, a model whose load fails,
tritonclient.grpc), 121 cases, 25 differ, every one kept on purpose (KEPT below says why; README "Coming from
MLServer"). Fixed in gpuserve: an MLServer model's ready endpoint answers an empty 200, metadata leaves out
`"parameters": {}` a settings file did not write, a missing version is named in the 404, and /metrics has
MLServer's rest_server_request_duration_seconds and grpc_server_started_total.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
MLSERVER = ROOT / ".peers" / "mlserver" / "bin" / "mlserver"
GPUSERVE = ROOT / ".venv" / "bin" / "gpuserve"

# Differences kept on purpose: case label -> reason (README "Coming from MLServer").
_CLIENT_MISTAKE = ("MLServer answers a client's mistake with 422 (FastAPI's validation body) or 500 (the exception "
                   "its codec raised); gpuserve says 400 with the reason")
_TRITON_READY = ("gRPC ModelReady for a model not loaded: OK with ready=false, as Triton answers and tritonclient's "
                 "is_model_ready expects; MLServer 1.7.1 fails the call with UNKNOWN 'Unexpected <class "
                 "ModelNotFound>'")
_FAILED_LOAD = ("a model whose load failed stays listed, not ready, with its reason (README: ready and infer answer "
                "503 with it, the index gives it, metadata still answers); MLServer forgets it (404, 'not found', "
                "no reason in the index)")
KEPT = {
    "GET /v2/health/live": "200 with KServe V2's body ({\"live\": true} / {\"ready\": true}); MLServer and Triton send no "
                       "body, and their clients and probes read only the status",
    "GET /v2/health/ready": "200 with KServe V2's body, as /v2/health/live",
    "GET /v2": "the server's own name and version, and Triton's extension list (tritonclient reads it)",
    "grpc ServerMetadata": "the server's own name and version, and Triton's extension list",
    "malformed JSON": _CLIENT_MISTAKE, "no inputs field": _CLIENT_MISTAKE, "bad datatype": _CLIENT_MISTAKE,
    "shape mismatch": _CLIENT_MISTAKE, "string in FP32": _CLIENT_MISTAKE, "input not a list": _CLIENT_MISTAKE,
    "decode-args missing input": _CLIENT_MISTAKE,
    "pd-echo ragged": "columns of unequal length are a 400 with the reason; MLServer's pandas aligns them and pads "
                      "the short ones with NaN (an int column turns float) without a word",
    "text/plain body": "the body is read as JSON whatever the Content-Type says, as Triton reads it (curl -d sends "
                       "form-urlencoded); MLServer answers 422",
    "version of an unversioned model": "a model without versions answers any version a client names, as "
                                       "tritonclient users pass model_version='1' by habit; MLServer answers 404",
    "batched three at once": "adaptive batching hands the runtime each request-level parameter as a list of every "
                             "request's value; MLServer 1.7.1 keeps one request's value and drops the others",
    "grpc ModelReady unknown": _TRITON_READY, "grpc ModelReady after unload": _TRITON_READY,
    "tritonclient.grpc is_model_ready unknown": _TRITON_READY,
    "grpc infer params": "MLServer 1.7.1 fails (INTERNAL 'expected bytes, str found') when a response parameter is "
                         "a dict (here `headers`); gpuserve answers",
    "grpc repository index": "state 'READY' as in the REST index; MLServer 1.7.1 on Python 3.11 writes 'State.READY' "
                             "(str() of its enum)",
    "broken ready": _FAILED_LOAD, "broken infer": _FAILED_LOAD, "broken metadata": _FAILED_LOAD,
    "index with broken": _FAILED_LOAD,
    "metrics names": "parallel_request_queue exists once a model runs in parallel workers; gpuserve runs a custom "
                     "runtime in process unless its parallel_workers is set (MLServer's default is 1 worker)",
}

RUNTIMES = r'''
import json
from datetime import datetime
from typing import List

import numpy as np
from mlserver import MLModel
from mlserver.codecs import (Base64Codec, DatetimeCodec, NumpyCodec, NumpyRequestCodec, PandasCodec,
                             StringCodec, StringRequestCodec, decode_args)
from mlserver.errors import MLServerError
from mlserver.handlers import custom_handler
from mlserver.types import InferenceRequest, InferenceResponse, Parameters, ResponseOutput

HIDDEN = ("ce-id", "ce-time", "host", "content-length", "user-agent", "accept-encoding",
          "accept", "connection")
SERVER_NAMED = ("ce-source", "ce-inferenceservicename")  # the server's own name: mlserver / gpuserve


def describe(value):
    if isinstance(value, np.ndarray):
        items = value.tolist()
        return {"type": "ndarray", "dtype": str(value.dtype), "shape": list(value.shape),
                "value": json.loads(json.dumps(items, default=repr))}
    if type(value).__name__ == "DataFrame":
        return {"type": "DataFrame", "columns": [str(c) for c in value.columns],
                "dtypes": ["object" if str(d) == "str" else str(d) for d in value.dtypes], "rows": [[repr(v) for v in row] for row in value.values.tolist()]}
    if isinstance(value, list):
        return {"type": "list", "items": [repr(v) for v in value]}
    return {"type": type(value).__name__, "repr": repr(value)}


def params_dict(parameters):
    if parameters is None:
        return None
    seen = parameters.model_dump() if hasattr(parameters, "model_dump") else dict(parameters)
    seen = {k: v for k, v in seen.items() if v is not None}
    if isinstance(seen.get("headers"), dict):
        seen["headers"] = {k: ("<server>" if k.lower() in SERVER_NAMED else v) for k, v in sorted(seen["headers"].items())
                           if k.lower() not in HIDDEN}
    return seen


class Describe(MLModel):
    """What each input decodes to (its own content type, the metadata's, or none) and the whole request."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        seen = {inp.name: describe(self.decode(inp)) for inp in payload.inputs}
        try:
            whole = self.decode_request(payload)
            whole = "the request itself" if whole is payload else describe(whole)
        except Exception as exc:  # noqa: BLE001
            whole = {"error": type(exc).__name__}
        text = json.dumps({"inputs": seen, "request": whole}, sort_keys=True)
        return InferenceResponse(model_name=self.name, model_version=self.version,
                                 outputs=[StringCodec.encode_output("described", [text])])


class Encoders(MLModel):
    """One output per codec, so each codec's output datatype, shape, data and content_type are compared."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        outputs = [NumpyCodec.encode_output("np", np.array([[1, 2], [3, 4]], dtype=np.int32)),
                   NumpyCodec.encode_output("npf", np.array([0.5, 1.5], dtype=np.float32)),
                   NumpyCodec.encode_output("npb", np.array([True, False])),
                   StringCodec.encode_output("str", ["a", "b\u00e9"]),
                   Base64Codec.encode_output("b64", [b"\x00\x01hi"]),
                   DatetimeCodec.encode_output("dt", [datetime(2024, 1, 2, 3, 4, 5)])]
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=outputs)


class NumpyEcho(MLModel):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        array = self.decode_request(payload, default_codec=NumpyRequestCodec)
        return NumpyRequestCodec.encode_response(self.name, array * 2, self.version)


class StringUpper(MLModel):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        texts = self.decode_request(payload, default_codec=StringRequestCodec)
        return StringRequestCodec.encode_response(self.name, [t.upper() for t in texts], self.version)


class PandasEcho(MLModel):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        frame = self.decode_request(payload, default_codec=PandasCodec)
        frame["rows"] = np.arange(len(frame), dtype=np.int64)
        return PandasCodec.encode_response(self.name, frame, self.version)


class DecodeArgs(MLModel):
    @decode_args
    async def predict(self, foo: np.ndarray, bar: List[str]) -> np.ndarray:
        return foo.sum(axis=-1, keepdims=True) + len(bar)


class Params(MLModel):
    """Echoes what the runtime sees of parameters, headers and requested outputs; sets response headers."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        seen = {"parameters": params_dict(payload.parameters), "id": payload.id is not None,
                "outputs": [[o.name, params_dict(o.parameters)] for o in payload.outputs or []],
                "inputs": [[i.name, params_dict(i.parameters)] for i in payload.inputs]}
        return InferenceResponse(
            model_name=self.name, model_version=self.version, id=payload.id,
            parameters=Parameters(headers={"x-custom-out": "yes"}, answered="params"),
            outputs=[ResponseOutput(name="seen", shape=[1], datatype="BYTES",
                                    data=[json.dumps(seen, sort_keys=True)],
                                    parameters=Parameters(content_type="str", note="out")),
                     ResponseOutput(name="other", shape=[1], datatype="INT32", data=[7])])


class Handled(MLModel):
    """A custom REST route (MLflow's /invocations style) next to predict."""

    @custom_handler(rest_path="/my-route", rest_method="POST")
    async def my_route(self, payload: dict) -> dict:
        return {"got": payload, "model": self.name}

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        return InferenceResponse(model_name=self.name, outputs=[])


class Asked(MLModel):
    """Encodes by what the request asked for each output (`self.encode` reads its content_type)."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        values = {"words": ["a", "b"], "numbers": np.array([1.5, 2.5]), "blob": [b"hi"]}
        asked = payload.outputs or []
        return InferenceResponse(model_name=self.name, outputs=[
            self.encode(values[o.name], o, default_codec=NumpyCodec if o.name == "numbers" else StringCodec)
            for o in asked])


class Broken(MLModel):
    async def load(self) -> bool:
        raise RuntimeError("cannot load this one")

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        raise AssertionError("never loaded")


class Raiser(MLModel):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        what = int(NumpyCodec.decode_input(payload.inputs[0]).ravel()[0])
        if what == 0:
            raise ValueError("boom")
        if what == 1:
            raise MLServerError("teapot", status_code=418)
        if what == 2:
            raise MLServerError("plain")
        return InferenceResponse(model_name=self.name, outputs=[])


class Batched(MLModel):
    """Adaptive batching: the batch's rows and the merged request parameters, split back per request."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        rows = np.full((x.shape[0], 1), x.shape[0], dtype=np.int64)
        return InferenceResponse(model_name=self.name, model_version=self.version,
                                 parameters=Parameters(**{k: v for k, v in (params_dict(payload.parameters) or {}).items()
                                                          if k != "headers"}),
                                 outputs=[NumpyCodec.encode_output("x", x), NumpyCodec.encode_output("rows", rows)])


class Version(MLModel):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        return InferenceResponse(model_name=self.name, model_version=self.version,
                                 outputs=[StringCodec.encode_output("version", [str(self.version)])])
'''

MODELS = {
    "describe": {"implementation": "conf_runtimes.Describe"},
    "encoders": {"implementation": "conf_runtimes.Encoders"},
    "np-echo": {"implementation": "conf_runtimes.NumpyEcho"},
    "str-upper": {"implementation": "conf_runtimes.StringUpper"},
    "pd-echo": {"implementation": "conf_runtimes.PandasEcho"},
    "decode-args": {"implementation": "conf_runtimes.DecodeArgs"},
    "params": {"implementation": "conf_runtimes.Params"},
    "raiser": {"implementation": "conf_runtimes.Raiser"},
    "handled": {"implementation": "conf_runtimes.Handled"},
    "asked": {"implementation": "conf_runtimes.Asked",
              "outputs": [{"name": "blob", "datatype": "BYTES", "shape": [-1], "parameters": {"content_type": "base64"}}]},
    "batched": {"implementation": "conf_runtimes.Batched", "max_batch_size": 3, "max_batch_time": 2.0},
    "meta": {"implementation": "conf_runtimes.Describe", "platform": "custom-platform", "versions": ["m1"],
             "inputs": [{"name": "when", "datatype": "BYTES", "shape": [-1], "parameters": {"content_type": "datetime"}},
                        {"name": "blob", "datatype": "BYTES", "shape": [-1], "parameters": {"content_type": "base64"}}],
             "outputs": [{"name": "described", "datatype": "BYTES", "shape": [1]}],
             "parameters": {"version": "m1", "content_type": "str", "extra": {"k": "v"}}},
    "mv/v1": {"name": "mv", "implementation": "conf_runtimes.Version", "parameters": {"version": "v1"}},
    "mv/v2": {"name": "mv", "implementation": "conf_runtimes.Version", "parameters": {"version": "v2"}},
}
READY = ["asked", "handled", "describe", "encoders", "np-echo", "str-upper", "pd-echo", "decode-args", "params", "raiser", "batched",
         "meta", "mv/versions/v1", "mv/versions/v2"]


def build(repo: Path) -> None:
    for folder, settings in MODELS.items():
        path = repo / folder
        path.mkdir(parents=True)
        settings = {"name": folder, **settings}
        (path / "model-settings.json").write_text(json.dumps(settings, indent=1))
        (path / "conf_runtimes.py").write_text(RUNTIMES)


# ---------------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------------
def inp(name, datatype, shape, data, **parameters):
    out = {"name": name, "datatype": datatype, "shape": shape, "data": data}
    if parameters:
        out["parameters"] = parameters
    return out


def infer(model, *inputs, **extra):
    return model, {"inputs": list(inputs), **extra}


def rest_cases():
    """(label, method, path, body, headers); body a dict (JSON), bytes (sent as is) or None."""
    v2 = "/v2/models"
    cases = []

    def post(label, model, body, headers=None, path=None):
        cases.append((label, "POST", path or f"{v2}/{model}/infer", body, headers or {}))

    def get(label, path):
        cases.append((label, "GET", path, None, {}))

    for p in ("/v2/health/live", "/v2/health/ready", "/v2", f"{v2}/np-echo/ready", f"{v2}/nope/ready",
              f"{v2}/mv/versions/v1/ready", f"{v2}/mv/versions/v9/ready", f"{v2}/mv/ready"):
        get(f"GET {p}", p)
    for p in (f"{v2}/np-echo", f"{v2}/meta", f"{v2}/meta/versions/m1", f"{v2}/mv", f"{v2}/mv/versions/v2",
              f"{v2}/nope", f"{v2}/mv/versions/v9", f"{v2}/batched"):
        get(f"metadata {p}", p)

    # codecs: what a runtime decodes
    post("describe np", "describe", {"inputs": [inp("a", "INT32", [2, 2], [1, 2, 3, 4], content_type="np")]})
    post("describe plain", "describe", {"inputs": [inp("a", "FP32", [3], [1, 2, 3])]})
    post("describe str", "describe", {"inputs": [inp("s", "BYTES", [2], ["ab", "c"], content_type="str")]})
    post("describe str one", "describe", {"inputs": [inp("s", "BYTES", [5], "hello", content_type="str")]})
    post("describe b64", "describe", {"inputs": [inp("b", "BYTES", [1], [base64.b64encode(b"hi!").decode()],
                                                     content_type="base64")]})
    post("describe b64 not base64", "describe", {"inputs": [inp("b", "BYTES", [1], ["@@"], content_type="base64")]})
    post("describe datetime", "describe", {"inputs": [inp("d", "BYTES", [2], ["2024-01-02T03:04:05", "2021-08-24T15:01:19"],
                                                          content_type="datetime")]})
    post("describe np bytes", "describe", {"inputs": [inp("s", "BYTES", [2], ["ab", "c"], content_type="np")]})
    post("describe bool", "describe", {"inputs": [inp("b", "BOOL", [2], [True, False], content_type="np")]})
    post("describe pd request", "describe", {"parameters": {"content_type": "pd"},
                                             "inputs": [inp("a", "INT64", [2], [1, 2]),
                                                        inp("b", "BYTES", [2], ["x", "y"], content_type="str")]})
    post("describe pd request 2d col", "describe", {"parameters": {"content_type": "pd"},
                                                    "inputs": [inp("a", "FP32", [2, 1], [1.5, 2.5])]})
    post("describe str request", "describe", {"parameters": {"content_type": "str"},
                                              "inputs": [inp("s", "BYTES", [2], ["p", "q"])]})
    post("describe np request", "describe", {"parameters": {"content_type": "np"},
                                             "inputs": [inp("a", "FP64", [1, 2], [1, 2])]})
    post("describe unknown content_type", "describe", {"inputs": [inp("a", "FP32", [1], [1], content_type="nonexistent")]})
    post("describe unknown request content_type", "describe", {"parameters": {"content_type": "nonexistent"},
                                                               "inputs": [inp("a", "FP32", [1], [1])]})
    post("describe metadata content types", "meta", {"inputs": [inp("when", "BYTES", [1], ["2024-01-02T03:04:05"]),
                                                                inp("blob", "BYTES", [1], ["aGk="]),
                                                                inp("other", "BYTES", [1], ["zz"])]})
    post("encoders", "encoders", {"inputs": [inp("a", "FP32", [1], [0])]})
    post("encoders outputs asked", "encoders", {"inputs": [inp("a", "FP32", [1], [0])], "outputs": [{"name": "str"}]})
    post("np-echo", "np-echo", {"inputs": [inp("a", "FP32", [2, 2], [1, 2, 3, 4])]})
    post("np-echo int64", "np-echo", {"inputs": [inp("a", "INT64", [3], [1, 2, 3])]})
    post("np-echo two inputs", "np-echo", {"inputs": [inp("a", "FP32", [1], [1]), inp("b", "FP32", [1], [2])]})
    post("str-upper", "str-upper", {"inputs": [inp("s", "BYTES", [2], ["ab", "cd"])]})
    post("pd-echo", "pd-echo", {"inputs": [inp("a", "INT64", [2], [1, 2]), inp("b", "FP64", [2], [0.5, 1.5]),
                                           inp("c", "BYTES", [2], ["x", "y"], content_type="str")]})
    post("pd-echo ragged", "pd-echo", {"inputs": [inp("a", "INT64", [2], [1, 2]), inp("b", "FP64", [3], [0.5, 1, 2])]})
    post("decode-args", "decode-args", {"inputs": [inp("foo", "FP32", [2, 2], [1, 2, 3, 4]),
                                                   inp("bar", "BYTES", [2], ["x", "y"], content_type="str")]})
    post("decode-args missing input", "decode-args", {"inputs": [inp("foo", "FP32", [1, 2], [1, 2])]})
    post("decode-args extra input", "decode-args", {"inputs": [inp("foo", "FP32", [1, 1], [1]),
                                                               inp("bar", "BYTES", [1], ["x"], content_type="str"),
                                                               inp("baz", "FP32", [1], [1])]})

    # parameters, ids, headers, requested outputs
    p_in = [inp("a", "FP32", [1], [1], custom="in")]
    post("params none", "params", {"inputs": p_in})
    post("params id", "params", {"id": "my-id", "inputs": p_in})
    post("params request parameters", "params", {"parameters": {"foo": "bar", "n": 3, "nested": {"a": [1]},
                                                                "content_type": "np"}, "inputs": p_in})
    post("params outputs asked", "params", {"inputs": p_in, "outputs": [{"name": "other", "parameters": {"binary_data": False}}]})
    post("params headers", "params", {"inputs": p_in}, headers={"x-request-id": "rid-1", "x-custom": "c1",
                                                                  "Ce-Source": "me"})
    post("params parameters.headers in body", "params", {"parameters": {"headers": {"x-body": "b"}}, "inputs": p_in})

    # errors
    post("raiser ValueError", "raiser", {"inputs": [inp("a", "INT32", [1], [0])]})
    post("raiser MLServerError 418", "raiser", {"inputs": [inp("a", "INT32", [1], [1])]})
    post("raiser MLServerError default", "raiser", {"inputs": [inp("a", "INT32", [1], [2])]})
    post("raiser empty outputs", "raiser", {"inputs": [inp("a", "INT32", [1], [3])]})
    post("unknown model", "nope", {"inputs": [inp("a", "INT32", [1], [3])]})
    post("unknown version", "mv", {"inputs": [inp("a", "INT32", [1], [3])]}, path=f"{v2}/mv/versions/v9/infer")
    post("malformed JSON", "np-echo", b'{"inputs": [', headers={"Content-Type": "application/json"})
    post("no inputs field", "np-echo", {"id": "x"})
    post("bad datatype", "np-echo", {"inputs": [inp("a", "FP99", [1], [1])]})
    post("shape mismatch", "np-echo", {"inputs": [inp("a", "FP32", [3], [1, 2])]})
    post("string in FP32", "np-echo", {"inputs": [inp("a", "FP32", [1], ["x"])]})
    post("input not a list", "np-echo", {"inputs": {"name": "a"}})
    post("text/plain body", "np-echo", {"inputs": [inp("a", "FP32", [1], [1])]}, headers={"Content-Type": "text/plain"})
    post("version of an unversioned model", "np-echo", {"inputs": [inp("a", "FP32", [1], [1])]},
         path=f"{v2}/np-echo/versions/1/infer")
    post("custom handler", None, {"x": [1, 2]}, path="/my-route")
    post("custom handler not JSON", None, b"nope", path="/my-route")
    cases.append(("custom handler GET", "GET", "/my-route", None, {}))
    post("gzip body", "np-echo", gzip.compress(json.dumps({"inputs": [inp("a", "FP32", [1], [3])]}).encode()),
         headers={"Content-Encoding": "gzip"})

    # outputs the request asks for, encoded by their content_type (the request's, else the metadata's)
    a_in = [inp("a", "FP32", [1], [1])]
    post("asked str", "asked", {"inputs": a_in, "outputs": [{"name": "words", "parameters": {"content_type": "str"}}]})
    post("asked np", "asked", {"inputs": a_in, "outputs": [{"name": "numbers", "parameters": {"content_type": "np"}}]})
    post("asked default codecs", "asked", {"inputs": a_in, "outputs": [{"name": "words"}, {"name": "numbers"}]})
    post("asked metadata content type", "asked", {"inputs": a_in, "outputs": [{"name": "blob"}]})
    post("asked unknown content type", "asked", {"inputs": a_in, "outputs": [{"name": "words",
                                                                              "parameters": {"content_type": "zz"}}]})

    # versions
    post("mv default", "mv", {"inputs": [inp("a", "INT32", [1], [1])]})
    for v in ("v1", "v2"):
        post(f"mv {v}", "mv", {"inputs": [inp("a", "INT32", [1], [1])]}, path=f"{v2}/mv/versions/{v}/infer")

    # repository (REST); unload/load at the end since they change state
    post("index", None, {}, path="/v2/repository/index")
    post("index ready", None, {"ready": True}, path="/v2/repository/index")
    post("index not ready", None, {"ready": False}, path="/v2/repository/index")
    post("unload unknown", None, None, path="/v2/repository/models/nope/unload")
    post("load unknown", None, None, path="/v2/repository/models/nope/load")
    post("unload str-upper", None, None, path="/v2/repository/models/str-upper/unload")
    get("str-upper ready after unload", f"{v2}/str-upper/ready")
    get("str-upper metadata after unload", f"{v2}/str-upper")
    post("str-upper infer after unload", "str-upper", {"inputs": [inp("s", "BYTES", [1], ["ab"])]})
    post("index after unload", None, {}, path="/v2/repository/index")
    post("unload str-upper again", None, None, path="/v2/repository/models/str-upper/unload")
    post("load str-upper", None, None, path="/v2/repository/models/str-upper/load")
    post("str-upper infer after load", "str-upper", {"inputs": [inp("s", "BYTES", [1], ["ab"])]})
    # a model whose load raises, added to the folder while serving
    cases.append(("write broken", "WRITE", "broken", None, {}))
    post("load broken", None, None, path="/v2/repository/models/broken/load")
    get("broken ready", f"{v2}/broken/ready")
    get("broken metadata", f"{v2}/broken")
    post("broken infer", "broken", {"inputs": [inp("a", "FP32", [1], [1])]})
    post("index with broken", None, {}, path="/v2/repository/index")
    return cases


# ---------------------------------------------------------------------------------------------------
# Normalising
# ---------------------------------------------------------------------------------------------------
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)")
SHOWN_HEADERS = ("content-type", "x-request-id", "x-custom-out", "x-custom", "x-body")


def mask(value):
    if isinstance(value, str):
        return TIME.sub("<time>", UUID.sub("<uuid>", value))
    if isinstance(value, list):
        return [mask(v) for v in value]
    if isinstance(value, dict):
        return {k: mask(v) for k, v in value.items()}
    return value


def comparable(status, body, headers):
    if isinstance(body, list):  # the repository index: MLServer lists in load order
        body = sorted(body, key=lambda e: json.dumps(e, sort_keys=True) if not isinstance(e, dict)
                      else (e.get("name", ""), e.get("version", "")))
    if isinstance(body, dict) and "outputs" not in body and set(body) <= {"error", "detail"}:
        body = {"error keys": sorted(body)}
    shown = {k: headers[k] for k in SHOWN_HEADERS if k in headers}
    shown["ce-* headers"] = sorted(k for k in headers if k.startswith("ce-"))
    return mask({"status": status, "body": body, "headers": shown})


def messages(body):
    if isinstance(body, dict) and ("error" in body or "detail" in body):
        return json.dumps(body.get("error", body.get("detail")))[:300]
    return ""


# ---------------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------------
def start(name, repo: Path, ports, log: Path, mlserver: Path = MLSERVER, **env_more: str) -> subprocess.Popen:
    """MLServer (the `mlserver` command given: each side-by-side script has its peer venv) or gpuserve on `repo`,
    on ports (http, grpc, metrics); `env_more`: more MLSERVER_* settings for MLServer."""
    http, grpc_port, metrics = ports
    if name == "mlserver":
        env = {**os.environ, "MLSERVER_HTTP_PORT": str(http), "MLSERVER_GRPC_PORT": str(grpc_port),
               "MLSERVER_METRICS_PORT": str(metrics), "MLSERVER_HOST": "127.0.0.1",
               "PATH": f"{mlserver.parent}:{os.environ.get('PATH', '')}", **env_more}
        args = [str(mlserver), "start", str(repo)]
    else:
        env = dict(os.environ)
        args = [str(GPUSERVE), "start", str(repo), "--host", "127.0.0.1", "--http-port", str(http),
                "--grpc-port", str(grpc_port), "--metrics-port", str(metrics)]
    return subprocess.Popen(args, env=env, cwd=repo.parent, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def call_json(port, method, path, body, timeout=60):
    """One REST call to 127.0.0.1:port: (status, the JSON body or its text, the x-seldon-* headers); no answer in
    `timeout` s or a refused connection is (those words, None, {})."""
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status, raw, headers = answer.status, answer.read(), answer.headers
    except urllib.error.HTTPError as exc:
        status, raw, headers = exc.code, exc.read(), exc.headers
    except (TimeoutError, urllib.error.URLError) as exc:
        return f"no answer in {timeout} s ({type(exc).__name__})", None, {}
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode(errors="replace")
    shown = {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-seldon")}
    return status, body, shown


def wait_until_ready(port, proc, paths, timeout=180):
    """Until every path answers 200 (the server up, the models named in them loaded); SystemExit if the server
    exits first or takes longer than `timeout` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[0]} exited early")
        if all(call_json(port, "GET", path, None, 5)[0] == 200 for path in paths):
            return
        time.sleep(0.5)
    raise SystemExit(f"{proc.args[0]} not ready in {timeout} s")


def free_ports(n):
    """n ports free on 127.0.0.1 just now (http, grpc, metrics for one server)."""
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def wait_ready(name, proc, http, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited early (see its log)")
        try:
            if all(httpx.get(f"http://127.0.0.1:{http}/v2/models/{m}/ready", timeout=2).status_code == 200
                   for m in READY):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{name} not ready after {timeout} s")


def stop(proc, grace_s: float = 30):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def rest_call(http, method, path, body, headers):
    headers = {"Content-Type": "application/json", **headers}
    content = body if isinstance(body, bytes) else (None if body is None else json.dumps(body).encode())
    try:
        reply = httpx.request(method, f"http://127.0.0.1:{http}{path}", content=content, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        return f"<{type(exc).__name__}>", None, {}
    try:
        answer = reply.json() if reply.content else None
    except ValueError:
        answer = reply.text
    return reply.status_code, answer, {k.lower(): v for k, v in reply.headers.items()}


def batched_case(http):
    """Three requests at once into one adaptive batch (max_batch_size 3): rows seen and parameters per answer."""
    bodies = [{"parameters": {"tag": f"r{i}", "same": "s"},
               "inputs": [inp("x", "FP32", [i + 1, 1], list(range(i + 1)))]} for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda b: rest_call(http, "POST", "/v2/models/batched/infer", b, {}), bodies))
    return [comparable(s, b, {}) for s, b, _ in replies]


def grpc_cases(grpc_port):
    """MLServer's V2 gRPC dataplane and model repository service, a few of the same cases."""
    import grpc
    from google.protobuf.json_format import MessageToDict

    from gpuserve.mlserver.grpc import dataplane_pb2 as pb, dataplane_pb2_grpc as pbg
    from gpuserve.mlserver.grpc import model_repository_pb2 as rpb, model_repository_pb2_grpc as rpbg

    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    data = pbg.GRPCInferenceServiceStub(channel)
    repo = rpbg.ModelRepositoryServiceStub(channel)

    def call(fn, request):
        try:
            body = MessageToDict(fn(request, timeout=30))
            if isinstance(body.get("models"), list):  # the repository index, in load order on MLServer
                body["models"].sort(key=lambda e: (e.get("name", ""), e.get("version", "")))
            return {"code": "OK", "body": mask(body)}
        except grpc.RpcError as exc:
            return {"code": exc.code().name, "message": exc.details()[:200]}

    def tensor(name, datatype, shape, field, values, **params):
        t = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
        getattr(t.contents, field).extend(values)
        for k, v in params.items():
            t.parameters[k].string_param = v
        return t

    out = {}
    out["grpc ServerLive"] = call(data.ServerLive, pb.ServerLiveRequest())
    out["grpc ServerReady"] = call(data.ServerReady, pb.ServerReadyRequest())
    out["grpc ServerMetadata"] = call(data.ServerMetadata, pb.ServerMetadataRequest())
    out["grpc ModelReady"] = call(data.ModelReady, pb.ModelReadyRequest(name="np-echo"))
    out["grpc ModelReady unknown"] = call(data.ModelReady, pb.ModelReadyRequest(name="nope"))
    out["grpc ModelMetadata meta"] = call(data.ModelMetadata, pb.ModelMetadataRequest(name="meta"))
    out["grpc ModelMetadata unknown"] = call(data.ModelMetadata, pb.ModelMetadataRequest(name="nope"))
    out["grpc infer np-echo"] = call(data.ModelInfer, pb.ModelInferRequest(
        model_name="np-echo", inputs=[tensor("a", "FP32", [2], "fp32_contents", [1, 2])]))
    out["grpc infer str-upper"] = call(data.ModelInfer, pb.ModelInferRequest(
        model_name="str-upper", inputs=[tensor("s", "BYTES", [2], "bytes_contents", [b"ab", b"c"])]))
    out["grpc infer describe str"] = call(data.ModelInfer, pb.ModelInferRequest(
        model_name="describe", inputs=[tensor("s", "BYTES", [2], "bytes_contents", [b"ab", b"c"], content_type="str")]))
    out["grpc infer encoders"] = call(data.ModelInfer, pb.ModelInferRequest(
        model_name="encoders", inputs=[tensor("a", "FP32", [1], "fp32_contents", [0])]))
    request = pb.ModelInferRequest(model_name="params", id="gid",
                                   inputs=[tensor("a", "FP32", [1], "fp32_contents", [1])])
    request.parameters["foo"].string_param = "bar"
    request.parameters["n"].int64_param = 3
    out["grpc infer params"] = call(data.ModelInfer, request)
    out["grpc infer mv v1"] = call(data.ModelInfer, pb.ModelInferRequest(
        model_name="mv", model_version="v1", inputs=[tensor("a", "INT32", [1], "int_contents", [1])]))
    out["grpc infer raiser"] = call(data.ModelInfer, pb.ModelInferRequest(
        model_name="raiser", inputs=[tensor("a", "INT32", [1], "int_contents", [1])]))
    out["grpc infer raiser ValueError"] = call(data.ModelInfer, pb.ModelInferRequest(
        model_name="raiser", inputs=[tensor("a", "INT32", [1], "int_contents", [0])]))
    out["grpc infer unknown"] = call(data.ModelInfer, pb.ModelInferRequest(
        model_name="nope", inputs=[tensor("a", "INT32", [1], "int_contents", [1])]))
    out["grpc repository index"] = call(repo.RepositoryIndex, rpb.RepositoryIndexRequest())
    out["grpc repository unload unknown"] = call(repo.RepositoryModelUnload,
                                                 rpb.RepositoryModelUnloadRequest(model_name="nope"))
    out["grpc repository load unknown"] = call(repo.RepositoryModelLoad,
                                               rpb.RepositoryModelLoadRequest(model_name="nope"))
    out["grpc repository unload decode-args"] = call(repo.RepositoryModelUnload,
                                                     rpb.RepositoryModelUnloadRequest(model_name="decode-args"))
    out["grpc ModelReady after unload"] = call(data.ModelReady, pb.ModelReadyRequest(name="decode-args"))
    out["grpc repository load decode-args"] = call(repo.RepositoryModelLoad,
                                                   rpb.RepositoryModelLoadRequest(model_name="decode-args"))
    out["grpc ModelReady after load"] = call(data.ModelReady, pb.ModelReadyRequest(name="decode-args"))
    channel.close()
    out.update(tritonclient_cases(grpc_port))
    return out


def tritonclient_cases(grpc_port):
    """tritonclient.grpc sends raw_input_contents and reads raw_output_contents."""
    import numpy as np
    import tritonclient.grpc as tg
    from tritonclient.utils import InferenceServerException

    out = {}
    with tg.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
        for label, model, array in (("tritonclient.grpc np-echo", "np-echo", np.array([[1.5, 2]], np.float32)),
                                    ("tritonclient.grpc str-upper", "str-upper", np.array([b"ab", b"c"], object))):
            tensor = tg.InferInput("a", list(array.shape), "BYTES" if array.dtype == object else "FP32")
            tensor.set_data_from_numpy(array)
            try:
                result = client.infer(model, [tensor])
                outputs = result.get_response().outputs
                out[label] = {"code": "OK", "outputs": [
                    [o.name, o.datatype, list(o.shape), result.as_numpy(o.name).tolist()] for o in outputs]}
                out[label] = json.loads(json.dumps(out[label], default=lambda b: b.decode()))
            except InferenceServerException as exc:
                out[label] = {"code": str(exc.status()), "message": exc.message()[:200]}
        out["tritonclient.grpc is_model_ready unknown"] = {"code": "OK", "ready": client.is_model_ready("nope")} \
            if _quiet(client.is_model_ready, "nope") else {"code": "error"}
    return out


def _quiet(fn, *args):
    try:
        fn(*args)
        return True
    except Exception:  # noqa: BLE001
        return False


def metric_names(port):
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}


def run_server(name, work: Path, ports) -> dict:
    repo = work / name / "repo"
    build(repo)
    proc = start(name, repo, ports, work / name / "server.log")
    answers = {}
    try:
        wait_ready(name, proc, ports[0])
        for label, method, path, body, headers in rest_cases():
            if method == "WRITE":
                (repo / path).mkdir()
                (repo / path / "model-settings.json").write_text(json.dumps({
                    "name": path, "implementation": "conf_runtimes.Broken"}))
                (repo / path / "conf_runtimes.py").write_text(RUNTIMES)
                continue
            status, body_out, headers_out = rest_call(ports[0], method, path, body, headers)
            answers[label] = (comparable(status, body_out, headers_out), messages(body_out))
        answers["batched three at once"] = (batched_case(ports[0]), "")
        for label, value in grpc_cases(ports[1]).items():
            answers[label] = ({k: v for k, v in value.items() if k != "message"}, value.get("message", ""))
        answers["metrics names"] = (sorted(metric_names(ports[2])), "")
    finally:
        stop(proc)
    return answers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="")
    parser.add_argument("--show-all", action="store_true")
    parser.add_argument("--keep", default="", help="work folder (kept); default a temporary one, removed")
    parser.add_argument("--port-base", type=int, default=9600)
    parser.add_argument("--json", default="", help="write both servers' answers to this file")
    args = parser.parse_args()
    if not MLSERVER.exists():
        print(__doc__)
        return 2
    work = Path(args.keep or tempfile.mkdtemp(prefix="mlserver-conf-"))
    work.mkdir(parents=True, exist_ok=True)
    for name in ("mlserver", "gpuserve"):
        shutil.rmtree(work / name, ignore_errors=True)
    base = args.port_base
    results = {"mlserver": run_server("mlserver", work, (base, base + 1, base + 2)),
               "gpuserve": run_server("gpuserve", work, (base + 10, base + 11, base + 12))}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, sort_keys=True, default=str))
    differ, kept = 0, 0
    labels = [label for label in results["mlserver"] if args.only in label]
    for label in labels:
        ml, gp = results["mlserver"][label], results["gpuserve"].get(label, ("<missing>", ""))
        if label == "metrics names":  # gpuserve serves more families; only MLServer's missing ones count
            missing = sorted(set(ml[0]) - set(gp[0]))
            ml, gp = (["<none missing>"], ""), ((missing or ["<none missing>"]), "")
        same = json.dumps(ml[0], sort_keys=True) == json.dumps(gp[0], sort_keys=True)
        reason = KEPT.get(label)
        if not same:
            differ += 1
            kept += reason is not None
        tag = "  same " if same else ("  kept " if reason else "DIFFER")
        print(tag, label)
        if not same or args.show_all:
            for name, (answer, message) in (("mlserver", ml), ("gpuserve", gp)):
                print(f"    {name:9s} {json.dumps(answer, sort_keys=True)[:900]}")
                if message:
                    print(f"    {'':9s} message: {message}")
            if reason:
                print(f"    kept: {reason}")
    print(f"\n{len(labels)} cases, {differ} differ ({kept} kept on purpose)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
