"""Triton's --http-header-forward-pattern / --grpc-header-forward-pattern: matching headers reach a Python model
as string request parameters (case-insensitive unless `(?-i)`), reserved names are refused in Triton's words,
and without a pattern nothing is forwarded (qa/L0_parameters test_headers and its variants)."""

import json
import textwrap

import numpy as np
import pytest

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.errors import InvalidSettings
from gpuserve.header_forward import HeaderForward
from gpuserve.repository import DiskRepository

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL = '''
import json
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "OUTPUT0", np.array([request.parameters().encode()], dtype=np.object_))]) for request in requests]
'''
CONFIG = '''
name: "parameter"
backend: "python"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_STRING dims: [ 1 ] } ]
'''
HEADERS = {"header_1": "value_1", "my_header_1": "my_value_1", "my_header_2": "my_value_2",
           "my_header_3": 'This is a "quoted" string with a backslash\\ '}
FORWARDED = {"my_header_1": "my_value_1", "my_header_2": "my_value_2",
             "my_header_3": 'This is a "quoted" string with a backslash\\ '}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("forward")
    (root / "parameter" / "1").mkdir(parents=True)
    (root / "parameter" / "config.pbtxt").write_text(textwrap.dedent(CONFIG))
    (root / "parameter" / "1" / "model.py").write_text(textwrap.dedent(MODEL))
    return root


def _server(root, **settings):
    return running_server(repository=DiskRepository(str(root)).populate(ModelRepository()), **settings)


def _parameters(module, url, headers, parameters=None):
    client = module.InferenceServerClient(url)
    infer_input = module.InferInput("INPUT0", [1], "FP32")
    infer_input.set_data_from_numpy(np.ones(1, np.float32))
    try:
        result = client.infer("parameter", [infer_input], headers=dict(headers), parameters=parameters)
    finally:
        client.close()
    return json.loads(result.as_numpy("OUTPUT0")[0])


def _urls(server):
    return ((httpclient, f"127.0.0.1:{server.ports['http']}"), (grpcclient, f"127.0.0.1:{server.ports['grpc']}"))


def test_matching_headers_reach_the_model_as_parameters(repo):
    with _server(repo, http_header_forward_pattern="MY_HEADER.*",
                 grpc_header_forward_pattern="MY_HEADER.*") as server:
        for module, url in _urls(server):
            assert _parameters(module, url, HEADERS) == FORWARDED
            assert _parameters(module, url, HEADERS, {"key1": 1}) == {"key1": 1, **FORWARDED}


def test_case_sensitive_pattern_and_no_pattern_forward_nothing(repo):
    with _server(repo, grpc_header_forward_pattern="(?-i)MY_HEADER.*") as server:
        for module, url in _urls(server):  # gRPC names are lower case; HTTP has no pattern here
            assert _parameters(module, url, HEADERS) == {}


def test_reserved_header_names_are_refused_in_tritons_words(repo):
    with _server(repo, http_header_forward_pattern=".*", grpc_header_forward_pattern=".*") as server:
        for module, url in _urls(server):
            for name in ("timeout", "priority", "sequence_id", "binary_data_output", "triton_anything"):
                with pytest.raises(InferenceServerException,
                                   match=f"Header '{name}' is reserved for Triton usage and cannot be forwarded"):
                    _parameters(module, url, {name: "1"})
            assert _parameters(module, url, {"x-tenant": "a"})["x-tenant"] == "a"
        # the server keeps serving after each refusal
        assert _parameters(httpclient, f"127.0.0.1:{server.ports['http']}", {})["host"]


def test_a_pattern_that_is_no_regular_expression_stops_the_start():
    with pytest.raises(InvalidSettings, match="is not a regular expression"):
        HeaderForward("MY_(HEADER", "http-header-forward-pattern")
    with pytest.raises(InvalidSettings, match="grpc-header-forward-pattern"):
        with running_server(grpc_header_forward_pattern="[x"):
            pass
