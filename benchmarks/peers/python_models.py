"""A repository of Triton Python-backend models (config.pbtxt with `backend: "python"` + 1/model.py).

`write_repository(root)` writes them; python_backend_conformance.py serves them with real Triton and with
gpuserve and compares what tritonclient gets back. Standard library only, so gpuserve's tests can import
it too. Each model exercises one part of the `triton_python_backend_utils` contract:

- add_sub       the classic example: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 (FP32 [4])
- batched       dynamic batching: OUTPUT0 = 2 * INPUT0, BATCH = len(requests) of the execute call
- errors        INPUT0 (INT32 [1]) picks an error path: TritonError codes, raised exceptions, bad returns
- strings       BYTES in, BYTES + INT64 out (upper-cased text and its lengths)
- params        echoes request.parameters(), request.request_id(), request.requested_output_names()
- bls           calls add_sub through pb_utils.InferenceRequest(...).exec()
- bls_missing   the same call to a model that does not exist; returns what exec() gave back
- autocomplete  config.pbtxt names only the backend; auto_complete_config fills in the rest
- init_args     returns the `args` dict initialize() received
- broken        initialize() raises, so the model never becomes ready
- decoupled     model_transaction_policy { decoupled: true }: a thread per request sends IN responses OUT=i
                through the response sender, then a final flag alone; IN=-1 sends one error with the flag,
                IN=-2 one response OUT=0 and then that error
- gen           for the generate extension: TEXT (BYTES [1]) and N (INT32 [1]) -> upper-cased TEXT_OUT,
                N_OUT = N + 1 and PARAMS (request.parameters() as JSON)
- sequence      sequence_batching with START (int32_false_true) and CORRID (UINT64) control inputs: TOTAL is
                the running sum of INPUT per correlation ID; START_SEEN and CORRID_SEEN echo the controls
- ens_double, ens_add_one   two steps (x -> 2x, x -> x + 1) of
- ensemble      platform "ensemble": INPUT0 -> ens_double -> DOUBLED -> ens_add_one -> OUTPUT0
- ensemble_missing  an ensemble whose second step names a model that does not exist: never ready

A model whose code is None (an ensemble) gets an empty version folder 1/.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

# error paths of the `errors` model, by INPUT0 value (the conformance script names its cases after them)
ERROR_PATHS = {
    0: "normal output",
    1: "TritonError('bad value')",
    2: "TritonError('missing', NOT_FOUND)",
    3: "TritonError(INVALID_ARG)",
    4: "TritonError(UNAVAILABLE)",
    5: "TritonError(UNSUPPORTED)",
    6: "raise TritonModelException('raised')",
    7: "raise ValueError('plain')",
    8: "return a list of the wrong length",
    9: "return [None]",
}

_HEADER = """\
import json

import numpy as np
import triton_python_backend_utils as pb_utils


def _input(request, name):
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()


def _bytes(name, values):
    return pb_utils.Tensor(name, np.array([str(v).encode() for v in values], dtype=np.object_))
