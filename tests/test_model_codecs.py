"""Content types end to end: request-level, input-level and model-metadata defaults, over REST."""

import json
import textwrap

import pytest

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository


@pytest.fixture
def repo(tmp_path):
    folder = tmp_path / "greeter"
    folder.mkdir()
    (folder / "model-settings.json").write_text(json.dumps({
        "name": "greeter", "implementation": "greeter_impl.Greeter",
        "inputs": [{"name": "names", "datatype": "BYTES", "shape": [-1, 1], "parameters": {"content_type": "str"}},
                   {"name": "times", "datatype": "INT32", "shape": [-1]}],
    }))
    (folder / "greeter_impl.py").write_text(textwrap.dedent("""
        from gpuserve import Model

        class Greeter(Model):
            def load(self):
                self.ready = True

            def predict(self, payload, headers=None):
                names = self.decode(payload.get_input_by_name("names"))   # metadata default: str
                times = self.decode(payload.get_input_by_name("times"))   # no default: numpy
                greetings = [f"hello {n}" * int(t) for n, t in zip(names, times)]
                return self.encode_response(greetings, default_codec="str")
        """))
    return DiskRepository(tmp_path).populate(ModelRepository())


def test_metadata_default_and_request_codecs(repo, http):
    with running_server(repository=repo) as server:
        client = http(server)
        body = {"inputs": [{"name": "names", "datatype": "BYTES", "shape": [2, 1], "data": ["ada", "bob"]},
                           {"name": "times", "datatype": "INT32", "shape": [2], "data": [1, 2]}]}
        out = client.post("/v2/models/greeter/infer", json=body).json()
        assert out["outputs"][0]["data"] == ["hello ada", "hello bobhello bob"]
        assert out["outputs"][0]["parameters"]["content_type"] == "str"
        # the input's own content type wins over the metadata default: base64 of "zoe"
        body["inputs"][0] = {"name": "names", "datatype": "BYTES", "shape": [1, 1], "data": ["em9l"],
                             "parameters": {"content_type": "base64"}}
        body["inputs"][1] = {"name": "times", "datatype": "INT32", "shape": [1], "data": [1]}
        out = client.post("/v2/models/greeter/infer", json=body).json()
        assert out["outputs"][0]["data"] == ["hello b'zoe'"]
        bad = dict(body)
        bad["inputs"] = [{**body["inputs"][0], "data": ["***"]}, body["inputs"][1]]
        reply = client.post("/v2/models/greeter/infer", json=bad)  # not base64: its raw bytes, as MLServer
        assert reply.status_code == 200 and reply.json()["outputs"][0]["data"] == ["hello b'***'"]
