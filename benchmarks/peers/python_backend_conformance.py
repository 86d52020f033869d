"""Triton Python-backend models (model.py + `backend: "python"`) on real Triton and on gpuserve, compared.

Why: a Triton repository of Python-backend models must behave the same on gpuserve. The real Triton's
answers (status codes, messages, what `initialize` receives, what auto-completion reports) define what
gpuserve must answer, so this script records them case by case and diffs gpuserve's against them.

Not a test: it needs the Triton peer venv (bash benchmarks/peers/setup.sh triton). Run by hand:

    .venv/bin/python benchmarks/peers/python_backend_conformance.py [--triton-only] [--only SUBSTRING]
                                                                    [--show-all] [--keep DIR] [--json FILE]

The models come from python_models.write_repository (one copy of the repository per server). Triton 2.51
is the tritonserver binary bundled in the nvidia-pytriton wheel, started directly the way PyTriton
starts it: the python backend folder is copied next to the stub built for the Triton venv's Python,
LD_LIBRARY_PATH points at nvidia_pytriton.libs and the venv's bin/ leads PATH (the stub embeds
libpython3.11 and imports numpy from that venv). gpuserve runs `gpuserve start FOLDER`.

Every case runs through tritonclient.http and tritonclient.grpc and records the outcome: output arrays
(dtype, shape, values) or the error (HTTP status / gRPC code, message). Status and code are compared
exactly; messages only loosely (a case may name a key phrase that gpuserve's message must contain,
case-insensitively). A model gpuserve did not load gives "gpuserve: model not ready: <reason>".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from conformance import Server, tensor_summary  # noqa: E402
from python_models import ERROR_PATHS, MODELS, NOT_READY, READY_MODELS, write_repository  # noqa: E402

ROOT = HERE.parents[1]
TRITON_VENV = ROOT / ".peers" / "triton"
GPUSERVE = ROOT / ".venv" / "bin" / "gpuserve"
PROTOCOLS = ("http", "grpc")
SHM_PREFIX = f"triton_python_backend_shm_pbc{os.getpid()}_"  # the python backend's regions, ours only
LOOSE_KEYS = ("message", "reason", "note")  # shown, not compared exactly ("note" not at all)


# ---------------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------------
def site_packages() -> Path:
    found = sorted(TRITON_VENV.glob("lib/python3.*/site-packages/pytriton"))
    if not found:
        raise SystemExit("no Triton venv with pytriton: bash benchmarks/peers/setup.sh triton")
    return found[0].parent


def prepare_backends(work: Path) -> Path:
    """A backend folder as PyTriton builds one: the python backend plus the stub for the venv's Python."""
    dist = site_packages() / "pytriton" / "tritonserver"
    python_version = site_packages().parent.name.removeprefix("python")  # lib/python3.11/site-packages
    backends = work / "backends"
    shutil.copytree(dist / "backends" / "python", backends / "python", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(dist / "python_backend_stubs" / python_version / "triton_python_backend_stub", backends / "python")
    return backends


def triton_server(work: Path, repo: Path) -> Server:
    dist = site_packages() / "pytriton" / "tritonserver"
    libs = site_packages() / "nvidia_pytriton.libs"
    env = {"LD_LIBRARY_PATH": ":".join(filter(None, [os.environ.get("LD_LIBRARY_PATH"), str(libs)])),
           "PATH": f"{TRITON_VENV / 'bin'}:{os.environ['PATH']}"}
    cmd = [str(dist / "bin" / "tritonserver"), f"--model-repository={repo}",
           f"--backend-directory={prepare_backends(work)}",
           f"--backend-config=python,shm-region-prefix-name={SHM_PREFIX}",
           "--http-address=127.0.0.1", "--http-port={http}", "--grpc-address=127.0.0.1", "--grpc-port={grpc}",
           "--metrics-address=127.0.0.1", "--metrics-port={metrics}", "--allow-gpu-metrics=false",
           "--exit-on-error=false",  # `broken` fails to load on purpose; serve the others
           "--exit-timeout-secs=5"]  # a request the model never answers must not hold the exit 30 s
    server = Server("triton", cmd, work / "triton.log", env)
    server.repo = repo
    return server


def gpuserve_server(work: Path, repo: Path) -> Server:
    cmd = [str(GPUSERVE), "start", str(repo), "--host", "127.0.0.1", "--http-port", "{http}",
           "--grpc-port", "{grpc}", "--metrics-port", "{metrics}"]
    server = Server("gpuserve", cmd, work / "gpuserve.log")
    server.repo = repo
    return server


def http_json(server: Server, method: str, path: str, body=None, timeout=5.0):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{server.http}{path}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read()
    return json.loads(text) if text else None


def model_states(server: Server) -> dict:
    """name -> (state, reason) from the repository index."""
    index = http_json(server, "POST", "/v2/repository/index", {})
    return {entry["name"]: (entry.get("state", ""), entry.get("reason", "")) for entry in index}


def wait_for_models(server: Server, timeout=180.0) -> dict:
    """Wait until the server is live and no model is still loading; return model_states."""
    server.wait(["/v2/health/live"], timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            states = model_states(server)
        except (urllib.error.URLError, OSError, ValueError):
            states = {}
        # Triton leaves an ensemble with a missing step out of the index altogether
        absent = lambda name: ("UNAVAILABLE" if name == "ensemble_missing" else "",)  # noqa: E731
        settled = all(states.get(name, absent(name))[0] in ("READY", "UNAVAILABLE") for name in MODELS)
        if settled or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def stop(server: Server) -> None:
    """Stop the server, then anything left in its process group (the python backend's stubs)."""
    if server.proc is None:
        return
    server.stop()
    try:
        os.killpg(server.proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def clean_shm() -> None:
    for path in Path("/dev/shm").glob(SHM_PREFIX + "*"):
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------------
CASES = []  # (name, model, fn, key phrase, needs the model ready, protocols it runs over)


def case(name, model, key=None, needs_ready=True, protocols=PROTOCOLS):
    """protocols: the Ctx protocols the case runs under; a raw-HTTP case (generate) runs once, as "http"."""
    def add(fn):
        CASES.append((name, model, fn, key, needs_ready, tuple(protocols)))
        return fn

    return add


class Ctx:
    """What a case gets: a fresh client of one protocol and helpers that hide the protocol."""

    def __init__(self, server: Server, protocol: str, timeout: float):
        self.server, self.protocol, self.timeout = server, protocol, timeout
        self.m, self.c = self.client()

    def client(self):
        if self.protocol == "http":
            import tritonclient.http as m

            return m, m.InferenceServerClient(f"127.0.0.1:{self.server.http}", connection_timeout=self.timeout,
                                              network_timeout=self.timeout)
        import tritonclient.grpc as m

        return m, m.InferenceServerClient(f"127.0.0.1:{self.server.grpc}")

    def tensor(self, name, array, datatype):
        tensor = self.m.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        return tensor

    def infer(self, model, inputs, outputs=None, client=None, **kwargs):
        requested = [self.m.InferRequestedOutput(name) for name in outputs] if outputs else None
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout
        return (client or self.c).infer(model, inputs, outputs=requested, **kwargs)

    def json(self, method, *args):
        kwargs = {"as_json": True} if self.protocol == "grpc" else {}
        return getattr(self.c, method)(*args, **kwargs)

    def close(self):
        self.c.close()


def arrays(result) -> dict:
    response = result.get_response()
    if isinstance(response, dict):
        names = [o["name"] for o in response["outputs"]]
    else:
        names = [o.name for o in response.outputs]
    return {name: tensor_summary(result.as_numpy(name)) for name in sorted(names)}


def ints(value):
    """gRPC's JSON writes int64 as strings; make shapes and counts numbers on both protocols."""
    if isinstance(value, list):
        return [ints(v) for v in value]
    return int(value) if isinstance(value, str) and value.lstrip("-").isdigit() else value


def tensor_specs(entries, shape_key) -> list:
    return [[e["name"], e.get("datatype", e.get("data_type")), ints(e.get(shape_key, []))] for e in entries or []]


def fp32(*values):
    import numpy as np

    return np.array(values, dtype=np.float32)


def int32(*values):
    import numpy as np

    return np.array(values, dtype=np.int32)


# add_sub ---------------------------------------------------------------------------------------------
@case("add_sub infer", "add_sub")
def _(ctx):
    return arrays(ctx.infer("add_sub", [ctx.tensor("INPUT0", fp32(1, 2, 3, 4), "FP32"),
                                        ctx.tensor("INPUT1", fp32(10, 20, 30, 40), "FP32")]))


@case("add_sub requested OUTPUT1 only", "add_sub")
def _(ctx):
    return arrays(ctx.infer("add_sub", [ctx.tensor("INPUT0", fp32(1, 2, 3, 4), "FP32"),
                                        ctx.tensor("INPUT1", fp32(1, 1, 1, 1), "FP32")], outputs=["OUTPUT1"]))


@case("add_sub wrong shape [3]", "add_sub", key="shape")
def _(ctx):
    return arrays(ctx.infer("add_sub", [ctx.tensor("INPUT0", fp32(1, 2, 3), "FP32"),
                                        ctx.tensor("INPUT1", fp32(1, 2, 3), "FP32")]))


@case("add_sub missing INPUT1", "add_sub", key="INPUT1")
def _(ctx):
    return arrays(ctx.infer("add_sub", [ctx.tensor("INPUT0", fp32(1, 2, 3, 4), "FP32")]))


# batched ---------------------------------------------------------------------------------------------
@case("batched 8 concurrent requests", "batched")
def _(ctx):
    import numpy as np

    count = 8
    clients = [ctx.client()[1] for _ in range(count)]
    barrier = threading.Barrier(count)

    def one(i):
        barrier.wait()
        result = ctx.infer("batched", [ctx.tensor("INPUT0", np.full((1, 3), i, np.float32), "FP32")],
                           client=clients[i])
        return result.as_numpy("OUTPUT0"), result.as_numpy("BATCH")

    try:
        with ThreadPoolExecutor(count) as pool:
            results = list(pool.map(one, range(count)))
    finally:
        for client in clients:
            client.close()
    sizes = [int(batch.max()) for _, batch in results]
    return {"outputs right": all(np.array_equal(out, np.full((1, 3), 2 * i, np.float32))
                                 for i, (out, _) in enumerate(results)),
            "any BATCH > 1": max(sizes) > 1, "BATCH shape": list(results[0][1].shape),
            "note": f"BATCH per request {sizes}"}


# errors ------------------------------------------------------------------------------------------------
ERROR_KEYS = {1: "bad value", 2: "missing", 3: "invalid", 4: "unavailable", 5: "unsupported", 6: "raised",
              7: "ValueError: plain", 8: "InferenceResponse", 9: None}


def error_case(value):
    @case(f"errors {value}: {ERROR_PATHS[value]}", "errors", key=ERROR_KEYS.get(value))
    def _(ctx):
        return arrays(ctx.infer("errors", [ctx.tensor("INPUT0", int32(value), "INT32")]))


for _value in ERROR_PATHS:
    error_case(_value)


@case("errors 0 again, after the failures", "errors")
def _(ctx):
    return arrays(ctx.infer("errors", [ctx.tensor("INPUT0", int32(0), "INT32")]))


# strings ---------------------------------------------------------------------------------------------
@case("strings infer", "strings")
def _(ctx):
    import numpy as np

    text = np.array(["hello".encode(), "wörld".encode(), b""], dtype=np.object_)
    return arrays(ctx.infer("strings", [ctx.tensor("TEXT", text, "BYTES")]))


# params ----------------------------------------------------------------------------------------------
def params_outcome(result) -> dict:
    outcome = arrays(result)
    if "PARAMS" in outcome:  # compare the parameters as JSON, not as text
        outcome["PARAMS"]["values"] = [json.loads(v) if v else v for v in outcome["PARAMS"]["values"]]
    return outcome


@case("params custom parameters, request id, outputs PARAMS+NAMES", "params")
def _(ctx):
    return params_outcome(ctx.infer("params", [ctx.tensor("DUMMY", int32(0), "INT32")], outputs=["PARAMS", "NAMES"],
                                    request_id="req-7",
                                    parameters={"custom_str": "abc", "custom_int": 7, "custom_bool": True}))


@case("params no parameters, no id, all outputs", "params")
def _(ctx):
    return params_outcome(ctx.infer("params", [ctx.tensor("DUMMY", int32(0), "INT32")]))


@case("params request id only, all outputs", "params")
def _(ctx):
    return params_outcome(ctx.infer("params", [ctx.tensor("DUMMY", int32(0), "INT32")], request_id="req-8"))


# bls -------------------------------------------------------------------------------------------------
@case("bls exec() on add_sub", "bls")
def _(ctx):
    return arrays(ctx.infer("bls", [ctx.tensor("INPUT0", fp32(1, 2, 3, 4), "FP32"),
                                    ctx.tensor("INPUT1", fp32(0.5, 0.5, 0.5, 0.5), "FP32")]))


@case("bls_missing exec() on an unknown model", "bls_missing", key="no_such_model")
def _(ctx):
    outcome = arrays(ctx.infer("bls_missing", [ctx.tensor("INPUT0", fp32(1, 2, 3, 4), "FP32")]))
    return {"has_error": outcome["HAS_ERROR"]["values"], "code": outcome["CODE"]["values"],
            "message": " | ".join(outcome["MESSAGE"]["values"])}


# autocomplete ------------------------------------------------------------------------------------------
@case("autocomplete model config", "autocomplete")
def _(ctx):
    config = ctx.json("get_model_config", "autocomplete")
    config = config.get("config", config)
    return {"backend": config.get("backend"), "max_batch_size": ints(config.get("max_batch_size", 0)),
            "input": tensor_specs(config.get("input"), "dims"), "output": tensor_specs(config.get("output"), "dims"),
            "dynamic_batching": "dynamic_batching" in config,
            "instance_group": [[g.get("kind"), ints(g.get("count"))] for g in config.get("instance_group", [])]}


@case("autocomplete infer [1, 4]", "autocomplete")
def _(ctx):
    return arrays(ctx.infer("autocomplete", [ctx.tensor("INPUT0", fp32(1, 2, 3, 4).reshape(1, 4), "FP32")]))


# init_args ---------------------------------------------------------------------------------------------
@case("init_args: the args initialize() got", "init_args")
def _(ctx):
    outcome = arrays(ctx.infer("init_args", [ctx.tensor("DUMMY", int32(0), "INT32")]))
    return {"keys": outcome["KEYS"]["values"], "values": json.loads(outcome["VALUES"]["values"][0])}


# broken ------------------------------------------------------------------------------------------------
def index_entry(ctx, model) -> dict:
    index = ctx.json("get_model_repository_index")
    entries = index.get("models", []) if isinstance(index, dict) else index
    entry = next((e for e in entries if e.get("name") == model), {})
    return {"state": entry.get("state"), "reason": entry.get("reason")}


@case("broken repository index entry", "broken", key="cannot start", needs_ready=False)
def _(ctx):
    return index_entry(ctx, "broken")


@case("broken is_model_ready", "broken", needs_ready=False)
def _(ctx):
    return ctx.c.is_model_ready("broken")


@case("broken infer", "broken", key="broken", needs_ready=False)
def _(ctx):
    return arrays(ctx.infer("broken", [ctx.tensor("INPUT0", fp32(1, 2, 3, 4), "FP32")]))


# decoupled ---------------------------------------------------------------------------------------------
STREAM_QUIET_S = 2.0  # a stream case stops waiting this long after the last response


def normalized(value):
    """ints() through dicts too: gRPC's JSON writes int64 as strings."""
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    return ints(value)


def final_flag(response):
    """The triton_final_response parameter of a ModelInferResponse: True/False, or None when absent."""
    return response.parameters["triton_final_response"].bool_param \
        if "triton_final_response" in response.parameters else None


def stream_outcome(ctx, requests, empty_final) -> dict:
    """Send [(request id, IN)] on one tritonclient.grpc stream; collect until every request had its final
    response (or an error), or STREAM_QUIET_S without one; then close the stream gracefully.
    Per request id: [OUT value, triton_final_response]; errors (the client drops their request id) apart."""
    import queue

    got = queue.Queue()
    ctx.c.start_stream(callback=lambda result, error: got.put((result, error)), stream_timeout=ctx.timeout)
    for request_id, value in requests:
        ctx.c.async_stream_infer("decoupled", [ctx.tensor("IN", int32(value), "INT32")], request_id=request_id,
                                 enable_empty_final_response=empty_final)
    received, done = [], 0
    deadline = time.monotonic() + ctx.timeout
    while done < len(requests) and time.monotonic() < deadline:
        try:
            item = got.get(timeout=STREAM_QUIET_S)
        except queue.Empty:
            break
        received.append(item)
        result, error = item
        done += error is not None or bool(result is not None and final_flag(result.get_response()))
    ctx.c.stop_stream()  # waits for the server to end the stream (at most stream_timeout)
    late = []
    while not got.empty():
        late.append(got.get())

    def summary(items):
        by_id, errors = {}, []
        for result, error in items:
            if error is not None:
                errors.append({"message": error.message(), "status": error.status()})
                continue
            response = result.get_response()
            out = result.as_numpy("OUT")
            by_id.setdefault(response.id, []).append(
                [None if out is None else out.ravel().tolist(), final_flag(response)])
        return {"responses": by_id, "errors": errors, "count": len(items)}

    outcome = summary(received)
    if late:
        outcome["after stream close"] = summary(late)
    outcome["stopped waiting"] = "all final" if done >= len(requests) else "quiet timeout"
    return outcome


def decoupled_stream_case(values, empty_final, key=None):
    ids = [f"r{i}" for i in range(len(values))]
    label = ", ".join(f"{i}: IN={v}" for i, v in zip(ids, values))

    @case(f"decoupled stream [{label}]{' enable_empty_final_response' if empty_final else ''}", "decoupled",
          key=key, protocols=("grpc",))
    def _(ctx):
        return stream_outcome(ctx, list(zip(ids, values)), empty_final)


for _empty_final in (False, True):
    decoupled_stream_case([3], _empty_final)
    decoupled_stream_case([0], _empty_final)
    decoupled_stream_case([-1], _empty_final, key="negative")
    decoupled_stream_case([-2], _empty_final, key="negative")
    decoupled_stream_case([2, 0, -1], _empty_final, key="negative")


@case("decoupled raw gRPC ModelStreamInfer [IN=2, IN=-1] empty final: every message as sent", "decoupled",
      key="negative", protocols=("grpc",))
def _(ctx):
    """What tritonclient hides: an error message's infer_response (its id, its final flag)."""
    import grpc
    import numpy as np
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    def request(request_id, value):
        message = service_pb2.ModelInferRequest(model_name="decoupled", id=request_id)
        tensor = message.inputs.add(name="IN", datatype="INT32")
        tensor.shape.append(1)
        message.raw_input_contents.append(np.array([value], np.int32).tobytes())
        message.parameters["triton_enable_empty_final_response"].bool_param = True
        return message

    finished = threading.Event()

    def requests():
        yield request("ok", 2)
        yield request("bad", -1)
        finished.wait(ctx.timeout)  # keep the stream open until the answers are in

    channel = grpc.insecure_channel(f"127.0.0.1:{ctx.server.grpc}")
    messages, finals = [], 0
    try:
        for message in service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(
                requests(), timeout=ctx.timeout):
            response = message.infer_response
            messages.append({"error_message": message.error_message, "id": response.id,
                             "model_name": response.model_name, "model_version": response.model_version,
                             "triton_final_response": final_flag(response),
                             "outputs": [o.name for o in response.outputs]})
            finals += bool(message.error_message) or bool(final_flag(response))
            if finals == 2:
                finished.set()
    finally:
        finished.set()
        channel.close()
    by_id = {}
    for m in messages:
        m["message"] = m.pop("error_message")  # compared by key phrase (and "" where no error)
        by_id.setdefault(m.pop("id"), []).append(m)
    return by_id


@case("decoupled unary infer IN=1", "decoupled", key="decoupled")
def _(ctx):
    return arrays(ctx.infer("decoupled", [ctx.tensor("IN", int32(1), "INT32")]))


# generate (raw HTTP: runs once, as "http") ---------------------------------------------------------------
def http_post(ctx, path, body):
    """(status, content type, body text), HTTP errors included."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{ctx.server.http}{path}", data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=ctx.timeout) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode(errors="replace")


def generate_json(text):
    """A generate body or SSE event: the JSON, an error as {"error keys", "message"}, PARAMS parsed."""
    try:
        body = json.loads(text)
    except ValueError:
        return {"not JSON": text[:300]}
    if isinstance(body, dict) and "error" in body:
        return {"error keys": sorted(body), "message": str(body["error"])}
    if isinstance(body, dict) and isinstance(body.get("PARAMS"), str):
        try:
            body["PARAMS"] = json.loads(body["PARAMS"])
        except ValueError:
            pass
    return body


def generate(ctx, model, body) -> dict:
    status, content_type, text = http_post(ctx, f"/v2/models/{model}/generate", body)
    return {"status": status, "content type": content_type.split(";")[0], "body": generate_json(text)}


def generate_stream(ctx, model, body) -> dict:
    status, content_type, text = http_post(ctx, f"/v2/models/{model}/generate_stream", body)
    outcome = {"status": status, "content type": content_type.split(";")[0]}
    if not content_type.startswith("text/event-stream"):
        outcome["body"] = generate_json(text)
        return outcome
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        lines = [line for line in block.split("\n") if line.strip()]
        if not lines:
            continue
        data = "\n".join(line[5:].strip() for line in lines if line.startswith("data:"))
        event = generate_json(data) if data else {}
        other = sorted({line.split(":", 1)[0] for line in lines if not line.startswith("data:")})
        if other:
            event = {"event": event, "other SSE fields": other}
        events.append(event)
    outcome["events"] = events
    return outcome


def generate_case(name, model, body, stream=False, key=None, needs_ready=True):
    @case(f"generate{'_stream' if stream else ''} {name} {json.dumps(body)}", model, key=key,
          needs_ready=needs_ready, protocols=("http",))
    def _(ctx):
        return (generate_stream if stream else generate)(ctx, model, body)


generate_case("gen", "gen", {"TEXT": "hello", "N": 1})
generate_case("gen extra field", "gen", {"TEXT": "a", "N": 1, "top_k": 3})
generate_case("gen nested parameters", "gen", {"TEXT": "a", "N": 1, "parameters": {"temperature": 0.5}})
generate_case("gen N as a list", "gen", {"TEXT": "a", "N": [1]})
generate_case("gen missing N", "gen", {"TEXT": "a"}, key="N")
generate_case("gen", "gen", {"TEXT": "a", "N": 1, "top_k": 3}, stream=True)
generate_case("decoupled", "decoupled", {"IN": 1})
generate_case("decoupled", "decoupled", {"IN": 3})
generate_case("decoupled", "decoupled", {"IN": -1}, key="negative")
generate_case("decoupled", "decoupled", {"IN": 3}, stream=True)
generate_case("decoupled", "decoupled", {"IN": 0}, stream=True)
generate_case("decoupled", "decoupled", {"IN": -1}, stream=True, key="negative")
generate_case("decoupled", "decoupled", {"IN": -2}, stream=True, key="negative")
generate_case("unknown model", "no_such_model", {"TEXT": "a", "N": 1}, key="no_such_model", needs_ready=False)
generate_case("unknown model", "no_such_model", {"TEXT": "a", "N": 1}, stream=True, key="no_such_model",
              needs_ready=False)


# sequence ------------------------------------------------------------------------------------------------
def sequence_input(ctx, value):
    return [ctx.tensor("INPUT", int32(value).reshape(1, 1), "INT32")]


@case("sequence 4 requests, id 5, start on the first, end on the last", "sequence")
def _(ctx):
    return [arrays(ctx.infer("sequence", sequence_input(ctx, value), sequence_id=5, sequence_start=i == 0,
                             sequence_end=i == 3)) for i, value in enumerate((1, 2, 3, 4))]


@case("sequence two interleaved sequences, ids 6 and 7", "sequence")
def _(ctx):
    steps = [(6, 1, True, False), (7, 10, True, False), (6, 2, False, False), (7, 20, False, True),
             (6, 3, False, True)]
    return [[sid, arrays(ctx.infer("sequence", sequence_input(ctx, value), sequence_id=sid, sequence_start=start,
                                   sequence_end=end))["TOTAL"]["values"]] for sid, value, start, end in steps]


@case("sequence request without sequence_id", "sequence", key="correlation")
def _(ctx):
    return arrays(ctx.infer("sequence", sequence_input(ctx, 1)))


@case("sequence new id 77 without sequence_start", "sequence", key="START")
def _(ctx):
    return arrays(ctx.infer("sequence", sequence_input(ctx, 1), sequence_id=77))


@case("sequence string sequence_id 'abc' (start+end) on a UINT64 CORRID", "sequence")
def _(ctx):
    return arrays(ctx.infer("sequence", sequence_input(ctx, 1), sequence_id="abc", sequence_start=True,
                            sequence_end=True))


@case("sequence config sequence_batching block", "sequence")
def _(ctx):
    config = ctx.json("get_model_config", "sequence")
    config = config.get("config", config)
    return normalized(config.get("sequence_batching"))


# ensemble --------------------------------------------------------------------------------------------------
def ensemble_input(ctx, rows=1):
    return [ctx.tensor("INPUT0", fp32(*range(1, 4 * rows + 1)).reshape(rows, 4), "FP32")]


@case("ensemble infer [1, 4]", "ensemble")
def _(ctx):
    return arrays(ctx.infer("ensemble", ensemble_input(ctx)))


@case("ensemble infer [2, 4]", "ensemble")
def _(ctx):
    return arrays(ctx.infer("ensemble", ensemble_input(ctx, 2)))


@case("ensemble requested OUTPUT0 only", "ensemble")
def _(ctx):
    return arrays(ctx.infer("ensemble", ensemble_input(ctx), outputs=["OUTPUT0"]))


@case("ensemble requested DOUBLED only", "ensemble")
def _(ctx):
    return arrays(ctx.infer("ensemble", ensemble_input(ctx), outputs=["DOUBLED"]))


@case("ensemble wrong shape [1, 3]", "ensemble", key="shape")
def _(ctx):
    return arrays(ctx.infer("ensemble", [ctx.tensor("INPUT0", fp32(1, 2, 3).reshape(1, 3), "FP32")]))


@case("ensemble config platform/backend and steps", "ensemble")
def _(ctx):
    config = ctx.json("get_model_config", "ensemble")
    config = config.get("config", config)
    steps = (config.get("ensemble_scheduling") or {}).get("step", [])
    return {"platform": config.get("platform") or "", "backend": config.get("backend") or "",  # gRPC omits ""
            "steps": [[s.get("model_name"), ints(s.get("model_version")), s.get("input_map"), s.get("output_map")]
                      for s in steps]}


def ensemble_statistics_delta(ctx, calls) -> dict:
    """What calls() adds to the statistics of the ensemble and of its two steps."""
    models = ("ensemble", "ens_double", "ens_add_one")

    def counts():
        found = {}
        for model in models:
            stats = ctx.json("get_inference_statistics", model)
            entry = (stats.get("model_stats") or [{}])[0]
            infer = entry.get("inference_stats", {})
            found[model] = {"inference_count": ints(entry.get("inference_count", 0)),
                            "execution_count": ints(entry.get("execution_count", 0)),
                            **{key: ints(infer.get(key, {}).get("count", 0))
                               for key in ("success", "fail", "queue", "compute_infer")}}
        return found

    before = counts()
    calls()
    after = counts()
    return {model: {key: after[model][key] - before[model][key] for key in after[model]} for model in models}


@case("ensemble statistics: what 3 calls add (ensemble, ens_double, ens_add_one)", "ensemble")
def _(ctx):
    def calls():
        for _ in range(3):
            ctx.infer("ensemble", ensemble_input(ctx))

    return ensemble_statistics_delta(ctx, calls)


@case("ensemble statistics: what 1 wrong-shape call adds", "ensemble")
def _(ctx):
    def calls():
        try:
            ctx.infer("ensemble", [ctx.tensor("INPUT0", fp32(1, 2, 3).reshape(1, 3), "FP32")])
        except Exception:  # noqa: BLE001 - the failure is expected; its statistics are the outcome
            pass

    return ensemble_statistics_delta(ctx, calls)


@case("ensemble statistics: what 1 call requesting only OUTPUT0 adds", "ensemble")
def _(ctx):
    def calls():
        try:
            ctx.infer("ensemble", ensemble_input(ctx), outputs=["OUTPUT0"])
        except Exception:  # noqa: BLE001 - Triton fails it; its statistics are the outcome
            pass

    return ensemble_statistics_delta(ctx, calls)


@case("ensemble_missing repository index entry", "ensemble_missing", key="no_such_step", needs_ready=False)
def _(ctx):
    return index_entry(ctx, "ensemble_missing")


@case("ensemble_missing is_model_ready", "ensemble_missing", needs_ready=False)
def _(ctx):
    return ctx.c.is_model_ready("ensemble_missing")


@case("ensemble_missing infer", "ensemble_missing", key="ensemble_missing", needs_ready=False)
def _(ctx):
    return arrays(ctx.infer("ensemble_missing", ensemble_input(ctx)))


# every model: metadata and config now, statistics last -------------------------------------------------
def model_cases(model):
    needs_ready = model not in NOT_READY

    @case(f"metadata {model}", model, key=model, needs_ready=needs_ready)
    def _(ctx):
        meta = ctx.json("get_model_metadata", model)
        return {"platform": meta.get("platform", ""), "versions": meta.get("versions"),  # gRPC omits ""
                "inputs": tensor_specs(meta.get("inputs"), "shape"),
                "outputs": tensor_specs(meta.get("outputs"), "shape")}

    @case(f"config {model} backend/platform", model, key=model, needs_ready=needs_ready)
    def _(ctx):
        config = ctx.json("get_model_config", model)
        config = config.get("config", config)
        return {"backend": config.get("backend"), "platform": config.get("platform") or "",  # gRPC omits ""
                "max_batch_size": ints(config.get("max_batch_size", 0))}


def statistics_case(model):
    @case(f"statistics {model}", model, key=model, needs_ready=model not in NOT_READY)
    def _(ctx):
        stats = ctx.json("get_inference_statistics", model)
        entry = (stats.get("model_stats") or [{}])[0]
        infer = entry.get("inference_stats", {})
        count = lambda key: ints(infer.get(key, {}).get("count", 0))  # noqa: E731
        inferences, executions = ints(entry.get("inference_count", 0)), ints(entry.get("execution_count", 0))
        outcome = {"inference_count": inferences, "success": count("success"), "fail": count("fail")}
        if model == "batched":  # how many executions depends on timing: say only that batching happened
            outcome["execution_count < inference_count"] = executions < inferences
            outcome["note"] = f"execution_count {executions}"
        else:
            outcome["execution_count"] = executions
        return outcome


for _model in MODELS:
    model_cases(_model)
for _model in MODELS:
    statistics_case(_model)


# ---------------------------------------------------------------------------------------------------
# Running and comparing
# ---------------------------------------------------------------------------------------------------
def error_outcome(exc: BaseException) -> dict:
    status = exc.status() if hasattr(exc, "status") and callable(exc.status) else None
    message = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
    message = message or str(exc)
    if "timed out" in message.lower() or "deadline" in message.lower():
        return {"error": "TIMEOUT (no answer)", "status": str(status) if status else None}
    return {"error": type(exc).__name__, "status": str(status) if status else None, "message": message[:300]}


def run_one(fn, server, protocol, timeout) -> dict:
    try:
        ctx = Ctx(server, protocol, timeout)
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome
        return error_outcome(exc)
    try:
        outcome = {"ok": fn(ctx)}
    except Exception as exc:  # noqa: BLE001
        outcome = error_outcome(exc)
    finally:
        ctx.close()
    # messages name model.py files by path: say <repo> for the server's repository folder
    return json.loads(json.dumps(outcome, default=str).replace(str(server.repo), "<repo>"))


def run_cases(server, only, timeout, not_ready=None) -> dict:
    """(case, protocol) -> outcome. not_ready: model -> reason, for models this server did not load."""
    outcomes = {}
    for protocol in PROTOCOLS:
        for name, model, fn, _key, needs_ready, protocols in CASES:
            if (only and only not in name) or protocol not in protocols:
                continue
            if not_ready and needs_ready and model in not_ready:
                outcomes[(name, protocol)] = {"error": f"gpuserve: model not ready: {not_ready[model]}"}
            else:
                outcomes[(name, protocol)] = run_one(fn, server, protocol, timeout)
    return outcomes


def strip_loose(value):
    if isinstance(value, dict):
        return {k: strip_loose(v) for k, v in value.items() if k not in LOOSE_KEYS}
    if isinstance(value, list):
        return [strip_loose(v) for v in value]
    return value


def messages(value) -> list:
    if isinstance(value, dict):
        found = [v for k, v in value.items() if k in ("message", "reason") and isinstance(v, str)]
        return found + [m for k, v in value.items() if k not in LOOSE_KEYS for m in messages(v)]
    if isinstance(value, list):
        return [m for v in value for m in messages(v)]
    return []


def same(triton, ours, key) -> bool:
    dumps = lambda v: json.dumps(strip_loose(v), sort_keys=True, default=str)  # noqa: E731
    if ours is None or dumps(triton) != dumps(ours):
        return False
    return not key or all(key.lower() in m.lower() for m in messages(ours))


def show(value) -> str:
    return json.dumps(value, default=str, sort_keys=True, ensure_ascii=False)


def print_triton(outcomes) -> None:
    """Triton's outcomes, case by case; one line when http and grpc agree."""
    for name, *_ in CASES:
        found = {p: outcomes[(name, p)] for p in PROTOCOLS if (name, p) in outcomes}
        if not found:
            continue
        print(name)
        if len({show(v) for v in found.values()}) == 1:
            print(f"    {'+'.join(found)}: {show(next(iter(found.values())))}")
        else:
            for protocol, outcome in found.items():
                print(f"    {protocol}: {show(outcome)}")


def print_diff(triton, ours, show_all) -> int:
    keys = {name: key for name, _model, _fn, key, _ready, _protocols in CASES}
    differ = 0
    for (name, protocol), outcome in triton.items():
        equal = same(outcome, ours.get((name, protocol)), keys[name])
        differ += not equal
        if equal and not show_all:
            continue
        phrase = f"  (key phrase: {keys[name]!r})" if keys[name] else ""
        print(f"[{'  same' if equal else 'DIFFER'}] {name}  ({protocol}){phrase}")
        print(f"    triton:   {show(outcome)}")
        print(f"    gpuserve: {show(ours.get((name, protocol)))}")
    print(f"\n{len(triton)} outcomes: {differ} differ")
    return differ


def start(server: Server) -> dict | str:
    """model -> (state, reason) once the server settled, or why it did not start."""
    try:
        server.start()
        return wait_for_models(server)
    except (RuntimeError, OSError) as exc:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]


def not_ready_reasons(states: dict | str) -> dict:
    if isinstance(states, str):
        return {model: f"server did not start: {states}" for model in MODELS}
    reasons = {}
    for model in MODELS:
        state, reason = states.get(model, ("", "not in the repository index"))
        if state != "READY":
            reasons[model] = f"{state} {reason}".strip()
    return reasons


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--triton-only", action="store_true", help="run Triton only and print its outcomes")
    parser.add_argument("--only", default="", help="run only cases whose name contains this")
    parser.add_argument("--show-all", action="store_true", help="print equal outcomes too")
    parser.add_argument("--keep", default=None, help="keep the repositories and logs in this folder")
    parser.add_argument("--json", default=None, help="write every outcome to this JSON file")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds a call may take (default 15)")
    args = parser.parse_args()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="pb-conformance-"))
    for sub in ("triton-repo", "gpuserve-repo", "backends"):
        shutil.rmtree(work / sub, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    write_repository(work / "triton-repo")
    triton = triton_server(work, work / "triton-repo")
    ours = None
    if not args.triton_only:
        write_repository(work / "gpuserve-repo")
        ours = gpuserve_server(work, work / "gpuserve-repo")
    try:
        triton_states = start(triton)
        if isinstance(triton_states, str):
            print(f"Triton did not start: {triton_states} (log: {work / 'triton.log'})", file=sys.stderr)
            return 2
        missing = [m for m in READY_MODELS if triton_states.get(m, ("",))[0] != "READY"]
        if missing:
            print(f"warning: Triton did not load {missing}: {triton_states}", file=sys.stderr)
        triton_out = run_cases(triton, args.only, args.timeout)
        ours_out = {}
        if ours is not None:
            ours_out = run_cases(ours, args.only, args.timeout, not_ready_reasons(start(ours)))
    finally:
        stop(triton)
        if ours is not None:
            stop(ours)
        clean_shm()
    if args.json:
        Path(args.json).write_text(json.dumps(
            {side: {f"{k[0]} | {k[1]}": v for k, v in out.items()}
             for side, out in (("triton", triton_out), ("gpuserve", ours_out))}, indent=1, default=str))
    if args.triton_only:
        print_triton(triton_out)
        differ = 0
    else:
        differ = print_diff(triton_out, ours_out, args.show_all)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
