"""tritonclient against real Triton and against gpuserve, call by call, with a diff of what differs.

Not a test: it needs the Triton peer venv (bash benchmarks/peers/setup.sh triton). Run by hand:

    .venv/bin/python benchmarks/peers/conformance.py [--only SUBSTRING] [--show-all] [--keep DIR]

Both servers serve the same two models:
- `simple`: INPUT0 FP32 [-1, 4] -> OUTPUT0 = 2 * INPUT0, OUTPUT1 = INPUT0 + 1 (max_batch_size 8)
- `strings`: TEXT BYTES [-1, 1], COUNT INT32 [-1, 1] -> TEXT_OUT = TEXT, COUNT_OUT = COUNT + 1
Triton binds Python functions through PyTriton (this file, `--serve-triton`, run by the Triton venv's
python); gpuserve runs `gpuserve start FOLDER` on a repository of config.pbtxt + 1/model.onnx. The stand-ins
answer their outputs sorted by name, as Triton's ONNX Runtime backend answers an ONNX model's (its std::map).

Every case runs on the four clients (http, http.aio, grpc, grpc.aio) where the method exists, and
records either the answer's shape (keys, types, booleans, tensor shapes/dtypes/values) or the
exception: its type and the HTTP status / gRPC code it carries. Exact messages, version strings and
extension lists are not compared. Raw HTTP cases (bad JSON, unknown routes, ...) compare status codes
and body keys. The diff lists every case whose outcomes differ; `--show-all` prints the rest too.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TRITON_PYTHON = ROOT / ".peers" / "triton" / "bin" / "python"
GPUSERVE = ROOT / ".venv" / "bin" / "gpuserve"
sys.path.insert(0, str(ROOT / "tests"))
# gpuserve's side: the ONNX models of the same names, shapes and types (tests/simple_models.py, also profiled by
# tests/test_perf_analyzer.py)
from simple_models import MAX_BATCH, build_simple_models as build_repository  # noqa: E402


# ---------------------------------------------------------------------------------------------------
# Triton side (runs inside the Triton venv)
# ---------------------------------------------------------------------------------------------------
def serve_triton(args) -> None:
    import logging

    import numpy as np
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    @batch
    def simple(INPUT0):
        return {"OUTPUT0": (INPUT0 * 2).astype(np.float32), "OUTPUT1": (INPUT0 + 1).astype(np.float32)}

    @batch
    def strings(TEXT, COUNT):  # outputs by name, as Triton's ONNX Runtime backend (which this stands for) answers
        return {"COUNT_OUT": (COUNT + 1).astype(np.int32), "TEXT_OUT": TEXT}

    config = TritonConfig(http_address="127.0.0.1", http_port=args.http_port, grpc_address="127.0.0.1",
                          grpc_port=args.grpc_port, metrics_port=args.metrics_port, log_verbose=0,
                          allow_gpu_metrics=False)
    model_config = ModelConfig(max_batch_size=MAX_BATCH, batcher=DynamicBatcher())
    # PyTriton guards repository, statistics, shm, trace and logging with a token; plain Triton does not
    with Triton(config=config, security_config=TritonSecurityConfig(restricted_endpoints=[])) as triton:
        triton.bind(model_name="simple", infer_func=simple,
                    inputs=[Tensor(name="INPUT0", dtype=np.float32, shape=(4,))],
                    outputs=[Tensor(name="OUTPUT0", dtype=np.float32, shape=(4,)),
                             Tensor(name="OUTPUT1", dtype=np.float32, shape=(4,))],
                    config=model_config, strict=False)
        triton.bind(model_name="strings", infer_func=strings,
                    inputs=[Tensor(name="TEXT", dtype=np.bytes_, shape=(1,)),
                            Tensor(name="COUNT", dtype=np.int32, shape=(1,))],
                    outputs=[Tensor(name="COUNT_OUT", dtype=np.int32, shape=(1,)),
                             Tensor(name="TEXT_OUT", dtype=np.bytes_, shape=(1,))],
                    config=model_config, strict=False)
        triton.serve()


# ---------------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name, cmd, log: Path, env=None):
        self.name = name
        self.http, self.grpc, self.metrics = free_port(), free_port(), free_port()
        self.cmd = [c.format(http=self.http, grpc=self.grpc, metrics=self.metrics) for c in cmd]
        self.log = log
        self.env = dict(os.environ, **(env or {}))
        self.proc = None

    def start(self) -> "Server":
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        return self

    def wait(self, urls, timeout=240.0) -> None:
        start = time.monotonic()
        for path in urls:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited early:\n{self.log.read_text(errors='replace')[-3000:]}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=2) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() - start > timeout:
                    raise RuntimeError(f"{self.name} not ready after {timeout} s")
                time.sleep(0.3)

    def stop(self) -> None:
        import signal

        if self.proc and self.proc.poll() is None:
            # PyTriton cleans up (its shared memory in /dev/shm included) on SIGINT, to the main process only
            if self.name == "triton":
                self.proc.send_signal(signal.SIGINT)
            else:
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


# ---------------------------------------------------------------------------------------------------
# Outcome summaries
# ---------------------------------------------------------------------------------------------------
IGNORED_VALUES = {"version", "extensions", "name_version"}  # values that may differ by design


def shape_of(value, key=None):
    """What is compared: keys, leaf types, booleans and short strings that are states/enums."""
    if isinstance(value, dict):
        return {k: shape_of(v, k) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        if key in IGNORED_VALUES:
            return "list"
        return [shape_of(v, key) for v in value[:4]] + (["..."] if len(value) > 4 else [])
    if isinstance(value, bool):
        return value
    if key in IGNORED_VALUES:
        return type(value).__name__
    if isinstance(value, str) and key in ("state", "datatype", "name", "model_name", "id", "model_version",
                                          "data_type", "platform", "backend"):
        return f"str:{value}"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def proto_dict(message):
    from google.protobuf import json_format

    return json_format.MessageToDict(message, preserving_proto_field_name=True)


class Summary:
    """A value a case has already summarized."""

    def __init__(self, value):
        self.value = value


def summarize(value):
    import numpy as np

    if isinstance(value, Summary):
        return value.value
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if hasattr(value, "as_numpy") and hasattr(value, "get_response"):  # InferResult
        response = value.get_response()
        response = proto_dict(response) if hasattr(response, "DESCRIPTOR") else response
        outputs = {}
        for out in response.get("outputs", []):
            array = value.as_numpy(out["name"])
            outputs[out["name"]] = None if array is None else tensor_summary(array)
        response = {k: v for k, v in response.items() if k not in ("raw_output_contents",)}
        return {"response": shape_of(response), "arrays": outputs}
    if hasattr(value, "DESCRIPTOR"):
        return shape_of(proto_dict(value))
    if isinstance(value, np.ndarray):
        return tensor_summary(value)
    return shape_of(value)


def tensor_summary(array):
    flat = array.ravel().tolist()[:12]
    flat = [x.decode(errors="replace") if isinstance(x, bytes) else round(x, 4) if isinstance(x, float) else x
            for x in flat]
    return {"shape": list(array.shape), "dtype": str(array.dtype), "values": flat}


def error_outcome(exc: BaseException):
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, InferenceServerException):
        status = exc.status()
        return {"error": type(exc).__name__, "status": str(status) if status is not None else None,
                "message": (exc.message() or "")[:160]}
    return {"error": type(exc).__name__, "status": None, "message": str(exc)[:160]}


def same(a, b) -> bool:
    strip = lambda o: {k: v for k, v in o.items() if k != "message"} if isinstance(o, dict) else o  # noqa: E731
    return json.dumps(strip(a), sort_keys=True, default=str) == json.dumps(strip(b), sort_keys=True, default=str)


# ---------------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------------
KINDS = ("http", "http_aio", "grpc", "grpc_aio")
CASES = []
CRASHES_TRITON = set()  # cases that take Triton 2.51 down: recorded, not run against it


def case(name, kinds=KINDS, crashes_triton=False):
    def add(fn):
        CASES.append((name, kinds, fn))
        if crashes_triton:
            CRASHES_TRITON.add(name)
        return fn

    return add


async def call(value):
    return await value if inspect.isawaitable(value) else value


class Ctx:
    """What a case gets: the client, its module, the kind, the server (ports), and a scratch dict."""

    def __init__(self, client, module, kind, server, shm_prefix):
        self.c, self.m, self.kind, self.server, self.shm_prefix = client, module, kind, server, shm_prefix

    @property
    def grpc(self) -> bool:
        return self.kind.startswith("grpc")

    def fp32(self, array, name="INPUT0", datatype="FP32", binary=True, shape=None):
        tensor = self.m.InferInput(name, list(shape if shape is not None else array.shape), datatype)
        if self.grpc:
            tensor.set_data_from_numpy(array)
        else:
            tensor.set_data_from_numpy(array, binary_data=binary)
        return tensor

    def out(self, name, binary=None, class_count=0):
        if self.grpc:
            return self.m.InferRequestedOutput(name, class_count=class_count)
        kwargs = {"class_count": class_count}
        if binary is not None:
            kwargs["binary_data"] = binary
        return self.m.InferRequestedOutput(name, **kwargs)


def _x(rows=2):
    import numpy as np

    return np.arange(rows * 4, dtype=np.float32).reshape(rows, 4) - 3


def _strings(ctx, rows=2):
    import numpy as np

    text = np.array([[f"row{i}-é".encode()] for i in range(rows)], dtype=object)
    count = np.arange(rows, dtype=np.int32).reshape(rows, 1)
    return [ctx.fp32(text, "TEXT", "BYTES"), ctx.fp32(count, "COUNT", "INT32")]


# health and metadata -------------------------------------------------------------------------------
@case("is_server_live")
async def _(ctx):
    return await call(ctx.c.is_server_live())


@case("is_server_ready")
async def _(ctx):
    return await call(ctx.c.is_server_ready())


@case("is_model_ready")
async def _(ctx):
    return await call(ctx.c.is_model_ready("simple"))


@case("is_model_ready version 1")
async def _(ctx):
    return await call(ctx.c.is_model_ready("simple", "1"))


@case("is_model_ready unknown version 7")
async def _(ctx):
    return await call(ctx.c.is_model_ready("simple", "7"))


@case("is_model_ready unknown model")
async def _(ctx):
    return await call(ctx.c.is_model_ready("ghost"))


@case("get_server_metadata")
async def _(ctx):
    meta = await call(ctx.c.get_server_metadata(**({"as_json": True} if ctx.grpc else {})))
    return meta


@case("get_model_metadata simple")
async def _(ctx):
    return await call(ctx.c.get_model_metadata("simple", **({"as_json": True} if ctx.grpc else {})))


@case("get_model_metadata strings version 1")
async def _(ctx):
    return await call(ctx.c.get_model_metadata("strings", "1", **({"as_json": True} if ctx.grpc else {})))


@case("get_model_metadata unknown model")
async def _(ctx):
    return await call(ctx.c.get_model_metadata("ghost"))


@case("get_model_metadata unknown version")
async def _(ctx):
    return await call(ctx.c.get_model_metadata("simple", "7"))


@case("get_model_config (keys of the common part)")
async def _(ctx):
    config = await call(ctx.c.get_model_config("simple", **({"as_json": True} if ctx.grpc else {})))
    config = config.get("config", config)
    # PyTriton adds backend-specific pieces (parameters, instance groups...); compare the core
    core = {k: config.get(k) for k in ("name", "max_batch_size", "input", "output")}
    return core


@case("get_model_config full (keys and leaf types)")
async def _(ctx):
    config = await call(ctx.c.get_model_config("strings", **({"as_json": True} if ctx.grpc else {})))
    return config


@case("get_model_config grpc message")
async def _(ctx):
    config = await call(ctx.c.get_model_config("strings"))
    return sorted(type(config).DESCRIPTOR.fields_by_name) if ctx.grpc else sorted(config)


@case("get_model_config unknown model")
async def _(ctx):
    return await call(ctx.c.get_model_config("ghost"))


@case("get_model_config unknown version")
async def _(ctx):
    return await call(ctx.c.get_model_config("simple", "7"))


# repository ------------------------------------------------------------------------------------------
@case("get_model_repository_index")
async def _(ctx):
    index = await call(ctx.c.get_model_repository_index(**({"as_json": True} if ctx.grpc else {})))
    models = index.get("models", []) if isinstance(index, dict) else index
    return Summary(sorted((shape_of(m) for m in models), key=lambda m: json.dumps(m, sort_keys=True)))


@case("load_model unknown")
async def _(ctx):
    return await call(ctx.c.load_model("ghost"))


@case("unload_model unknown")
async def _(ctx):
    return await call(ctx.c.unload_model("ghost"))


@case("load_model with bad config JSON")
async def _(ctx):
    return await call(ctx.c.load_model("ghost", config="{not json"))


FILED_MODEL = b"""import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy() * 3)]) for r in requests]
"""
FILED_CONFIG = {"backend": "python", "max_batch_size": 8,
                "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [4]}],
                "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [4]}]}


@case("load_model from files and config, infer, unload")
async def _(ctx):
    import numpy as np

    name = f"filed_{ctx.kind}"
    await call(ctx.c.load_model(name, config=json.dumps(FILED_CONFIG), files={"file:1/model.py": FILED_MODEL}))
    try:
        config = await call(ctx.c.get_model_config(name, **({"as_json": True} if ctx.grpc else {})))
        config = config.get("config", config)
        result = await call(ctx.c.infer(name, [ctx.fp32(np.ones((2, 4), np.float32), name="X")]))
        return Summary({"ready": await call(ctx.c.is_model_ready(name)), "max_batch_size": int(config["max_batch_size"]),
                        "Y": tensor_summary(result.as_numpy("Y"))})
    finally:
        await call(ctx.c.unload_model(name))


# statistics ------------------------------------------------------------------------------------------
@case("get_inference_statistics all (entry keys)")
async def _(ctx):
    stats = await call(ctx.c.get_inference_statistics(**({"as_json": True} if ctx.grpc else {})))
    entries = stats.get("model_stats", [])
    first = shape_of(entries[0]) if entries else {}
    if first.get("batch_stats"):  # how many batch sizes ran depends on the history; keep one
        first["batch_stats"] = first["batch_stats"][:1]
    return Summary({"count": len(entries), "first": first})


@case("get_inference_statistics simple")
async def _(ctx):
    stats = await call(ctx.c.get_inference_statistics("simple", **({"as_json": True} if ctx.grpc else {})))
    return sorted(stats.get("model_stats", [{}])[0].keys())


@case("get_inference_statistics simple version 1")
async def _(ctx):
    stats = await call(ctx.c.get_inference_statistics("simple", "1", **({"as_json": True} if ctx.grpc else {})))
    return [e.get("version") for e in stats.get("model_stats", [])]


@case("get_inference_statistics unknown model")
async def _(ctx):
    return await call(ctx.c.get_inference_statistics("ghost"))


@case("get_inference_statistics unknown version")
async def _(ctx):
    return await call(ctx.c.get_inference_statistics("simple", "7"))


# log and trace settings -----------------------------------------------------------------------------
@case("get_log_settings")
async def _(ctx):
    return await call(ctx.c.get_log_settings(**({"as_json": True} if ctx.grpc else {})))


@case("get_log_settings and get_trace_settings values")
async def _(ctx):
    kwargs = {"as_json": True} if ctx.grpc else {}
    log = await call(ctx.c.get_log_settings(**kwargs))
    trace = await call(ctx.c.get_trace_settings(**kwargs))
    return Summary({"log": log, "trace": trace})


@case("update_log_settings log_info true")
async def _(ctx):
    return await call(ctx.c.update_log_settings({"log_info": True}, **({"as_json": True} if ctx.grpc else {})))


@case("update_log_settings unknown key")
async def _(ctx):
    return await call(ctx.c.update_log_settings({"log_bogus": True}))


@case("update_log_settings wrong type")
async def _(ctx):
    return await call(ctx.c.update_log_settings({"log_info": "yes please"}))


@case("update_log_settings log_verbose_level 0")
async def _(ctx):
    return await call(ctx.c.update_log_settings({"log_verbose_level": 0}, **({"as_json": True} if ctx.grpc else {})))


@case("update_log_settings log_format bad")
async def _(ctx):
    return await call(ctx.c.update_log_settings({"log_format": "xml"}))


@case("get_trace_settings")
async def _(ctx):
    return await call(ctx.c.get_trace_settings(**({"as_json": True} if ctx.grpc else {})))


@case("get_trace_settings model")
async def _(ctx):
    return await call(ctx.c.get_trace_settings("simple", **({"as_json": True} if ctx.grpc else {})))


@case("get_trace_settings unknown model")
async def _(ctx):
    return await call(ctx.c.get_trace_settings("ghost"))


@case("update_trace_settings rate")
async def _(ctx):
    return await call(ctx.c.update_trace_settings(settings={"trace_rate": "1000"},
                                                  **({"as_json": True} if ctx.grpc else {})))


@case("update_trace_settings model level")
async def _(ctx):
    return await call(ctx.c.update_trace_settings("simple", {"trace_level": ["OFF"]},
                                                  **({"as_json": True} if ctx.grpc else {})))


@case("update_trace_settings unknown key")
async def _(ctx):
    return await call(ctx.c.update_trace_settings(settings={"trace_bogus": "1"}))


@case("update_trace_settings bad rate")
async def _(ctx):
    return await call(ctx.c.update_trace_settings(settings={"trace_rate": "often"}))


@case("update_trace_settings bad level")
async def _(ctx):
    return await call(ctx.c.update_trace_settings(settings={"trace_level": ["LOUD"]}))


@case("update_trace_settings unknown model")
async def _(ctx):
    return await call(ctx.c.update_trace_settings("ghost", {"trace_rate": "10"}))


@case("update_trace_settings clear model")
async def _(ctx):
    return await call(ctx.c.update_trace_settings("simple", {"trace_rate": None},
                                                  **({"as_json": True} if ctx.grpc else {})))


# system shared memory -------------------------------------------------------------------------------
@case("get_system_shared_memory_status empty")
async def _(ctx):
    return await call(ctx.c.get_system_shared_memory_status(**({"as_json": True} if ctx.grpc else {})))


@case("get_system_shared_memory_status unknown region")
async def _(ctx):
    return await call(ctx.c.get_system_shared_memory_status("nowhere"))


@case("register_system_shared_memory bad key")
async def _(ctx):
    return await call(ctx.c.register_system_shared_memory("bad_key", "/gpuserve_no_such_key", 64))


@case("register_system_shared_memory offset past end")
async def _(ctx):
    import tritonclient.utils.shared_memory as shm

    key = f"/{ctx.shm_prefix}_{ctx.kind}_off"
    handle = shm.create_shared_memory_region("off", key, 64)
    try:
        return await call(ctx.c.register_system_shared_memory("off", key, 64, offset=128))
    finally:
        try:
            await call(ctx.c.unregister_system_shared_memory("off"))
        finally:
            shm.destroy_shared_memory_region(handle)


@case("register_system_shared_memory twice")
async def _(ctx):
    import tritonclient.utils.shared_memory as shm

    key = f"/{ctx.shm_prefix}_{ctx.kind}_twice"
    handle = shm.create_shared_memory_region("twice", key, 64)
    try:
        await call(ctx.c.register_system_shared_memory("twice", key, 64))
        return await call(ctx.c.register_system_shared_memory("twice", key, 64))
    finally:
        try:
            await call(ctx.c.unregister_system_shared_memory("twice"))
        finally:
            shm.destroy_shared_memory_region(handle)


@case("unregister_system_shared_memory unknown region")
async def _(ctx):
    return await call(ctx.c.unregister_system_shared_memory("nowhere"))


@case("unregister_system_shared_memory all")
async def _(ctx):
    return await call(ctx.c.unregister_system_shared_memory())


@case("system shared memory infer round trip")
async def _(ctx):
    import numpy as np
    import tritonclient.utils.shared_memory as shm

    x = _x(2)
    key_in, key_out = f"/{ctx.shm_prefix}_{ctx.kind}_in", f"/{ctx.shm_prefix}_{ctx.kind}_out"
    h_in = shm.create_shared_memory_region("rt_in", key_in, x.nbytes)
    h_out = shm.create_shared_memory_region("rt_out", key_out, x.nbytes)
    try:
        shm.set_shared_memory_region(h_in, [x])
        await call(ctx.c.register_system_shared_memory("rt_in", key_in, x.nbytes))
        await call(ctx.c.register_system_shared_memory("rt_out", key_out, x.nbytes))
        status = await call(ctx.c.get_system_shared_memory_status("rt_in", **({"as_json": True} if ctx.grpc else {})))
        tensor = ctx.m.InferInput("INPUT0", [2, 4], "FP32")
        tensor.set_shared_memory("rt_in", x.nbytes)
        out = ctx.m.InferRequestedOutput("OUTPUT0")
        out.set_shared_memory("rt_out", x.nbytes)
        result = await call(ctx.c.infer("simple", [tensor], outputs=[out]))
        got = shm.get_contents_as_numpy(h_out, np.float32, [2, 4])
        response = result.get_response()
        response = proto_dict(response) if hasattr(response, "DESCRIPTOR") else response
        return {"status": summarize(status), "response": shape_of(response), "output": tensor_summary(got),
                "as_numpy": result.as_numpy("OUTPUT0") is None}
    finally:
        for name in ("rt_in", "rt_out"):
            try:
                await call(ctx.c.unregister_system_shared_memory(name))
            except Exception:
                pass
        shm.destroy_shared_memory_region(h_in)
        shm.destroy_shared_memory_region(h_out)


@case("shared memory input too small for shape")
async def _(ctx):
    import tritonclient.utils.shared_memory as shm

    key = f"/{ctx.shm_prefix}_{ctx.kind}_small"
    handle = shm.create_shared_memory_region("small", key, 16)
    try:
        await call(ctx.c.register_system_shared_memory("small", key, 16))
        tensor = ctx.m.InferInput("INPUT0", [2, 4], "FP32")
        tensor.set_shared_memory("small", 16)
        return await call(ctx.c.infer("simple", [tensor]))
    finally:
        try:
            await call(ctx.c.unregister_system_shared_memory("small"))
        finally:
            shm.destroy_shared_memory_region(handle)


@case("infer with unregistered shared memory region")
async def _(ctx):
    tensor = ctx.m.InferInput("INPUT0", [2, 4], "FP32")
    tensor.set_shared_memory("never_registered", 32)
    return await call(ctx.c.infer("simple", [tensor]))


@case("get_cuda_shared_memory_status")
async def _(ctx):
    return await call(ctx.c.get_cuda_shared_memory_status(**({"as_json": True} if ctx.grpc else {})))


# inference ---------------------------------------------------------------------------------------
@case("infer simple")
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())]))


@case("infer simple JSON input, JSON outputs", ("http", "http_aio"))
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x(), binary=False)],
                                  outputs=[ctx.out("OUTPUT0", binary=False), ctx.out("OUTPUT1", binary=False)]))


@case("infer simple binary outputs", ("http", "http_aio"))
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x(), binary=False)],
                                  outputs=[ctx.out("OUTPUT0", binary=True), ctx.out("OUTPUT1", binary=True)]))


@case("infer simple mixed binary/JSON outputs", ("http", "http_aio"))
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())],
                                  outputs=[ctx.out("OUTPUT0", binary=False), ctx.out("OUTPUT1", binary=True)]))


@case("infer simple one requested output")
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())], outputs=[ctx.out("OUTPUT1")]))


@case("infer version 1")
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())], model_version="1"))


@case("infer unknown version")
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())], model_version="7"))


@case("infer unknown model")
async def _(ctx):
    return await call(ctx.c.infer("ghost", [ctx.fp32(_x())]))


@case("infer with request_id")
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())], request_id="req-42"))


@case("infer with parameters")
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())], parameters={"custom": "v", "n": 3, "flag": True}))


@case("infer with reserved parameter")
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())], parameters={"priority": 1}))


@case("infer with priority")
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())], priority=1))


@case("infer with timeout (server side, us)")
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())], timeout=10_000_000))


@case("infer with client_timeout", ("grpc", "grpc_aio"))
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())], client_timeout=30))


@case("infer with headers")
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())], headers={"x-custom": "1"}))


@case("infer wrong dtype")
async def _(ctx):
    import numpy as np

    return await call(ctx.c.infer("simple", [ctx.fp32(_x().astype(np.float64), datatype="FP64")]))


@case("infer wrong shape (inner dim)")
async def _(ctx):
    import numpy as np

    return await call(ctx.c.infer("simple", [ctx.fp32(np.zeros((2, 3), np.float32))]))


@case("infer wrong rank")
async def _(ctx):
    import numpy as np

    return await call(ctx.c.infer("simple", [ctx.fp32(np.zeros((8,), np.float32))]))


@case("infer batch over max_batch_size")
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x(MAX_BATCH + 1))]))


@case("infer data size does not match shape")
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x(2), shape=[3, 4])]))


@case("infer missing input")
async def _(ctx):
    return await call(ctx.c.infer("strings", _strings(ctx)[:1]))


@case("infer unexpected extra input")
async def _(ctx):
    import numpy as np

    return await call(ctx.c.infer("simple", [ctx.fp32(_x()), ctx.fp32(np.zeros((2, 4), np.float32), "EXTRA")]))


@case("infer duplicate input")
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x()), ctx.fp32(_x())]))


@case("infer unknown output requested")
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())], outputs=[ctx.out("NOPE")]))


@case("infer zero inputs")
async def _(ctx):
    return await call(ctx.c.infer("simple", []))


@case("infer strings BYTES+INT32")
async def _(ctx):
    return await call(ctx.c.infer("strings", _strings(ctx, 3)))


@case("infer strings JSON", ("http", "http_aio"))
async def _(ctx):
    import numpy as np

    text = np.array([[b"abc"], [b"d"]], dtype=object)
    return await call(ctx.c.infer("strings", [ctx.fp32(text, "TEXT", "BYTES", binary=False),
                                              ctx.fp32(np.array([[1], [2]], np.int32), "COUNT", "INT32", binary=False)],
                                  outputs=[ctx.out("TEXT_OUT", binary=False), ctx.out("COUNT_OUT", binary=False)]))


@case("infer strings wrong dtype for BYTES")
async def _(ctx):
    import numpy as np

    return await call(ctx.c.infer("strings", [ctx.fp32(np.zeros((2, 1), np.int32), "TEXT", "INT32"),
                                              _strings(ctx)[1]]))


@case("infer class_count 2")
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())], outputs=[ctx.out("OUTPUT0", class_count=2)]))


@case("infer class_count 2 JSON", ("http", "http_aio"))
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())], outputs=[ctx.out("OUTPUT0", binary=False,
                                                                                  class_count=2)]))


@case("infer class_count larger than classes")
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())], outputs=[ctx.out("OUTPUT0", class_count=10)]))


@case("infer class_count on BYTES output", crashes_triton=True)
async def _(ctx):
    return await call(ctx.c.infer("strings", _strings(ctx), outputs=[ctx.out("TEXT_OUT", class_count=1)]))


@case("infer compressed gzip request", ("http", "http_aio"))
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())], request_compression_algorithm="gzip"))


@case("infer compressed deflate response", ("http", "http_aio"))
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())], response_compression_algorithm="deflate"))


@case("infer gzip both ways", ("grpc", "grpc_aio"))
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())], compression_algorithm="gzip"))


@case("infer non-numeric version")
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())], model_version="abc"))


@case("infer with query_params", ("http", "http_aio"))
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())], query_params={"test": "1"}))


@case("get_model_metadata with headers and query_params", ("http", "http_aio"))
async def _(ctx):
    return await call(ctx.c.get_model_metadata("simple", headers={"x-a": "b"}, query_params={"q": "1"}))


@case("infer empty batch (0 rows)")
async def _(ctx):
    import numpy as np

    return await call(ctx.c.infer("simple", [ctx.fp32(np.zeros((0, 4), np.float32))]))


@case("infer with sequence_id on a non-sequence model")
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())], sequence_id=7, sequence_start=True))


@case("infer with tiny timeout (1 us)")
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())], timeout=1))


@case("infer with priority beyond levels")
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())], priority=99))


@case("infer output name requested twice")
async def _(ctx):
    return await call(ctx.c.infer("simple", [ctx.fp32(_x())], outputs=[ctx.out("OUTPUT0"), ctx.out("OUTPUT0")]))


@case("infer BYTES input given as JSON numbers", ("http", "http_aio"))
async def _(ctx):
    import numpy as np

    return await call(ctx.c.infer("strings", [ctx.fp32(np.array([[1], [2]], dtype=np.int32), "TEXT", "INT32",
                                                        binary=False), _strings(ctx)[1]]))


@case("update_trace_settings level TIMESTAMPS then OFF")
async def _(ctx):
    kwargs = {"as_json": True} if ctx.grpc else {}
    first = await call(ctx.c.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]}, **kwargs))
    second = await call(ctx.c.update_trace_settings(settings={"trace_level": ["OFF"]}, **kwargs))
    return Summary([summarize(first), summarize(second)])


@case("update_trace_settings count and log_frequency")
async def _(ctx):
    return await call(ctx.c.update_trace_settings(settings={"trace_count": "5", "log_frequency": "2"},
                                                  **({"as_json": True} if ctx.grpc else {})))


@case("update_trace_settings bad count")
async def _(ctx):
    return await call(ctx.c.update_trace_settings(settings={"trace_count": "-5x"}))


@case("update_log_settings verbose 1 then 0")
async def _(ctx):
    kwargs = {"as_json": True} if ctx.grpc else {}
    first = await call(ctx.c.update_log_settings({"log_verbose_level": 1}, **kwargs))
    second = await call(ctx.c.update_log_settings({"log_verbose_level": 0}, **kwargs))
    return Summary([summarize(first), summarize(second)])


@case("update_log_settings negative verbose level")
async def _(ctx):
    return await call(ctx.c.update_log_settings({"log_verbose_level": -1}))


@case("update_log_settings log_file")
async def _(ctx):
    return await call(ctx.c.update_log_settings({"log_file": ""}))


@case("register_system_shared_memory zero byte_size")
async def _(ctx):
    import tritonclient.utils.shared_memory as shm

    key = f"/{ctx.shm_prefix}_{ctx.kind}_zero"
    handle = shm.create_shared_memory_region("zero", key, 64)
    try:
        return await call(ctx.c.register_system_shared_memory("zero", key, 0))
    finally:
        try:
            await call(ctx.c.unregister_system_shared_memory("zero"))
        finally:
            shm.destroy_shared_memory_region(handle)


@case("register_system_shared_memory byte_size past end")
async def _(ctx):
    import tritonclient.utils.shared_memory as shm

    key = f"/{ctx.shm_prefix}_{ctx.kind}_past"
    handle = shm.create_shared_memory_region("past", key, 64)
    try:
        return await call(ctx.c.register_system_shared_memory("past", key, 128))
    finally:
        try:
            await call(ctx.c.unregister_system_shared_memory("past"))
        finally:
            shm.destroy_shared_memory_region(handle)


@case("shared memory output too small")
async def _(ctx):
    import tritonclient.utils.shared_memory as shm

    key = f"/{ctx.shm_prefix}_{ctx.kind}_osmall"
    handle = shm.create_shared_memory_region("osmall", key, 16)
    try:
        await call(ctx.c.register_system_shared_memory("osmall", key, 16))
        out = ctx.m.InferRequestedOutput("OUTPUT0")
        out.set_shared_memory("osmall", 16)
        return await call(ctx.c.infer("simple", [ctx.fp32(_x())], outputs=[out]))
    finally:
        try:
            await call(ctx.c.unregister_system_shared_memory("osmall"))
        finally:
            shm.destroy_shared_memory_region(handle)


@case("get_cuda_shared_memory_status unknown region")
async def _(ctx):
    return await call(ctx.c.get_cuda_shared_memory_status("nowhere"))


@case("unregister_cuda_shared_memory unknown region")
async def _(ctx):
    return await call(ctx.c.unregister_cuda_shared_memory("nowhere"))


@case("async_infer", ("http", "grpc"))
async def _(ctx):
    if ctx.kind == "http":
        return ctx.c.async_infer("simple", [ctx.fp32(_x())], request_id="a1").get_result()
    import queue

    answers = queue.Queue()
    ctx.c.async_infer("simple", [ctx.fp32(_x())], lambda result, error: answers.put((result, error)),
                      request_id="a1")
    result, error = answers.get(timeout=30)
    if error is not None:
        raise error
    return result


@case("async_infer unknown model", ("http", "grpc"))
async def _(ctx):
    if ctx.kind == "http":
        return ctx.c.async_infer("ghost", [ctx.fp32(_x())]).get_result()
    import queue

    answers = queue.Queue()
    ctx.c.async_infer("ghost", [ctx.fp32(_x())], lambda result, error: answers.put((result, error)))
    result, error = answers.get(timeout=30)
    if error is not None:
        raise error
    return result


# streaming -------------------------------------------------------------------------------------------
def _stream_requests(ctx):
    import numpy as np

    good = dict(model_name="simple", inputs=[ctx.fp32(_x())], request_id="s1")
    return [good,
            dict(model_name="ghost", inputs=[ctx.fp32(_x())], request_id="s2"),
            dict(model_name="simple", inputs=[ctx.fp32(np.zeros((2, 3), np.float32))], request_id="s3"),
            dict(model_name="simple", inputs=[ctx.fp32(_x())], outputs=[ctx.out("NOPE")], request_id="s4"),
            dict(model_name="simple", inputs=[ctx.fp32(_x())], model_version="7", request_id="s5"),
            dict(model_name="strings", inputs=_strings(ctx), request_id="s6"),
            dict(model_name="simple", inputs=[ctx.fp32(_x(MAX_BATCH + 1))], request_id="s7"),
            dict(good, request_id="s8")]


def _stream_item(result, error):
    if error is not None:
        return {"error": type(error).__name__, "status": str(error.status())}
    summary = summarize(result)
    return {"id": result.get_response().id, "response": summary["response"], "arrays": summary["arrays"]}


@case("stream infer with errors mid-stream", ("grpc",))
async def _(ctx):
    import queue

    answers = queue.Queue()
    ctx.c.start_stream(lambda result, error: answers.put((result, error)))
    try:
        requests = _stream_requests(ctx)
        for request in requests:
            ctx.c.async_stream_infer(**request)
        items = [answers.get(timeout=30) for _ in requests]
    finally:
        ctx.c.stop_stream()
    return Summary([_stream_item(r, e) for r, e in items])


@case("stream infer with errors mid-stream", ("grpc_aio",))
async def _(ctx):
    requests = _stream_requests(ctx)

    async def source():
        for request in requests:
            yield request

    items = []
    async for result, error in ctx.c.stream_infer(source()):
        items.append((result, error))
        if len(items) == len(requests):
            break
    return Summary([_stream_item(r, e) for r, e in items])


@case("stream infer with enable_empty_final_response", ("grpc",))
async def _(ctx):
    import queue

    answers = queue.Queue()
    ctx.c.start_stream(lambda result, error: answers.put((result, error)))
    try:
        ctx.c.async_stream_infer("simple", [ctx.fp32(_x())], request_id="e1", enable_empty_final_response=True)
        items = [answers.get(timeout=30)]
        try:
            items.append(answers.get(timeout=3))
        except queue.Empty:
            pass
    finally:
        ctx.c.stop_stream()
    out = []
    for result, error in items:
        if error is not None:
            out.append({"error": type(error).__name__, "status": str(error.status())})
        else:
            response = proto_dict(result.get_response())
            out.append(shape_of({k: v for k, v in response.items() if k != "raw_output_contents"}))
    return Summary(out)


@case("stream with gzip, stream_timeout and headers; stop_stream(cancel_requests=True)", ("grpc",))
async def _(ctx):
    import queue

    answers = queue.Queue()
    ctx.c.start_stream(lambda result, error: answers.put((result, error)), stream_timeout=30,
                       headers={"x-stream": "1"}, compression_algorithm="gzip")
    try:
        for i in range(3):
            ctx.c.async_stream_infer("simple", [ctx.fp32(_x(i + 1))], request_id=f"g{i}")
        items = [answers.get(timeout=30) for _ in range(3)]
    finally:
        ctx.c.stop_stream(cancel_requests=True)
    return Summary([_stream_item(r, e) for r, e in items])


@case("stream with gzip and headers", ("grpc_aio",))
async def _(ctx):
    async def source():
        for i in range(3):
            yield {"model_name": "simple", "inputs": [ctx.fp32(_x(i + 1))], "request_id": f"g{i}"}

    items = []
    async for result, error in ctx.c.stream_infer(source(), stream_timeout=30, headers={"x-stream": "1"},
                                                  compression_algorithm="gzip"):
        items.append((result, error))
        if len(items) == 3:
            break
    return Summary([_stream_item(r, e) for r, e in items])


@case("generate_request_body + raw POST + parse_response_body", ("http",))
async def _(ctx):
    import tritonclient.http as m

    body, header_length = m.InferenceServerClient.generate_request_body(
        [ctx.fp32(_x())], outputs=[ctx.out("OUTPUT0", binary=True)], request_id="gen")
    request = urllib.request.Request(f"http://127.0.0.1:{ctx.server.http}/v2/models/simple/infer", data=body,
                                     method="POST", headers={"Inference-Header-Content-Length": str(header_length)})
    with urllib.request.urlopen(request, timeout=30) as response:
        content, length = response.read(), response.headers.get("Inference-Header-Content-Length")
    return m.InferenceServerClient.parse_response_body(content, header_length=int(length) if length else None)


@case("plugin (BasicAuth headers)", ("http", "grpc"))
async def _(ctx):
    from tritonclient.grpc.auth import BasicAuth

    ctx.c.register_plugin(BasicAuth("user", "secret"))
    try:
        return ctx.c.infer("simple", [ctx.fp32(_x())])
    finally:
        ctx.c.unregister_plugin()


# raw HTTP (no tritonclient) ---------------------------------------------------------------------------
RAW = []


def raw(name, method, path, body=None, headers=None):
    RAW.append((name, method, path, body, headers or {}))


raw("bad JSON infer", "POST", "/v2/models/simple/infer", b"{not json")
raw("empty body infer", "POST", "/v2/models/simple/infer", b"")
raw("JSON array body infer", "POST", "/v2/models/simple/infer", b"[]")
raw("inputs not a list", "POST", "/v2/models/simple/infer", b'{"inputs": 3}')
raw("input without data", "POST", "/v2/models/simple/infer",
    b'{"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32"}]}')
raw("input data wrong length", "POST", "/v2/models/simple/infer",
    b'{"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}]}')
raw("input data nested", "POST", "/v2/models/simple/infer",
    b'{"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [[1, 2, 3, 4]]}]}')
raw("input data strings for FP32", "POST", "/v2/models/simple/infer",
    b'{"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": ["a", "b", "c", "d"]}]}')
raw("unknown datatype", "POST", "/v2/models/simple/infer",
    b'{"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP99", "data": [1, 2, 3, 4]}]}')
raw("negative shape", "POST", "/v2/models/simple/infer",
    b'{"inputs": [{"name": "INPUT0", "shape": [-1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}')
raw("good JSON infer", "POST", "/v2/models/simple/infer",
    b'{"id": "r1", "inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}')
raw("good JSON infer, outputs binary_data_output", "POST", "/v2/models/simple/infer",
    b'{"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],'
    b' "parameters": {"binary_data_output": true}}')
raw("binary header length past body", "POST", "/v2/models/simple/infer", b'{"inputs": []}',
    {"Inference-Header-Content-Length": "999"})
raw("binary header length not a number", "POST", "/v2/models/simple/infer", b'{}',
    {"Inference-Header-Content-Length": "abc"})
raw("infer unknown model", "POST", "/v2/models/ghost/infer",
    b'{"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}')
raw("infer unknown version", "POST", "/v2/models/simple/versions/7/infer",
    b'{"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}')
raw("infer non-numeric version", "POST", "/v2/models/simple/versions/abc/infer",
    b'{"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}')
raw("GET on infer", "GET", "/v2/models/simple/infer")
raw("POST on live", "POST", "/v2/health/live", b"{}")
raw("metadata of version 1", "GET", "/v2/models/simple/versions/1")
raw("config of unknown", "GET", "/v2/models/ghost/config")
raw("stats of all", "GET", "/v2/models/stats")
raw("BYTES JSON data", "POST", "/v2/models/strings/infer",
    b'{"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["abc"]},'
    b' {"name": "COUNT", "shape": [1, 1], "datatype": "INT32", "data": [5]}]}')
raw("BYTES JSON numbers", "POST", "/v2/models/strings/infer",
    b'{"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": [3]},'
    b' {"name": "COUNT", "shape": [1, 1], "datatype": "INT32", "data": [5]}]}')
raw("outputs with binary_data false", "POST", "/v2/models/simple/infer",
    b'{"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],'
    b' "outputs": [{"name": "OUTPUT1", "parameters": {"binary_data": false}}]}')
raw("outputs entry without name", "POST", "/v2/models/simple/infer",
    b'{"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],'
    b' "outputs": [{"parameters": {"binary_data": false}}]}')
raw("input without name", "POST", "/v2/models/simple/infer",
    b'{"inputs": [{"shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}')
raw("input without datatype", "POST", "/v2/models/simple/infer",
    b'{"inputs": [{"name": "INPUT0", "shape": [1, 4], "data": [1, 2, 3, 4]}]}')
raw("input without shape", "POST", "/v2/models/simple/infer",
    b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "data": [1, 2, 3, 4]}]}')
raw("FP32 data with booleans", "POST", "/v2/models/simple/infer",
    b'{"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [true, false, true, 1]}]}')
raw("INT32 data with floats", "POST", "/v2/models/strings/infer",
    b'{"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["abc"]},'
    b' {"name": "COUNT", "shape": [1, 1], "datatype": "INT32", "data": [5.5]}]}')
raw("INT32 data out of range", "POST", "/v2/models/strings/infer",
    b'{"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["abc"]},'
    b' {"name": "COUNT", "shape": [1, 1], "datatype": "INT32", "data": [99999999999]}]}')
raw("request id is a number", "POST", "/v2/models/simple/infer",
    b'{"id": 5, "inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}')
raw("parameters not an object", "POST", "/v2/models/simple/infer",
    b'{"parameters": 3, "inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}')
raw("unknown top-level key", "POST", "/v2/models/simple/infer",
    b'{"bogus": 1, "inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}')
raw("binary input size mismatch", "POST", "/v2/models/simple/infer",
    b'{"inputs":[{"name":"INPUT0","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":8}}]}'
    + b"\x00" * 8, {"Inference-Header-Content-Length": "97"})
raw("oversize body (70 MB of JSON whitespace)", "POST", "/v2/models/simple/infer", b" " * (70 << 20))
raw("trace setting unknown model", "GET", "/v2/models/ghost/trace/setting")
raw("log settings GET", "GET", "/v2/logging")
raw("repository index empty body", "POST", "/v2/repository/index")
raw("unload unknown (raw)", "POST", "/v2/repository/models/ghost/unload", b"{}")
raw("unload with parameters", "POST", "/v2/repository/models/ghost/unload",
    b'{"parameters": {"unload_dependents": true}}')
raw("unknown route", "GET", "/v2/nothing/here")
raw("model ready", "GET", "/v2/models/simple/ready")
raw("model ready unknown", "GET", "/v2/models/ghost/ready")
raw("model ready unknown version", "GET", "/v2/models/simple/versions/7/ready")
raw("model metadata unknown", "GET", "/v2/models/ghost")
raw("server live", "GET", "/v2/health/live")
raw("server ready", "GET", "/v2/health/ready")
raw("repository index bad JSON", "POST", "/v2/repository/index", b"{oops")
raw("repository index ready", "POST", "/v2/repository/index", b'{"ready": true}')
raw("load bad JSON", "POST", "/v2/repository/models/ghost/load", b"{oops")
raw("stats unknown", "GET", "/v2/models/ghost/stats")
raw("log settings bad JSON", "POST", "/v2/logging", b"{oops")
raw("trace settings bad JSON", "POST", "/v2/trace/setting", b"{oops")
raw("shm register bad JSON", "POST", "/v2/systemsharedmemory/region/r/register", b"{oops")
raw("shm register missing key", "POST", "/v2/systemsharedmemory/region/r/register", b'{"byte_size": 16}')
raw("shm status unknown", "GET", "/v2/systemsharedmemory/region/nowhere/status")
raw("shm unregister unknown", "POST", "/v2/systemsharedmemory/region/nowhere/unregister")


def raw_call(port, method, path, body, headers):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, content = response.status, response.read()
            length = response.headers.get("Inference-Header-Content-Length")
    except urllib.error.HTTPError as exc:
        status, content, length = exc.code, exc.read(), exc.headers.get("Inference-Header-Content-Length")
    if length is not None:
        content = content[:int(length)]
    message = None
    try:
        loaded = json.loads(content) if content else None
        parsed = shape_of(loaded)
        for entry in (parsed.get("model_stats") or []) if isinstance(parsed, dict) else []:
            if isinstance(entry, dict) and entry.get("batch_stats"):  # how many sizes ran depends on history
                entry["batch_stats"] = entry["batch_stats"][:1]
        if isinstance(loaded, dict) and isinstance(loaded.get("error"), str):
            message = loaded["error"][:160]
    except ValueError:
        parsed = f"non-JSON body: {content[:80]!r}"
    return {"status": status, "body": parsed, "message": message}


# ---------------------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------------------
def make_client(kind, server):
    if kind == "http":
        import tritonclient.http as m

        return m.InferenceServerClient(f"127.0.0.1:{server.http}", network_timeout=60), m
    if kind == "http_aio":
        import tritonclient.http as m
        import tritonclient.http.aio as aio

        return aio.InferenceServerClient(f"127.0.0.1:{server.http}", conn_timeout=60), m
    if kind == "grpc":
        import tritonclient.grpc as m

        return m.InferenceServerClient(f"127.0.0.1:{server.grpc}"), m
    import tritonclient.grpc as m
    import tritonclient.grpc.aio as aio

    return aio.InferenceServerClient(f"127.0.0.1:{server.grpc}"), m


async def run_cases(server, only, shm_prefix):
    outcomes = {}
    for kind in KINDS:
        client, module = make_client(kind, server)
        try:
            for name, kinds, fn in CASES:
                if kind not in kinds or (only and only not in name):
                    continue
                ctx = Ctx(client, module, kind, server, shm_prefix)
                if server.name == "triton" and name in CRASHES_TRITON:
                    outcomes[(name, kind)] = {"error": "CRASH (Triton exits; not run)", "status": None}
                    continue
                try:
                    value = await asyncio.wait_for(fn(ctx), 60)
                    outcome = {"ok": summarize(value)}
                except asyncio.TimeoutError:
                    outcome = {"error": "TIMEOUT (hang)", "status": None}
                except Exception as exc:  # noqa: BLE001 - the exception is the outcome
                    outcome = error_outcome(exc)
                    if not hasattr(exc, "status"):
                        outcome["trace"] = traceback.format_exc(limit=3)[-400:]
                outcomes[(name, kind)] = outcome
        finally:
            await call(client.close())
    for name, method, path, body, headers in RAW:
        if only and only not in name:
            continue
        try:
            outcomes[(name, "raw")] = await asyncio.get_running_loop().run_in_executor(
                None, raw_call, server.http, method, path, body, headers)
        except Exception as exc:  # noqa: BLE001
            outcomes[(name, "raw")] = {"error": type(exc).__name__, "message": str(exc)[:160]}
    return outcomes


# Differences gpuserve keeps on purpose (case name -> why). Everything else that differs is a bug.
_CLIENT_ERROR_AS_500 = "Triton answers a client error with 500/INTERNAL/503; gpuserve says 400/INVALID_ARGUMENT"
KEPT = {
    "get_server_metadata": "name, version and extensions differ by design",
    "get_model_metadata simple": "platform differs (python vs onnxruntime_onnx); gpuserve adds parameters "
                                 "{device, max_batch_size} (optional in the Open Inference Protocol)",
    "get_model_metadata strings version 1": "as get_model_metadata simple",
    "metadata of version 1": "as get_model_metadata simple",
    "get_model_metadata with headers and query_params": "as get_model_metadata simple",
    "get_model_config full (keys and leaf types)": "backend/platform and the PyTriton-specific parts "
                                                   "(parameters, optimization, instance names) differ",
    "get_model_repository_index": "PyTriton's model store is empty, so its index lists nothing",
    "repository index ready": "as get_model_repository_index",
    "repository index empty body": "as get_model_repository_index",
    "load_model unknown": "Triton: 500/INTERNAL 'failed to poll from model repository'; gpuserve: 404/NOT_FOUND",
    "unload_model unknown": "Triton succeeds; gpuserve answers 404/NOT_FOUND as KServe and MLServer (1.7.1, checked) do",
    "unload unknown (raw)": "as unload_model unknown",
    "unload with parameters": "as unload_model unknown",
    "is_server_ready": "after a model loaded from files is unloaded (the case before, on the previous client), "
                       "Triton's strict readiness stays false; gpuserve's readiness counts the models it serves",
    "load_model with bad config JSON": "Triton polls the repository for the unknown model first (500/INTERNAL); "
                                       "gpuserve reads the config first: 400/INVALID_ARGUMENT, not valid JSON",
    "update_log_settings unknown key": "Triton ignores unknown keys silently; gpuserve refuses typos with 400",
    "update_trace_settings unknown key": "as update_log_settings unknown key",
    "update_trace_settings bad level": "Triton accepts trace_level LOUD; gpuserve refuses it with 400",
    "update_trace_settings level TIMESTAMPS then OFF": "Triton needs a trace_file; gpuserve traces to its log",
    "infer class_count on BYTES output": "Triton 2.51 exits (crash); gpuserve answers 400",
    "infer output name requested twice": "Triton 2.51 answers it once; current Triton (2.73, the tritonclient "
                                          "we match) refuses with 400/INVALID_ARGUMENT \"output 'OUTPUT0' already "
                                          "exists in request\" (qa/L0_http test_duplicate_output_names), as gpuserve",
    "update_log_settings wrong type": _CLIENT_ERROR_AS_500,
    "update_log_settings log_format bad": _CLIENT_ERROR_AS_500,
    "update_log_settings negative verbose level": _CLIENT_ERROR_AS_500,
    "register_system_shared_memory bad key": _CLIENT_ERROR_AS_500,
    "shared memory output too small": _CLIENT_ERROR_AS_500,
    "bad JSON infer": _CLIENT_ERROR_AS_500, "JSON array body infer": _CLIENT_ERROR_AS_500,
    "inputs not a list": _CLIENT_ERROR_AS_500, "input data wrong length": _CLIENT_ERROR_AS_500,
    "input data strings for FP32": _CLIENT_ERROR_AS_500, "negative shape": _CLIENT_ERROR_AS_500,
    "outputs entry without name": _CLIENT_ERROR_AS_500, "input without name": _CLIENT_ERROR_AS_500,
    "input without datatype": _CLIENT_ERROR_AS_500, "input without shape": _CLIENT_ERROR_AS_500,
    "parameters not an object": _CLIENT_ERROR_AS_500, "binary input size mismatch": _CLIENT_ERROR_AS_500,
    "repository index bad JSON": _CLIENT_ERROR_AS_500, "load bad JSON": _CLIENT_ERROR_AS_500,
    "log settings bad JSON": _CLIENT_ERROR_AS_500, "trace settings bad JSON": _CLIENT_ERROR_AS_500,
    "shm register bad JSON": _CLIENT_ERROR_AS_500, "INT32 data with floats": _CLIENT_ERROR_AS_500,
    "oversize body (70 MB of JSON whitespace)": _CLIENT_ERROR_AS_500 + " (neither has a limit at 70 MB; "
                                                "gpuserve refuses bodies over max_request_bytes, 256 MB, with 413)",
    "INT32 data out of range": "Triton wraps 99999999999 into INT32 silently; gpuserve refuses it with 400",
    "BYTES JSON numbers": "gpuserve takes a JSON number as its text for BYTES (Triton: 500)",
    "FP32 data with booleans": "gpuserve takes JSON true/false as 1/0 (Triton: 500)",
    "request id is a number": "gpuserve takes a numeric id as its text (Triton: 500)",
    "model ready": "Triton's health/ready routes answer an empty body; gpuserve answers KServe's JSON body",
    "server live": "as model ready", "server ready": "as model ready",
    "model ready unknown": "Triton: 400; gpuserve: 404 as KServe (tritonclient's is_model_ready says False "
                           "either way)",
    "model ready unknown version": "as model ready unknown",
    "shm unregister unknown": "Triton answers an empty body, gpuserve {} (both 200)",
}


def print_diff(triton, ours, show_all) -> int:
    differ = kept = 0
    for key in triton:
        a, b = triton[key], ours.get(key)
        equal = same(a, b)
        if equal and not show_all:
            continue
        mark = "  same" if equal else "  KEPT" if key[0] in KEPT else "DIFFER"
        differ += mark == "DIFFER"
        kept += mark == "  KEPT"
        print(f"[{mark}] {key[0]}  ({key[1]})" + (f"  -- {KEPT[key[0]]}" if mark == "  KEPT" else ""))
        print(f"    triton:   {json.dumps(a, default=str, sort_keys=True)}")
        print(f"    gpuserve: {json.dumps(b, default=str, sort_keys=True)}")
    print(f"\n{len(triton)} outcomes: {differ} differ, {kept} differ on purpose (KEPT, reason given)")
    return differ


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve-triton", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--http-port", type=int)
    parser.add_argument("--grpc-port", type=int)
    parser.add_argument("--metrics-port", type=int)
    parser.add_argument("--only", default="", help="run only cases whose name contains this")
    parser.add_argument("--show-all", action="store_true", help="print equal outcomes too")
    parser.add_argument("--keep", default=None, help="keep the repository and logs in this folder")
    parser.add_argument("--json", default=None, help="write every outcome to this JSON file")
    args = parser.parse_args()
    if args.serve_triton:
        serve_triton(args)
        return 0
    if not TRITON_PYTHON.exists():
        print("no Triton venv: bash benchmarks/peers/setup.sh triton", file=sys.stderr)
        return 2
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="conformance-"))
    if (work / "repo").exists():
        shutil.rmtree(work / "repo")
    work.mkdir(parents=True, exist_ok=True)
    build_repository(work / "repo")
    triton = Server("triton", [str(TRITON_PYTHON), __file__, "--serve-triton", "--http-port", "{http}",
                               "--grpc-port", "{grpc}", "--metrics-port", "{metrics}"], work / "triton.log")
    ours = Server("gpuserve", [str(GPUSERVE), "start", str(work / "repo"), "--host", "127.0.0.1", "--http-port",
                               "{http}", "--grpc-port", "{grpc}", "--metrics-port", "{metrics}"],
                  work / "gpuserve.log")
    ready = ["/v2/health/ready", "/v2/models/simple/ready", "/v2/models/strings/ready"]
    try:
        triton.start()
        ours.start()
        triton.wait(ready)
        ours.wait(ready)
        prefix = f"conf{os.getpid()}"
        triton_out = asyncio.run(run_cases(triton, args.only, prefix + "t"))
        ours_out = asyncio.run(run_cases(ours, args.only, prefix + "g"))
    finally:
        triton.stop()
        ours.stop()
    if args.json:
        Path(args.json).write_text(json.dumps({"triton": {f"{k[0]} | {k[1]}": v for k, v in triton_out.items()},
                                               "gpuserve": {f"{k[0]} | {k[1]}": v for k, v in ours_out.items()}},
                                              indent=1, default=str))
    differ = print_diff(triton_out, ours_out, args.show_all)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
