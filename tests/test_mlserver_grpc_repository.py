"""MLServer's gRPC model repository service (`inference.model_repository.ModelRepositoryService`) on the gRPC
port, on both transports, driven by the stub in `gpuserve.mlserver.grpc` (MLServer's field numbers)."""

from __future__ import annotations

import json
import textwrap

import grpc
import pytest

from conftest import running_server
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
def channel(tmp_path, request):
    folder = tmp_path / "hello"
    folder.mkdir()
    (folder / "model-settings.json").write_text(json.dumps({"name": "hello", "implementation": "runtime.Runtime"}))
    (folder / "runtime.py").write_text(textwrap.dedent(RUNTIME))
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry, grpc_transport=request.param) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
        yield channel


def test_index_unload_and_load_through_mlservers_repository_service(channel):
    repository = mr_grpc.ModelRepositoryServiceStub(channel)
    v2 = pb_grpc.GRPCInferenceServiceStub(channel)
    index = repository.RepositoryIndex(mr.RepositoryIndexRequest(), timeout=TIMEOUT)
    assert [(m.name, m.state) for m in index.models] == [("hello", "READY")]
    repository.RepositoryModelUnload(mr.RepositoryModelUnloadRequest(model_name="hello"), timeout=TIMEOUT)
    assert not v2.ModelReady(pb.ModelReadyRequest(name="hello"), timeout=TIMEOUT).ready
    assert not repository.RepositoryIndex(mr.RepositoryIndexRequest(ready=True), timeout=TIMEOUT).models
    repository.RepositoryModelLoad(mr.RepositoryModelLoadRequest(model_name="hello"), timeout=TIMEOUT)
    assert v2.ModelReady(pb.ModelReadyRequest(name="hello"), timeout=TIMEOUT).ready
    with pytest.raises(grpc.RpcError) as missing:
        repository.RepositoryModelLoad(mr.RepositoryModelLoadRequest(model_name="nobody"), timeout=TIMEOUT)
    assert missing.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
