"""The request a Triton Python model's execute receives is built without the constructor's argument checks
(triton_pb_utils InferenceRequest._received: the checks took half of a request's way to execute); it must
read exactly as one the constructor builds, and values the constructor refuses still go through it."""

from __future__ import annotations

import asyncio
import json
import textwrap

import numpy as np
import pytest

from gpuserve import ModelRepository
from gpuserve import triton_pb_utils as pb
from gpuserve.repository import DiskRepository
from gpuserve.types import InferInput, InferRequest, RequestedOutput

ECHO = textwrap.dedent('''
    import json
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                seen = {"model_name": request.model_name(), "outputs": sorted(request.requested_output_names()),
                        "outputs_kind": type(request.requested_output_names()).__name__,
                        "inputs": [t.name() for t in request.inputs()], "id": request.request_id(),
                        "correlation_id": request.correlation_id(), "flags": request.flags(),
                        "timeout": request.timeout(), "version": request.model_version(),
                        "parameters": json.loads(request.parameters()), "trace": request.trace().get_context()}
                request.requested_output_names().add("changed")  # a copy (a set, as Triton's): the request's stays
                text = np.array([json.dumps(seen).encode()], dtype=object)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("SEEN", text),
                                                             pb_utils.Tensor("OUT", request.inputs()[0].as_numpy())]))
            return responses
''')
CONFIG = textwrap.dedent('''
    name: "echo"
    backend: "python"
    input [ { name: "IN" data_type: TYPE_FP32 dims: [ 2 ] } ]
    output [ { name: "SEEN" data_type: TYPE_STRING dims: [ 1 ] }, { name: "OUT" data_type: TYPE_FP32 dims: [ 2 ] } ]
''')


def _serve(tmp_path, check) -> None:
    """Loads the echo model and runs `check(ask)` on one event loop (the model's scheduler lives on it)."""
    (tmp_path / "echo" / "3").mkdir(parents=True)
    (tmp_path / "echo" / "config.pbtxt").write_text(CONFIG)
    (tmp_path / "echo" / "3" / "model.py").write_text(ECHO)
    registry = DiskRepository(str(tmp_path)).populate(ModelRepository())

    async def main():
        model = registry.get_model("echo")
        if not model.ready:
            loaded = model.load()
            if asyncio.iscoroutine(loaded):
                await loaded

        async def ask(request_id=None, parameters=None, outputs=None):
            request = InferRequest("echo", [InferInput("IN", [2], "FP32", np.array([1.0, 2.0], np.float32))],
                                   request_id=request_id, parameters=parameters, request_outputs=outputs)
            return await model.predict(request)
        try:
            await check(ask)
        finally:
            stop = getattr(model, "stop", None)
            if stop is not None:
                stopped = stop()
                if asyncio.iscoroutine(stopped):
                    await stopped
    asyncio.run(main())


def _seen(response) -> dict:
    seen = {o.name: o for o in response.outputs}["SEEN"].as_numpy()[0]
    return json.loads(seen)


def test_execute_sees_what_the_client_sent(tmp_path):
    async def check(ask):
        seen = _seen(await ask("r-7", {"sequence_id": 42, "sequence_start": True, "timeout": 5000, "custom": "x",
                                       "binary_data_output": True}))
        assert seen == {"model_name": "echo", "outputs": ["OUT", "SEEN"], "outputs_kind": "set", "inputs": ["IN"],
                        "id": "r-7",
                        "correlation_id": 42, "flags": pb.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START, "timeout": 5000,
                        "version": 3, "parameters": {"custom": "x"}, "trace": None}
        seen = _seen(await ask(outputs=[RequestedOutput("SEEN")], parameters={"sequence_id": "corr-a",
                                                                              "sequence_end": True}))
        assert seen["outputs"] == ["SEEN"] and seen["id"] == "" and seen["correlation_id"] == "corr-a"
        assert seen["flags"] == pb.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END and seen["parameters"] == {}
    _serve(tmp_path, check)


def test_the_received_request_reads_as_a_constructed_one():
    tensors = [pb.Tensor("IN", np.ones(2, np.float32))]
    made = pb.InferenceRequest(model_name="m", requested_output_names=["A", "B"], inputs=tensors, request_id="r",
                               correlation_id=9, flags=1, timeout=10, model_version=2, parameters={"k": 1})
    received = pb.InferenceRequest._received("m", ["A", "B"], tensors, "r", 9, 1, 10, 2, {"k": 1})
    readers = ("model_name", "requested_output_names", "inputs", "request_id", "correlation_id", "flags", "timeout",
               "model_version", "parameters")
    for reader in readers:
        assert getattr(received, reader)() == getattr(made, reader)(), reader
    assert vars(received).keys() == vars(made).keys()
    for name in ("_sender", "_make_sender", "_trace"):
        assert getattr(received, name) is None and getattr(made, name) is None
    assert received._cancelled is made._cancelled and received._release_flags == made._release_flags


@pytest.mark.parametrize("request_id, parameters, words", [
    (None, {"sequence_id": 1.5}, "Correlation ID must be integer or string"),
    (5, None, "'request_id' must be str"),
])
def test_what_the_constructor_refuses_is_still_refused(tmp_path, request_id, parameters, words):
    async def check(ask):
        with pytest.raises(Exception, match=words):
            await ask(request_id, parameters)
        assert _seen(await ask("after"))["id"] == "after"  # the model keeps serving
    _serve(tmp_path, check)
