"""MLServer's CloudEvents headers: a runtime sees the request's in `payload.parameters.headers` and the
answer carries the response's, as MLServer 1.7.1's data plane adds them."""

from __future__ import annotations

import json
import textwrap

import httpx

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

RUNTIME = """
from mlserver import MLModel
from mlserver.codecs import StringCodec
from mlserver.types import InferenceResponse


class Echo(MLModel):
    async def load(self):
        return True

    async def predict(self, payload):
        seen = payload.parameters.headers
        text = [f"{k}={seen[k]}" for k in sorted(seen) if k.lower().startswith(("ce-", "x-"))]
        return InferenceResponse(model_name=self.name, outputs=[StringCodec.encode_output("seen", text)])
"""


def test_cloudevents_headers_on_the_request_and_the_answer(tmp_path):
    (tmp_path / "settings.json").write_text(json.dumps({"server_name": "mine"}))
    (tmp_path / "echo").mkdir()
    (tmp_path / "echo" / "echo.py").write_text(textwrap.dedent(RUNTIME))
    (tmp_path / "echo" / "model-settings.json").write_text(json.dumps({"name": "echo", "implementation": "echo.Echo"}))
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry, server_name="mine") as server:
        body = {"id": "req-1", "inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [1]}]}
        answer = httpx.post(f"http://127.0.0.1:{server.ports['http']}/v2/models/echo/infer", json=body,
                            headers={"x-mine": "yes"}, timeout=10)
    assert answer.status_code == 200, answer.text
    seen = answer.json()["outputs"][0]["data"]
    assert "Ce-Type=io.seldon.serving.inference.request" in seen and "Ce-Id=req-1" in seen
    assert "Ce-Source=io.seldon.serving.deployment.mine" in seen and "x-mine=yes" in seen
    headers = answer.headers
    assert headers["ce-type"] == "io.seldon.serving.inference.response" and headers["ce-requestid"] == "req-1"
    assert headers["ce-modelid"] == headers["ce-endpoint"] == "echo" and headers["ce-specversion"] == "0.3"
    assert headers["ce-inferenceservicename"] == "mine"
