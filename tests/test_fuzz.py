"""Mutated requests against a running server (REST and gRPC), seeded so a failure can be replayed: a client's
bytes, however broken, get a clear refusal (REST: 4xx or 503 with a JSON `error`; gRPC: a status other than
UNKNOWN, and INTERNAL only where Triton answers so), never a crash or a hang, and a good request still gets
its answer after them."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from gpuserve.model_repository import ModelRepository
from gpuserve.repository import DiskRepository

grpc = pytest.importorskip("grpc")
pb = pytest.importorskip("tritonclient.grpc.service_pb2")

GOOD = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": [0.5] * 8}]}
PATHS = ["/v2/models/simple/infer", "/v2/models/simple/versions/1/infer", "/v2/models/nope/infer",
         "/v1/models/simple:predict", "/v2/models/simple/generate", "/v2/repository/models/simple/load",
         "/v2/systemsharedmemory/region/r/register", "/v2/cudasharedmemory/region/r/register",
         "/v2/models/simple/trace/setting", "/v2/logging", "/v2/models/%ff/infer",
         "/v2/models/simple/versions/-1/infer"]
VALUES = [None, True, False, 0, -1, 1, 2 ** 63, -2 ** 63, 1e308, "", "x", "FP32", "BYTES", "BF16", [], {}, [1],
          [[1]], [-1], [0], [2, 4], [1, 2 ** 40], {"a": 1}, {"binary_data_size": 8}, "\u00ff"]
KEYS = ["parameters", "outputs", "id", "binary_data", "shared_memory_region", "binary_data_size",
        "shared_memory_byte_size", "classification", "sequence_id", "priority", "timeout"]


def _mutate(rnd: random.Random, value):
    """`value` with one random change somewhere inside (a key dropped, replaced, added; a list cut or grown)."""
    if isinstance(value, dict):
        value, keys, op = dict(value), list(value), rnd.random()
        if keys and op < 0.35:
            key = rnd.choice(keys)
            value[key] = _mutate(rnd, value[key])
        elif keys and op < 0.5:
            del value[rnd.choice(keys)]
        elif keys and op < 0.65:
            value[rnd.choice(keys)] = rnd.choice(VALUES)
        else:
            value[rnd.choice(KEYS)] = rnd.choice(VALUES)
        return value
    if isinstance(value, list):
        value, op = list(value), rnd.random()
        if value and op < 0.4:
            index = rnd.randrange(len(value))
            value[index] = _mutate(rnd, value[index])
        elif value and op < 0.55:
            del value[rnd.randrange(len(value))]
        elif op < 0.7:
            value.append(rnd.choice(value) if value else rnd.choice(VALUES))
        elif op < 0.8:
            return rnd.choice(VALUES)
        else:
            value = value * rnd.randint(0, 3)
        return value
    return rnd.choice(VALUES) if rnd.random() < 0.6 else value


def _rest_request(rnd: random.Random):
    kind, headers = rnd.random(), {"Content-Type": rnd.choice(["application/json", "application/octet-stream"])}
    if kind < 0.6:
        body = json.dumps(_mutate(rnd, GOOD)).encode()
    elif kind < 0.75:  # the binary extension, its header length right or wrong
        head = json.dumps(_mutate(rnd, {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                                                    "parameters": {"binary_data_size": 32}}]})).encode()
        body = head + bytes(rnd.randrange(256) for _ in range(rnd.choice([0, 8, 32, 33])))
        headers["Inference-Header-Content-Length"] = str(rnd.choice([len(head), len(head) + 1, 0, -1, 10 ** 12, "x"]))
    elif kind < 0.9:  # valid JSON with bytes flipped
        body = bytearray(json.dumps(GOOD).encode())
        for _ in range(rnd.randint(1, 5)):
            body[rnd.randrange(len(body))] = rnd.randrange(256)
        body = bytes(body)
    else:
        body = bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 200)))
    if rnd.random() < 0.1:
        headers["Content-Encoding"] = rnd.choice(["gzip", "deflate", "x"])
    return rnd.choice(PATHS), body, headers


@pytest.fixture(scope="module")
def server(simple_onnx_repo):
    from conftest import running_server

    repository = DiskRepository(str(simple_onnx_repo[0])).populate(ModelRepository())
    with running_server(repository=repository) as running:
        yield running


def _tracebacks(caplog) -> list:
    """Log records that carry a traceback: none may come from a client's bytes."""
    return [record for record in caplog.records if record.exc_info]


