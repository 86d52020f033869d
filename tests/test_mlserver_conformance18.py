"""What an MLServer folder of custom runtimes answers on gpuserve where it used to differ from MLServer 1.7.1
(found by benchmarks/peers/mlserver_conformance.py, session 18): the answers MLServer gives are the ones its
users' probes and scripts expect."""

from __future__ import annotations

import json

import httpx
import pytest
import tritonclient.grpc as grpcclient

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

RUNTIME = """
from mlserver import MLModel
from mlserver.codecs import StringCodec
from mlserver.types import InferenceResponse


class Echo(MLModel):
    async def predict(self, payload):
        return InferenceResponse(model_name=self.name, outputs=[StringCodec.encode_output("o", ["x"])])
"""


def _model(root, folder, **settings):
    (root / folder).mkdir(parents=True)
    (root / folder / "model-settings.json").write_text(json.dumps({"implementation": "conf18.Echo", **settings}))
    (root / folder / "conf18.py").write_text(RUNTIME)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("conf18")
    _model(root, "meta", name="meta",
           inputs=[{"name": "a", "datatype": "BYTES", "shape": [-1]},
                   {"name": "b", "datatype": "BYTES", "shape": [-1], "parameters": {"content_type": "str"}}],
           outputs=[{"name": "o", "datatype": "BYTES", "shape": [1]}])
    _model(root, "mv/v1", name="mv", parameters={"version": "v1"})
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry) as server:
        yield server


@pytest.fixture(scope="module")
def http(served):
    with httpx.Client(base_url=f"http://127.0.0.1:{served.ports['http']}", timeout=60) as client:
        yield client


def test_metadata_leaves_out_parameters_the_settings_do_not_write(http):
    """MLServer lists a declared tensor without parameters as just name, datatype and shape."""
    meta = http.get("/v2/models/meta").json()
    assert meta["inputs"] == [{"name": "a", "datatype": "BYTES", "shape": [-1]},
                              {"name": "b", "datatype": "BYTES", "shape": [-1], "parameters": {"content_type": "str"}}]
    assert meta["outputs"] == [{"name": "o", "datatype": "BYTES", "shape": [1]}]


@pytest.mark.parametrize("path", ["/v2/models/meta/ready", "/v2/models/mv/ready", "/v2/models/mv/versions/v1/ready"])
def test_model_ready_is_an_empty_200(http, path):
    """MLServer's model readiness is the status alone (no JSON body), as Triton's."""
    reply = http.get(path)
    assert (reply.status_code, reply.content) == (200, b"")


def test_unknown_model_ready_is_still_404(http):
    assert http.get("/v2/models/nope/ready").status_code == 404


def test_transport_metrics_have_mlservers_names(served, http):
    """MLServer's families: REST `rest_server_request_duration_seconds` (starlette-exporter's name) and gRPC
    `grpc_server_started_total`, counted as each call begins."""
    assert http.post("/v2/models/meta/infer", json={"inputs": [
        {"name": "a", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}).status_code == 200
    with grpcclient.InferenceServerClient(f"127.0.0.1:{served.ports['grpc']}") as client:
        assert client.is_server_live() and client.is_server_live()
    text = httpx.get(f"http://127.0.0.1:{served.ports['metrics']}/metrics").text
    assert "# TYPE rest_server_request_duration_seconds histogram" in text
    assert 'grpc_server_started_total{grpc_method="ServerLive"} 2' in text


@pytest.mark.parametrize("method, path", [("GET", "/v2/models/mv/versions/v9"),
                                          ("POST", "/v2/models/mv/versions/v9/infer")])
def test_unknown_version_of_a_served_model_is_named(http, method, path):
    """MLServer: "Model mv with version v9 not found"; the message named only the model before."""
    body = {"inputs": [{"name": "a", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}
    reply = http.request(method, path, json=body if method == "POST" else None)
    assert reply.status_code == 404
    assert reply.json() == {"error": "Request for unknown model: 'mv' version v9 is not found"}
