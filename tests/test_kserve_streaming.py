"""A `predict` that returns an async iterator (KServe's `AsyncIterator[Any]`): REST V1 and V2 answer with a
chunked stream of the items, as KServe's StreamingResponse (no content type); gRPC ModelInfer, which is
unary, answers INTERNAL at once and names the reason instead of leaving the call open."""

import asyncio

import grpc
import numpy as np
import pytest

from conftest import running_server
from gpuserve import Model
from gpuserve.errors import InvalidInput

V2_BODY = {"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1.0]}]}


class Streamer(Model):
    def load(self):
        self.ready = True

    async def predict(self, payload, headers=None, response_headers=None):
        response_headers["x-streamed"] = "yes"

        async def items():
            yield "text "
            yield b"bytes "
            yield {"n": 1}

        return items()


class FailsAtOnce(Model):
    def load(self):
        self.ready = True

    async def predict(self, payload, headers=None):
        async def items():
            raise InvalidInput("nothing to stream")
            yield "never"

        return items()


@pytest.mark.parametrize("http_server", ["gpuserve", "uvicorn"])
def test_rest_streams_an_async_iterator(http, http_server):
    with running_server([Streamer("streamer"), FailsAtOnce("fails")], http_server=http_server) as server:
        client = http(server)
        for path, body in (("/v1/models/streamer:predict", {"instances": [1]}), ("/v2/models/streamer/infer", V2_BODY)):
            with client.stream("POST", path, json=body) as reply:
                chunks = [c for c in reply.iter_raw() if c]
            assert reply.status_code == 200 and b"".join(chunks) == b'text bytes {"n":1}', path
            assert reply.headers.get("transfer-encoding") == "chunked" and "content-type" not in reply.headers
            assert reply.headers["x-streamed"] == "yes"
        failed = client.post("/v1/models/fails:predict", json={"instances": [1]})
        assert failed.status_code == 400 and failed.json() == {"error": "nothing to stream"}
        # the connection is still good for the next request
        assert client.post("/v2/models/streamer/infer", json=V2_BODY).text == 'text bytes {"n":1}'


def test_grpc_unary_refuses_a_stream_at_once():
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    with running_server([Streamer("streamer")]) as server:
        with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
            tensor = grpcclient.InferInput("a", [1], "FP32")
            tensor.set_data_from_numpy(np.array([1.0], dtype=np.float32))
            with pytest.raises(InferenceServerException) as caught:
                client.infer("streamer", [tensor], client_timeout=20)
    assert caught.value.status() == "StatusCode.INTERNAL"
    assert "async iterator" in caught.value.message() and "unary" in caught.value.message()


def test_native_grpc_answers_internal_when_the_answer_cannot_be_encoded():
    from gpuserve.server.grpc import inference_pb2 as pb
    from gpuserve.server.grpc.native import Call, Context, _Method

    class Unencodable:
        def SerializeToString(self):
            raise ValueError("bad tensor")

    async def handler(request, context):
        return Unencodable()

    call = Call.__new__(Call)
    call.method = _Method("ModelInfer", handler, pb.ModelInferRequest, False)
    call.context = Context(())
    events = []
    call.send = lambda message: events.append(("sent", message))
    call.finish = lambda code, details: events.append((code, details))
    asyncio.run(call._run_unary(pb.ModelInferRequest(model_name="m").SerializeToString()))
    assert len(events) == 1 and events[0][0] == grpc.StatusCode.INTERNAL and "bad tensor" in events[0][1]