def _unclear(response) -> bool:
    """A REST refusal that is not a 4xx or 503 with a JSON `error`."""
    if response.status_code < 400:
        return False
    try:
        said = "error" in response.json()
    except ValueError:
        said = False
    return not said or response.status_code >= 500 and response.status_code != 503


def _infer_message(rows: int, request_id: str = "") -> "pb.ModelInferRequest":
    """A good ModelInferRequest for `simple`: `rows` rows of ones, raw."""
    request = pb.ModelInferRequest(model_name="simple", id=request_id)
    given = request.inputs.add()
    given.name, given.datatype = "input", "FP32"
    given.shape.extend([rows, 4])
    request.raw_input_contents.append(np.ones((rows, 4), np.float32).tobytes())
    return request


def _answers_a_good_request(http_client, channel):
    response = http_client.post("/v2/models/simple/infer", json=GOOD)
    assert response.status_code == 200, response.text
    request = _infer_message(2)
    reply = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(request.SerializeToString(), timeout=10)
    assert pb.ModelInferResponse.FromString(reply).raw_output_contents


@pytest.mark.parametrize("seed", [1, 2])
def test_mutated_rest_requests_are_refused_clearly(server, http, seed, caplog):
    rnd, client, wrong = random.Random(seed), http(server), []
    for _ in range(400):
        path, body, headers = _rest_request(rnd)
        response = client.post(path, content=body, headers=headers)
        if _unclear(response):
            wrong.append((path, body[:200], headers, response.status_code, response.text[:200]))
    assert wrong == []
    assert not _tracebacks(caplog), "a client's bytes logged a traceback"
    with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
        _answers_a_good_request(client, channel)


def _grpc_request(rnd: random.Random) -> bytes:
    request = _infer_message(2, "a")
    request.model_name = rnd.choice(["simple", "nope"])
    if rnd.random() < 0.5:  # the same values as contents instead
        del request.raw_input_contents[:]
        request.inputs[0].contents.fp32_contents.extend([1.0] * 8)
    for _ in range(rnd.randint(1, 3)):
        op = rnd.random()
        target = request.inputs[0] if request.inputs else None
        if op < 0.15 and target is not None:
            target.datatype = rnd.choice(["", "BYTES", "BF16", "FP16", "INT8", "BOOL", "X"])
        elif op < 0.3 and target is not None:
            del target.shape[:]
            target.shape.extend(rnd.choice([[], [0], [-1, 4], [2 ** 40, 4], [2, 4, 1], [8]]))
        elif op < 0.4:
            request.raw_input_contents.append(bytes(rnd.randrange(256) for _ in range(rnd.choice([0, 3, 32]))))
        elif op < 0.5 and target is not None:
            target.contents.int_contents.extend([1, 2])
        elif op < 0.6:
            other = request.inputs.add()
            other.name, other.datatype = rnd.choice(["input", "other", ""]), "FP32"
            other.shape.extend([2, 4])
        elif op < 0.7:
            request.parameters[rnd.choice(["priority", "timeout", "sequence_id", "binary_data_output"])].int64_param = \
                rnd.choice([0, -1, 2 ** 62, 5])
        elif op < 0.8 and target is not None:
            target.parameters[rnd.choice(["shared_memory_region", "shared_memory_byte_size", "x"])].string_param = \
                rnd.choice(["", "r", "x" * 300])
        elif op < 0.9:
            out = request.outputs.add()
            out.name = rnd.choice(["output", "x", ""])
            out.parameters["classification"].int64_param = rnd.choice([0, -1, 3, 2 ** 40])
        else:
            del request.inputs[:]
    raw = request.SerializeToString()
    if rnd.random() < 0.3:  # bytes flipped: often no longer a message at all
        raw = bytearray(raw)
        for _ in range(rnd.randint(1, 4)):
            raw[rnd.randrange(len(raw))] = rnd.randrange(256)
        raw = bytes(raw)
    return raw


