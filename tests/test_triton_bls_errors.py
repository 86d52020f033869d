"""A failed BLS call as Triton 2.51 hands it to the calling Python model: `has_error()`, code INTERNAL whatever
the callee or the server said, the callee's own words when it answered, and Triton's words when the server
refused the call (unknown or not-ready model, bad input, decoupled callee without decoupled=True). A caller
that returns the error answers its client 500 / INTERNAL; one that raises it, Triton's "Failed to process"."""

import json
import textwrap

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

HEADER = "import json\nimport numpy as np\nimport triton_python_backend_utils as pb_utils\n"
NAMES = '("UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARG", "UNAVAILABLE", "UNSUPPORTED")'
CALLER = """
    NAMES = %s

    class TritonPythonModel:
        ASYNC def execute(self, requests):
            out = []
            for request in requests:
                spec = json.loads(pb_utils.get_input_tensor_by_name(request, "SPEC").as_numpy().ravel()[0])
                name, values = spec.get("input", ["X", [1]])
                call = pb_utils.InferenceRequest(model_name=spec["target"], requested_output_names=[],
                                                 inputs=[pb_utils.Tensor(name, np.array(values, np.int32))])
                if spec.get("decoupled"):
                    answers = list(AWAIT call.EXEC(decoupled=True))
                else:
                    answers = [AWAIT call.EXEC()]
                errors = [a.error() for a in answers if a.has_error()]
                if errors and spec.get("action") == "return":
                    out.append(pb_utils.InferenceResponse(error=errors[0]))
                    continue
                if errors and spec.get("action") == "raise":
                    raise pb_utils.TritonModelException(errors[0].message())
                report = [[a.has_error(), NAMES[a.error().code()] if a.has_error() else None,
                           a.error().message() if a.has_error() else None] for a in answers]
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("REPORT", np.array([json.dumps(report)], object))]))
            return out
    """ % NAMES
CALLEES = {
    "c_ok": """
        class TritonPythonModel:
            def execute(self, requests):
                return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X")
                                                                    .as_numpy() + 1)]) for r in requests]
        """,
    "c_raise": """
        class TritonPythonModel:
            def execute(self, requests):
                raise pb_utils.TritonModelException("callee raised")
        """,
    "c_error": """
        NAMES = %s

        class TritonPythonModel:
            def execute(self, requests):
                codes = [int(pb_utils.get_input_tensor_by_name(r, "X").as_numpy().ravel()[0]) for r in requests]
                return [pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    "callee error", getattr(pb_utils.TritonError, NAMES[c]))) for c in codes]
        """ % NAMES,
    "c_broken": """
        class TritonPythonModel:
            def initialize(self, args):
                raise RuntimeError("cannot start")

            def execute(self, requests):
                return []
        """,
    "c_dec": """
        class TritonPythonModel:
            def execute(self, requests):
                for request in requests:
                    sender = request.get_response_sender()
                    sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                        "negative", pb_utils.TritonError.INVALID_ARG)), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                return None
        """,
}
XY = 'input [ { name: "X" data_type: TYPE_INT32 dims: [ 1 ] } ]\noutput [ { name: "Y" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
CALLER_CONFIG = ('input [ { name: "SPEC" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
                 'output [ { name: "REPORT" data_type: TYPE_STRING dims: [ 1 ] } ]\n')
NOT_READY = "Model {0} - Error when running inference: Failed for execute the inference request. Model '{0}' is not ready."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    models = {"caller": (CALLER.replace("ASYNC ", "").replace("AWAIT ", "").replace("EXEC", "exec"), CALLER_CONFIG),
              "acaller": (CALLER.replace("ASYNC", "async").replace("AWAIT", "await").replace("EXEC", "async_exec"),
                          CALLER_CONFIG),
              **{name: (code, XY) for name, code in CALLEES.items()}}
    for name, (code, config) in models.items():
        (root / name / "1").mkdir(parents=True)
        if name == "c_dec":
            config = "model_transaction_policy { decoupled: true }\n" + config
        (root / name / "config.pbtxt").write_text('backend: "python"\nmax_batch_size: 0\n' + config)
        (root / name / "1" / "model.py").write_text(HEADER + textwrap.dedent(code))
    with running_server(repository=DiskRepository(root).populate(ModelRepository())) as running:
        yield running


def _call(server, spec, module=httpclient, caller="caller"):
    port = server.ports["http" if module is httpclient else "grpc"]
    with module.InferenceServerClient(f"127.0.0.1:{port}") as client:
        tensor = module.InferInput("SPEC", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([json.dumps(spec).encode()], dtype=object))
        return json.loads(client.infer(caller, [tensor]).as_numpy("REPORT")[0])


@pytest.mark.parametrize("spec, message", [
    *[({"target": "c_error", "input": ["X", [code]]}, "callee error") for code in (0, 2, 3, 4, 5)],
    ({"target": "c_raise"}, "Failed to process the request(s) for model 'c_raise_0', message: "
                            "TritonModelException: callee raised"),
    ({"target": "nowhere"}, NOT_READY.format("nowhere")),
    ({"target": "c_broken"}, NOT_READY.format("c_broken")),
    ({"target": "c_ok", "input": ["X", [1, 2, 3]]},
     "Model c_ok - Error when running inference: [request id: <id_unknown>] unexpected shape for input 'X' for "
     "model 'c_ok'"),  # Triton 2.51's core writes the request's id first (gpuserve/triton_refusals.py)
    ({"target": "c_ok", "input": ["Z", [1]]},
     "Model c_ok - Error when running inference: unexpected inference input 'Z' for model 'c_ok'"),
    ({"target": "c_dec"}, "Model c_dec - Error when running inference: Model c_dec is using the decoupled. The current "
                          "BLS request call doesn't support models using the decoupled transaction policy."),
    ({"target": "c_dec", "decoupled": True}, "negative"),  # sent with INVALID_ARG
    ({"target": "nowhere", "decoupled": True}, NOT_READY.format("nowhere")),
])
def test_the_caller_sees_internal_whatever_the_callee_or_the_server_said(server, spec, message):
    for caller in ("caller", "acaller"):  # exec() and await async_exec()
        [(has_error, code, said)] = _call(server, spec, caller=caller)
        assert (has_error, code) == (True, "INTERNAL")
        assert said.startswith(message)


@pytest.mark.parametrize("module, status", [(httpclient, "500"), (grpcclient, "StatusCode.INTERNAL")])
def test_a_caller_passing_the_error_on_answers_internal(server, module, status):
    for spec, message in (({"target": "c_error", "input": ["X", [3]]}, "callee error"),  # INVALID_ARG in the callee
                          ({"target": "nowhere"}, NOT_READY.format("nowhere")),
                          ({"target": "c_dec", "decoupled": True}, "negative")):
        with pytest.raises(InferenceServerException) as caught:
            _call(server, dict(spec, action="return"), module)
        assert (caught.value.status(), caught.value.message()) == (status, message)
        with pytest.raises(InferenceServerException) as caught:
            _call(server, dict(spec, action="raise"), module)
        assert caught.value.status() == status
        assert caught.value.message().startswith(
            f"Failed to process the request(s) for model 'caller_0', message: TritonModelException: {message}")
