"""MLServer's `cors_settings`: with them the HTTP endpoint answers browsers' cross-origin requests through
Starlette's CORSMiddleware, as MLServer 1.7.1 does (its answers to these requests were compared: statuses,
`access-control-*` headers and preflight bodies alike); without them nothing changes. Both HTTP servers."""

import json

import httpx
import numpy as np
import pytest

from conftest import running_server
from gpuserve import Model
from gpuserve.mlserver.settings import mlserver_overrides
from gpuserve.types import InferOutput, InferResponse

CORS = {"allow_origins": ["https://app.example"], "allow_methods": ["GET", "POST"], "allow_headers": ["content-type"],
        "max_age": 123}
APP = "https://app.example"
BODY = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}


class Doubler(Model):
    def load(self):
        self.ready = True

    async def predict(self, payload, headers=None):
        return InferResponse(payload.id, self.name, [InferOutput.from_numpy("out", payload.inputs[0].as_numpy() * 2)])


def test_settings_json_cors_settings_become_the_servers(tmp_path):
    (tmp_path / "settings.json").write_text(json.dumps({"cors_settings": {"allow_origins": ["*"]}}))
    assert mlserver_overrides(tmp_path, {})["cors"] == {
        "allow_origins": ["*"], "allow_origin_regex": None, "allow_credentials": False, "allow_methods": ["GET"],
        "allow_headers": [], "expose_headers": [], "max_age": 600}  # MLServer's defaults for the rest
    assert "cors" not in mlserver_overrides(tmp_path / "none", {})
    env = {"MLSERVER_CORS_SETTINGS": json.dumps({"allow_origins": ["https://a"], "max_age": 5})}
    assert mlserver_overrides(None, env)["cors"]["max_age"] == 5


@pytest.mark.parametrize("http_server", ["gpuserve", "uvicorn"])
def test_cross_origin_requests_are_answered_as_mlserver_answers_them(http_server):
    with running_server([Doubler("doubler")], http_server=http_server, cors=CORS) as server:
        base = f"http://127.0.0.1:{server.ports['http']}"
        preflight = {"Origin": APP, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "content-type"}
        answer = httpx.options(f"{base}/v2/models/doubler/infer", headers=preflight)
        assert (answer.status_code, answer.text) == (200, "OK")
        assert answer.headers["access-control-allow-origin"] == APP
        assert answer.headers["access-control-allow-methods"] == "GET, POST"
        assert answer.headers["access-control-max-age"] == "123"
        refused = httpx.options(f"{base}/v2/models/doubler/infer",
                                headers={**preflight, "Origin": "https://evil.example"})
        assert (refused.status_code, refused.text) == (400, "Disallowed CORS origin")
        refused = httpx.options(f"{base}/v2/models/doubler/infer",
                                headers={**preflight, "Access-Control-Request-Method": "DELETE"})
        assert (refused.status_code, refused.text) == (400, "Disallowed CORS method")
        for _ in range(2):  # the inference path, twice (a response cache or fast path must not drop it)
            answer = httpx.post(f"{base}/v2/models/doubler/infer", json=BODY, headers={"Origin": APP})
            assert answer.status_code == 200, answer.text
            assert answer.headers["access-control-allow-origin"] == APP and "Origin" in answer.headers["vary"]
            assert np.allclose(answer.json()["outputs"][0]["data"], [2, 4])
        missing = httpx.post(f"{base}/v2/models/nope/infer", json=BODY, headers={"Origin": APP})
        assert missing.status_code == 404 and missing.headers["access-control-allow-origin"] == APP
        plain = httpx.post(f"{base}/v2/models/doubler/infer", json=BODY)  # not a browser: as before
        assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers
        other = httpx.get(f"{base}/v2/health/live", headers={"Origin": "https://evil.example"})
        assert other.status_code == 200 and "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("http_server", ["gpuserve", "uvicorn"])
def test_without_cors_settings_no_cors_headers(http_server):
    with running_server([Doubler("doubler")], http_server=http_server) as server:
        base = f"http://127.0.0.1:{server.ports['http']}"
        answer = httpx.post(f"{base}/v2/models/doubler/infer", json=BODY, headers={"Origin": APP})
        assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers
        preflight = httpx.options(f"{base}/v2/models/doubler/infer",
                                  headers={"Origin": APP, "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 405 and "access-control-allow-origin" not in preflight.headers