"""

_STEP_CONFIG = """
        name: "{name}"
        backend: "python"
        max_batch_size: 8
        input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        """

_STEP_CODE = """
        class TritonPythonModel:
            def execute(self, requests):
                responses = []
                for request in requests:
                    x = _input(request, "INPUT0")
                    responses.append(pb_utils.InferenceResponse(output_tensors=[
                        pb_utils.Tensor("OUTPUT0", ({expression}).astype(np.float32))]))
                return responses
        """

_ENSEMBLE_CONFIG = """
        name: "{name}"
        platform: "ensemble"
        max_batch_size: 8
        input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        output [ {{ name: "DOUBLED" data_type: TYPE_FP32 dims: [ 4 ] }},
                 {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        ensemble_scheduling {{
          step [
            {{ model_name: "ens_double" model_version: -1
              input_map {{ key: "INPUT0" value: "INPUT0" }} output_map {{ key: "OUTPUT0" value: "DOUBLED" }} }},
            {{ model_name: "{second}" model_version: -1
              input_map {{ key: "INPUT0" value: "DOUBLED" }} output_map {{ key: "OUTPUT0" value: "OUTPUT0" }} }}
          ]
        }}
        """

MODELS = {
    "add_sub": ("""
        name: "add_sub"
        backend: "python"
        max_batch_size: 0
        input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
                { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
                 { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
        """, """
        class TritonPythonModel:
            def execute(self, requests):
                responses = []
                for request in requests:
                    a, b = _input(request, "INPUT0"), _input(request, "INPUT1")
                    responses.append(pb_utils.InferenceResponse(output_tensors=[
                        pb_utils.Tensor("OUTPUT0", (a + b).astype(np.float32)),
                        pb_utils.Tensor("OUTPUT1", (a - b).astype(np.float32))]))
                return responses
        """),
    "batched": ("""
        name: "batched"
        backend: "python"
        max_batch_size: 8
        input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
        output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] },
                 { name: "BATCH" data_type: TYPE_INT32 dims: [ 1 ] } ]
        dynamic_batching { max_queue_delay_microseconds: 20000 }
        instance_group [ { kind: KIND_CPU count: 1 } ]
        """, """
        class TritonPythonModel:
            def execute(self, requests):
                responses = []
                for request in requests:
                    x = _input(request, "INPUT0")
                    batch = np.full((x.shape[0], 1), len(requests), dtype=np.int32)
                    responses.append(pb_utils.InferenceResponse(output_tensors=[
                        pb_utils.Tensor("OUTPUT0", (x * 2).astype(np.float32)),
                        pb_utils.Tensor("BATCH", batch)]))
                return responses
        """),
    "errors": ("""
        name: "errors"
        backend: "python"
        max_batch_size: 0
        input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]
        output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]
        """, """
        class TritonPythonModel:
            def execute(self, requests):
                responses = []
                for request in requests:
                    x = _input(request, "INPUT0")
                    value = int(x[0])
                    if value == 6:
                        raise pb_utils.TritonModelException("raised")
                    if value == 7:
                        raise ValueError("plain")
                    if value == 8:
                        return []
                    if value == 9:
                        return [None]
                    error = {
                        1: lambda: pb_utils.TritonError("bad value"),
                        2: lambda: pb_utils.TritonError("missing", pb_utils.TritonError.NOT_FOUND),
                        3: lambda: pb_utils.TritonError("invalid", pb_utils.TritonError.INVALID_ARG),
                        4: lambda: pb_utils.TritonError("unavailable", pb_utils.TritonError.UNAVAILABLE),
                        5: lambda: pb_utils.TritonError("unsupported", pb_utils.TritonError.UNSUPPORTED),
                    }.get(value)
                    if error is not None:
                        responses.append(pb_utils.InferenceResponse(error=error()))
                    else:
                        responses.append(pb_utils.InferenceResponse(output_tensors=[
                            pb_utils.Tensor("OUTPUT0", x.astype(np.int32))]))
                return responses
        """),
    "strings": ("""
        name: "strings"
        backend: "python"
        max_batch_size: 0
        input [ { name: "TEXT" data_type: TYPE_STRING dims: [ -1 ] } ]
        output [ { name: "TEXT_OUT" data_type: TYPE_STRING dims: [ -1 ] },
                 { name: "LEN" data_type: TYPE_INT64 dims: [ -1 ] } ]
        """, """
        class TritonPythonModel:
            def execute(self, requests):
                responses = []
                for request in requests:
                    text = _input(request, "TEXT")
                    upper = np.array([bytes(t).upper() for t in text.ravel()], dtype=np.object_)
                    lengths = np.array([len(bytes(t)) for t in text.ravel()], dtype=np.int64)
                    responses.append(pb_utils.InferenceResponse(output_tensors=[
                        pb_utils.Tensor("TEXT_OUT", upper.reshape(text.shape)),
                        pb_utils.Tensor("LEN", lengths.reshape(text.shape))]))
                return responses
        """),
    "params": ("""
        name: "params"
        backend: "python"
        max_batch_size: 0
        input [ { name: "DUMMY" data_type: TYPE_INT32 dims: [ 1 ] } ]
        output [ { name: "PARAMS" data_type: TYPE_STRING dims: [ 1 ] },
                 { name: "ID" data_type: TYPE_STRING dims: [ 1 ] },
                 { name: "NAMES" data_type: TYPE_STRING dims: [ 1 ] } ]
        """, """
        class TritonPythonModel:
            def execute(self, requests):
                responses = []
                for request in requests:
                    names = ",".join(sorted(request.requested_output_names()))
                    responses.append(pb_utils.InferenceResponse(output_tensors=[
                        _bytes("PARAMS", [request.parameters()]),
                        _bytes("ID", [request.request_id()]),
                        _bytes("NAMES", [names])]))
                return responses
        """),
    "bls": ("""
        name: "bls"
        backend: "python"
        max_batch_size: 0
        input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
                { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "SUM" data_type: TYPE_FP32 dims: [ 4 ] } ]
        """, """
        class TritonPythonModel:
            def execute(self, requests):
                responses = []
                for request in requests:
                    inputs = [pb_utils.get_input_tensor_by_name(request, n) for n in ("INPUT0", "INPUT1")]
                    response = pb_utils.InferenceRequest(model_name="add_sub", requested_output_names=["OUTPUT0"],
                                                         inputs=inputs).exec()
                    if response.has_error():
                        raise pb_utils.TritonModelException(response.error().message())
                    total = pb_utils.get_output_tensor_by_name(response, "OUTPUT0").as_numpy()
                    responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("SUM", total)]))
                return responses
        """),
    "bls_missing": ("""
        name: "bls_missing"
        backend: "python"
        max_batch_size: 0
        input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "HAS_ERROR" data_type: TYPE_STRING dims: [ 1 ] },
                 { name: "CODE" data_type: TYPE_STRING dims: [ 1 ] },
                 { name: "MESSAGE" data_type: TYPE_STRING dims: [ 1 ] } ]
        """, """
        def _code_name(error):
            names = ("UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARG", "UNAVAILABLE", "UNSUPPORTED",
                     "ALREADY_EXISTS", "CANCELLED")
            return next((n for n in names if error.code() == getattr(pb_utils.TritonError, n)), str(error.code()))


        class TritonPythonModel:
            def execute(self, requests):
                responses = []
                for request in requests:
                    inputs = [pb_utils.get_input_tensor_by_name(request, "INPUT0")]
                    try:
                        response = pb_utils.InferenceRequest(model_name="no_such_model", inputs=inputs,
                                                             requested_output_names=["OUTPUT0"]).exec()
                        error = response.error() if response.has_error() else None
                        found = (str(response.has_error()), _code_name(error) if error else "",
                                 error.message() if error else "")
                    except Exception as exc:  # what exec() raised, if it raises
                        found = ("raised " + type(exc).__name__, "", str(exc))
                    responses.append(pb_utils.InferenceResponse(output_tensors=[
                        _bytes("HAS_ERROR", [found[0]]), _bytes("CODE", [found[1]]), _bytes("MESSAGE", [found[2]])]))
                return responses
        """),
    "autocomplete": ("""
        name: "autocomplete"
        backend: "python"
        """, """
        class TritonPythonModel:
            @staticmethod
            def auto_complete_config(auto_complete_model_config):
                auto_complete_model_config.add_input({"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]})
                auto_complete_model_config.add_output({"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]})
                auto_complete_model_config.set_max_batch_size(4)
                return auto_complete_model_config

            def execute(self, requests):
                return [pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("OUTPUT0", (_input(r, "INPUT0") + 1).astype(np.float32))]) for r in requests]
        """),
    "init_args": ("""
        name: "init_args"
        backend: "python"
        max_batch_size: 0
        input [ { name: "DUMMY" data_type: TYPE_INT32 dims: [ 1 ] } ]
        output [ { name: "KEYS" data_type: TYPE_STRING dims: [ -1 ] },
                 { name: "VALUES" data_type: TYPE_STRING dims: [ 1 ] } ]
        """, """
        import os

        SELECTED = ("model_name", "model_version", "model_instance_kind", "model_instance_name",
                    "model_instance_device_id")


        class TritonPythonModel:
            def initialize(self, args):
                self.keys = sorted(args)
                values = {key: args.get(key) for key in SELECTED}
                values["types"] = sorted({type(v).__name__ for v in args.values()})
                config = json.loads(args["model_config"])
                values["config.max_batch_size"] = config.get("max_batch_size")
                values["config keys"] = sorted(config)
                # the model's own folder is <repo>/init_args; say where model_repository points relative to it
                model_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
                repository = args.get("model_repository", "")
                values["model_repository vs model folder"] = repository and os.path.relpath(repository, model_dir)
                self.values = json.dumps(values, sort_keys=True)

            def execute(self, requests):
                return [pb_utils.InferenceResponse(output_tensors=[_bytes("KEYS", self.keys),
                                                                   _bytes("VALUES", [self.values])])
                        for _ in requests]
        """),
    "broken": ("""
        name: "broken"
        backend: "python"
        max_batch_size: 0
        input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
        """, """
        class TritonPythonModel:
            def initialize(self, args):
                raise RuntimeError("cannot start")

            def execute(self, requests):
                return [pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("OUTPUT0", _input(r, "INPUT0"))]) for r in requests]
        """),
    "decoupled": ("""
        name: "decoupled"
        backend: "python"
        max_batch_size: 0
        model_transaction_policy { decoupled: true }
        input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
        output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
        """, """
        import threading


        class TritonPythonModel:
            def initialize(self, args):
                self.threads = []

            def execute(self, requests):
                for request in requests:
                    count = int(_input(request, "IN").ravel()[0])
                    thread = threading.Thread(target=self.respond, args=(request.get_response_sender(), count),
                                              daemon=True)
                    thread.start()
                    self.threads.append(thread)
                return None

            def respond(self, sender, count):
                final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
                if count < 0:
                    if count < -1:  # IN=-2: one response (OUT=0) before the error
                        sender.send(pb_utils.InferenceResponse(output_tensors=[
                            pb_utils.Tensor("OUT", np.array([0], dtype=np.int32))]))
                    error = pb_utils.TritonError("negative", pb_utils.TritonError.INVALID_ARG)
                    sender.send(pb_utils.InferenceResponse(error=error), flags=final)
                    return
                for i in range(count):
                    sender.send(pb_utils.InferenceResponse(output_tensors=[
                        pb_utils.Tensor("OUT", np.array([i], dtype=np.int32))]))
                sender.send(flags=final)

            def finalize(self):
                for thread in self.threads:
                    thread.join(5)
        """),
    "gen": ("""
        name: "gen"
        backend: "python"
        max_batch_size: 0
        input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] },
                { name: "N" data_type: TYPE_INT32 dims: [ 1 ] } ]
        output [ { name: "TEXT_OUT" data_type: TYPE_STRING dims: [ 1 ] },
                 { name: "N_OUT" data_type: TYPE_INT32 dims: [ 1 ] },
                 { name: "PARAMS" data_type: TYPE_STRING dims: [ 1 ] } ]
        """, """
        class TritonPythonModel:
            def execute(self, requests):
                responses = []
                for request in requests:
                    text = _input(request, "TEXT")
                    upper = np.array([bytes(t).upper() for t in text.ravel()], dtype=np.object_)
                    responses.append(pb_utils.InferenceResponse(output_tensors=[
                        pb_utils.Tensor("TEXT_OUT", upper.reshape(text.shape)),
                        pb_utils.Tensor("N_OUT", (_input(request, "N") + 1).astype(np.int32)),
                        _bytes("PARAMS", [request.parameters()])]))
                return responses
        """),
    "sequence": ("""
        name: "sequence"
        backend: "python"
        max_batch_size: 4
        sequence_batching {
          control_input [
            { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
            { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
          ]
        }
        input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
        output [ { name: "TOTAL" data_type: TYPE_INT32 dims: [ 1 ] },
                 { name: "START_SEEN" data_type: TYPE_INT32 dims: [ 1 ] },
                 { name: "CORRID_SEEN" data_type: TYPE_UINT64 dims: [ 1 ] } ]
        """, """
        class TritonPythonModel:
            def initialize(self, args):
                self.totals = {}

            def execute(self, requests):
                responses = []
                for request in requests:
                    x, start, corrid = (_input(request, n) for n in ("INPUT", "START", "CORRID"))
                    key = int(corrid.ravel()[0])
                    if int(start.ravel()[0]):
                        self.totals[key] = 0
                    self.totals[key] = self.totals.get(key, 0) + int(x.ravel()[0])
                    responses.append(pb_utils.InferenceResponse(output_tensors=[
                        pb_utils.Tensor("TOTAL", np.full(x.shape, self.totals[key], dtype=np.int32)),
                        pb_utils.Tensor("START_SEEN", start.astype(np.int32)),
                        pb_utils.Tensor("CORRID_SEEN", corrid.astype(np.uint64))]))
                return responses
        """),
    "ens_double": (_STEP_CONFIG.format(name="ens_double"), _STEP_CODE.format(expression="x * 2")),
    "ens_add_one": (_STEP_CONFIG.format(name="ens_add_one"), _STEP_CODE.format(expression="x + 1")),
    "ensemble": (_ENSEMBLE_CONFIG.format(name="ensemble", second="ens_add_one"), None),
    "ensemble_missing": (_ENSEMBLE_CONFIG.format(name="ensemble_missing", second="no_such_step"), None),
}

# models expected not to load: `broken` (initialize raises), `ensemble_missing` (a step does not exist)
NOT_READY = ("broken", "ensemble_missing")
READY_MODELS = tuple(name for name in MODELS if name not in NOT_READY)


def write_repository(root: Path) -> None:
    """Write every model of MODELS as <root>/<name>/config.pbtxt + <root>/<name>/1/model.py (1/ alone for
    an ensemble)."""
    root = Path(root)
    for name, (config, code) in MODELS.items():
        (root / name / "1").mkdir(parents=True, exist_ok=True)
        (root / name / "config.pbtxt").write_text(textwrap.dedent(config).lstrip())
        if code is not None:
            (root / name / "1" / "model.py").write_text(_HEADER + "\n" + textwrap.dedent(code))
