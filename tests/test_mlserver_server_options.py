"""MLServer's server options that shape HTTP answers and metrics: `gzip_enabled` (false: answers never
compressed), `metrics_rest_server_prefix` (the REST families' prefix) and `root_path` (accepted; MLServer
1.7.1 routes the same paths with it: `/prefix/v2/health/ready` is 404 there, `/v2/health/ready` 200). The
REST families carry MLServer's `path` label, the route template its dashboards group by."""

import gzip
import json
import logging

import httpx
import numpy as np
import pytest

from conftest import running_server
from gpuserve import Model
from gpuserve.mlserver.settings import mlserver_overrides
from gpuserve.types import InferOutput, InferResponse
from test_metrics import sample

BIG = {"inputs": [{"name": "x", "shape": [600], "datatype": "FP32", "data": [1.5] * 600}]}


class Doubler(Model):
    def load(self):
        self.ready = True

    async def predict(self, payload, headers=None):
        return InferResponse(payload.id, self.name, [InferOutput.from_numpy("out", payload.inputs[0].as_numpy() * 2)])


def test_settings_json_options_become_the_servers(tmp_path, caplog):
    (tmp_path / "settings.json").write_text(json.dumps(
        {"gzip_enabled": False, "metrics_rest_server_prefix": "myrest", "root_path": "/prefix",
         "kafka_enabled": True, "kafka_topic_input": "requests"}))
    with caplog.at_level(logging.WARNING, logger="gpuserve"):
        out = mlserver_overrides(tmp_path, {})
    assert out["compress_responses"] is False and out["metrics_rest_prefix"] == "myrest"
    assert out["kafka_enabled"] is True and out["kafka_topic_input"] == "requests"
    assert "root_path" not in out and not [r for r in caplog.records if "root_path" in r.getMessage()]
    env = {"MLSERVER_GZIP_ENABLED": "false", "MLSERVER_METRICS_REST_SERVER_PREFIX": "envrest"}
    assert mlserver_overrides(None, env) == {"compress_responses": "false", "metrics_rest_prefix": "envrest"}


@pytest.mark.parametrize("http_server", ["gpuserve", "uvicorn"])
@pytest.mark.parametrize("compress", [True, False])
def test_gzip_enabled_false_answers_uncompressed(http_server, compress):
    with running_server([Doubler("doubler")], http_server=http_server, compress_responses=compress) as server:
        base = f"http://127.0.0.1:{server.ports['http']}"
        raw = httpx.post(f"{base}/v2/models/doubler/infer", json=BIG, headers={"Accept-Encoding": "gzip"})
        assert raw.status_code == 200, raw.text
        assert raw.headers.get("content-encoding") == ("gzip" if compress else None)
        assert np.allclose(raw.json()["outputs"][0]["data"], [3.0] * 600)  # httpx inflates what came gzipped
        with httpx.stream("POST", f"{base}/v2/models/doubler/infer", json=BIG,
                          headers={"Accept-Encoding": "gzip"}) as wire:
            body = b"".join(wire.iter_raw())
        assert (body[:2] == b"\x1f\x8b") is compress  # gzip's magic on the wire, or the plain JSON
        assert json.loads(gzip.decompress(body) if compress else body)["outputs"][0]["shape"] == [600]


def test_rest_prefix_and_path_label():
    with running_server([Doubler("doubler")], metrics_rest_prefix="myrest") as server:
        base = f"http://127.0.0.1:{server.ports['http']}"
        for _ in range(2):
            assert httpx.post(f"{base}/v2/models/doubler/infer", json=BIG).status_code == 200
        assert httpx.post(f"{base}/v2/models/nope/versions/1/infer", json=BIG).status_code == 404
        assert httpx.get(f"{base}/v2/models/doubler").status_code == 200
        text = httpx.get(f"http://127.0.0.1:{server.ports['metrics']}/metrics").text
    assert "rest_server_requests" not in text
    assert sample(text, "myrest_requests_total", endpoint="infer_latest", method="POST", status_code="200",
                  path="/v2/models/{model_name}/infer") == 2
    assert sample(text, "myrest_requests_total", endpoint="infer_version", method="POST", status_code="404",
                  path="/v2/models/{model_name}/versions/{model_version}/infer") == 1
    assert sample(text, "myrest_request_duration_seconds_count", endpoint="metadata_latest", method="GET",
                  status_code="200", path="/v2/models/{model_name}") == 1
    assert sample(text, "myrest_requests_in_progress") is not None
