"""MLServer's gRPC model repository service (`inference.model_repository.ModelRepositoryService`) on the gRPC
port, on both transports, driven by the stub in `gpuserve.mlserver.grpc` (MLServer's field numbers)."""

from __future__ import annotations

import json
import textwrap
from types import SimpleNamespace

import grpc
import httpx
import pytest

from conftest import make_onnx_model, running_server
from gpuserve import ModelRepository
from gpuserve.mlserver.grpc import model_repository_pb2 as mr
from gpuserve.mlserver.grpc import model_repository_pb2_grpc as mr_grpc
from gpuserve.repository import DiskRepository
from gpuserve.server.grpc import inference_pb2 as pb
from gpuserve.server.grpc import inference_pb2_grpc as pb_grpc

TIMEOUT = 30

RUNTIME = """
from mlserver import MLModel
from mlserver.types import InferenceResponse


class Runtime(MLModel):
    async def predict(self, payload):
        return InferenceResponse(model_name=self.name, outputs=[])
"""


@pytest.fixture(params=["grpcio", "native"])
def served(tmp_path, request):
    folder = tmp_path / "hello"
    folder.mkdir()
    (folder / "model-settings.json").write_text(json.dumps({"name": "hello", "implementation": "runtime.Runtime"}))
    (folder / "runtime.py").write_text(textwrap.dedent(RUNTIME))
    (tmp_path / "bare").mkdir()
    make_onnx_model(tmp_path / "bare" / "model.onnx")
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry, grpc_transport=request.param) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
        yield SimpleNamespace(channel=channel, http=f"http://127.0.0.1:{server.ports['http']}")


def test_index_unload_and_load_through_mlservers_repository_service(served):
    repository = mr_grpc.ModelRepositoryServiceStub(served.channel)
    v2 = pb_grpc.GRPCInferenceServiceStub(served.channel)
    index = repository.RepositoryIndex(mr.RepositoryIndexRequest(), timeout=TIMEOUT)
    assert [(m.name, m.state) for m in index.models] == [("bare", "READY"), ("hello", "READY")]
    repository.RepositoryModelUnload(mr.RepositoryModelUnloadRequest(model_name="hello"), timeout=TIMEOUT)
    assert not v2.ModelReady(pb.ModelReadyRequest(name="hello"), timeout=TIMEOUT).ready
    assert [m.name for m in repository.RepositoryIndex(mr.RepositoryIndexRequest(ready=True)).models] == ["bare"]
    repository.RepositoryModelLoad(mr.RepositoryModelLoadRequest(model_name="hello"), timeout=TIMEOUT)
    assert v2.ModelReady(pb.ModelReadyRequest(name="hello"), timeout=TIMEOUT).ready
    with pytest.raises(grpc.RpcError) as missing:
        repository.RepositoryModelLoad(mr.RepositoryModelLoadRequest(model_name="nobody"), timeout=TIMEOUT)
    assert missing.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)


def test_unloading_an_unloaded_mlserver_model_is_not_found_and_a_triton_one_succeeds(served):
    # MLServer removes an unloaded model from its registry: a second unload is 404 / NOT_FOUND. Triton answers
    # success for a model that is on disk and not loaded; bare artefacts and config.pbtxt models keep that.
    repository = mr_grpc.ModelRepositoryServiceStub(served.channel)
    for _ in range(2):
        assert httpx.post(f"{served.http}/v2/repository/models/bare/unload").status_code == 200
    assert httpx.post(f"{served.http}/v2/repository/models/hello/unload").status_code == 200
    again = httpx.post(f"{served.http}/v2/repository/models/hello/unload")
    assert again.status_code == 404 and "hello" in again.json()["error"]
    with pytest.raises(grpc.RpcError) as missing:
        repository.RepositoryModelUnload(mr.RepositoryModelUnloadRequest(model_name="hello"), timeout=TIMEOUT)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    repository.RepositoryModelLoad(mr.RepositoryModelLoadRequest(model_name="hello"), timeout=TIMEOUT)
    repository.RepositoryModelUnload(mr.RepositoryModelUnloadRequest(model_name="hello"), timeout=TIMEOUT)