@pytest.mark.parametrize("seed", [1, 2])
def test_mutated_grpc_requests_are_refused_clearly(server, http, seed, caplog):
    rnd, wrong = random.Random(seed), []
    with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for _ in range(400):
            raw = _grpc_request(rnd)
            try:
                infer(raw, timeout=10)
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details() or ""
                # INTERNAL is Triton's answer to a message that does not parse; anything else must say more
                if code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE) or \
                        code == grpc.StatusCode.INTERNAL and "cannot parse" not in details or \
                        code == grpc.StatusCode.DEADLINE_EXCEEDED and "timed out in the queue" not in details:
                    wrong.append((raw[:200], code, details[:200]))
        assert wrong == []
        _answers_a_good_request(http(server), channel)
    assert not _tracebacks(caplog), "a client's bytes logged a traceback"


def test_a_region_that_cannot_be_opened_is_refused_in_tritons_words_without_a_traceback(server, http, caplog):
    """Triton answers an unopenable key 500 / INTERNAL; it is the client's key, so one log line says it."""
    response = http(server).post("/v2/systemsharedmemory/region/r/register",
                                 json={"key": "/gpuserve-fuzz-no-such-region", "offset": 0, "byte_size": 8})
    assert response.status_code == 500 and response.json()["error"].startswith("Unable to open shared memory region")
    assert [r.levelname for r in caplog.records if "Unable to open" in r.getMessage()] == ["ERROR"]
    assert not _tracebacks(caplog)


def test_a_stream_message_that_does_not_parse_ends_the_stream_in_words(server, caplog):
    """The requests before it are answered; the stream then ends INTERNAL "cannot parse the request message",
    as a unary call that does not parse, and the server logs one line for it, not a traceback. (Triton 2.51
    ends such a stream with OK and drops the messages after it unanswered; a client is told here.)"""
    good = _infer_message(1, "first")
    broken = b"\x0a\xff\xff\xff\xff\xff"  # a length that runs past the message
    with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        answers = []
        with pytest.raises(grpc.RpcError) as failed:
            for raw in stream(iter([good.SerializeToString(), broken]), timeout=20):
                answers.append(pb.ModelStreamInferResponse.FromString(raw))
    assert [a.infer_response.id for a in answers] == ["first"] and not answers[0].error_message
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    assert failed.value.details().startswith("cannot parse the request message")
    assert not _tracebacks(caplog), "a client's bytes logged a traceback"


# -- MLServer runtimes: codecs and adaptive batching meet mutated content types, datatypes and shapes ----------

_CODEC_RUNTIME = """
import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, PandasCodec, StringCodec
from mlserver.types import InferenceResponse


class Echo(MLModel):
    async def predict(self, payload):
        frame = self.decode_request(payload, default_codec=PandasCodec)
        arrays = [self.decode(i, default_codec=NumpyCodec) for i in payload.inputs]
        return InferenceResponse(model_name=self.name, outputs=[
            NumpyCodec.encode_output("rows", np.array([len(frame)])),
            StringCodec.encode_output("kinds", [type(a).__name__ for a in arrays])])
"""
_ARGS_RUNTIME = """
from datetime import datetime
from typing import List, Optional
import numpy as np
from mlserver import MLModel
from mlserver.codecs import decode_args


class Args(MLModel):
    @decode_args
    async def predict(self, questions: List[str], x: Optional[np.ndarray] = None,
                      when: Optional[List[datetime]] = None) -> np.ndarray:
        return np.array([len(q) for q in questions])
"""
CONTENT_TYPES = ["np", "pd", "str", "base64", "datetime", "dict", "bogus", "", None, 5]
DATATYPES = ["BYTES", "FP32", "INT64", "BOOL", "FP16", "UINT8", "x"]
DATA = [["x", "y"], [1, 2], [1.5, None], [True, False], ["2024-01-01T00:00:00", "nope"], ["aGVsbG8=", "!!"],
        [[1, 2], [3]], [], [{"a": 1}], "abc", 5, None, [["a"], ["b"]]]
SHAPES = [[2], [2, 1], [1, 2], [], [0], [-1], [1]]


@pytest.fixture(scope="module")
def mlserver_server(tmp_path_factory):
    from conftest import running_server

    root = tmp_path_factory.mktemp("mlserver-fuzz")
    for name, implementation, source, extra in (("codecm", "codec_runtime.Echo", _CODEC_RUNTIME, {}),
                                                ("argsm", "args_runtime.Args", _ARGS_RUNTIME,
                                                 {"max_batch_size": 4, "max_batch_time": 0.002})):
        (root / name).mkdir()
        (root / name / f"{implementation.split('.')[0]}.py").write_text(source)
        (root / name / "model-settings.json").write_text(json.dumps({"name": name, "implementation": implementation,
                                                                      **extra}))
    repository = DiskRepository(str(root)).populate(ModelRepository())
    with running_server(repository=repository) as running:
        yield running


def _mlserver_tensor(rnd: random.Random) -> dict:
    tensor = {"name": rnd.choice(["a", "questions", "x", "when"]), "datatype": rnd.choice(DATATYPES),
              "shape": rnd.choice(SHAPES), "data": rnd.choice(DATA)}
    if rnd.random() < 0.7:
        tensor["parameters"] = {"content_type": rnd.choice(CONTENT_TYPES)}
    return tensor


def test_mlserver_runtimes_refuse_mutated_requests_clearly(mlserver_server, http, caplog):
    rnd, client, wrong = random.Random(3), http(mlserver_server), []
    for _ in range(400):
        body = {"inputs": [_mlserver_tensor(rnd) for _ in range(rnd.randint(0, 3))]}
        if rnd.random() < 0.4:
            body["parameters"] = {"content_type": rnd.choice(CONTENT_TYPES)}
        response = client.post(f"/v2/models/{rnd.choice(['codecm', 'argsm'])}/infer", json=body)
        if response.status_code != 200 and (response.status_code < 400 or _unclear(response)):
            wrong.append((body, response.status_code, response.text[:200]))
    assert wrong == []
    assert not _tracebacks(caplog), "a client's bytes logged a traceback"


@pytest.mark.parametrize("model, tensor, words", [
    ("codecm", {"name": "x", "datatype": "BYTES", "shape": [1], "data": 5}, "BYTES elements must be bytes or str"),
    ("argsm", {"name": "questions", "datatype": "BYTES", "shape": [], "data": "abc"}, "needs a batch dimension"),
])
def test_what_fuzzing_found_in_mlserver_runtimes_is_a_400(mlserver_server, http, model, tensor, words):
    """A BYTES input given one bare number (was a TypeError, 500) and a scalar input to an adaptive-batching
    model (was an IndexError, 500)."""
    response = http(mlserver_server).post(f"/v2/models/{model}/infer", json={"inputs": [tensor]})
    assert response.status_code == 400 and words in response.json()["error"]


@pytest.mark.parametrize("value", [1.5, [1], {}, None, True, -1, 2 ** 64])
def test_a_sequence_id_triton_cannot_parse_is_a_400_for_any_triton_model(server, http, value):
    """Triton's frontends parse `sequence_id` for every request (an unsigned 64-bit integer or a string) and refuse
    others "Unable to parse 'sequence_id'" (a 500 there); a model without sequence batching answered 500 in
    pb_utils' words (a Python model, an ensemble) or ran the request (true, -1)."""
    body = {"parameters": {"sequence_id": value}, "inputs": GOOD["inputs"]}
    response = http(server).post("/v2/models/simple/infer", json=body)
    assert response.status_code == 400 and "'sequence_id' must be an unsigned 64-bit integer or a string" in \
        response.json()["error"]
    assert http(server).post("/v2/models/simple/infer", json={"parameters": {"sequence_id": "any"}, **GOOD}
                             ).status_code == 200
