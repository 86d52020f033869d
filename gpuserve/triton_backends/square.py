"""Triton's square backend (`backend: "square"`): a decoupled model that answers IN = [n] with n responses,
each OUT = [n], then the final flag alone.

Triton builds it for its own tests (qa/L0_response_statistics, decoupled clients); its model config parameters
shape each response: CUSTOM_INFER_DELAY_NS before it, CUSTOM_OUTPUT_DELAY_NS while its output is written,
CUSTOM_CANCEL_DELAY_NS of clean-up once the request is cancelled (no more responses then), and the last
CUSTOM_EMPTY_COUNT responses are none at all and the CUSTOM_FAIL_COUNT before them errors. It reports each
response's statistics (the statistics extension's `response_stats`), as a C++ backend can and a Python-backend
model cannot. gpuserve serves it through its Python-backend machinery with this file as the model's model.py
(in a folder of its own: a model's folder is on sys.path while its file imports).
"""

import json
import time

import numpy as np

from gpuserve import triton_pb_utils as pb_utils
from gpuserve.triton_backends.identity import _parameters

_DELAYS = ("CUSTOM_INFER_DELAY_NS", "CUSTOM_OUTPUT_DELAY_NS", "CUSTOM_CANCEL_DELAY_NS")


def _count(parameters, key) -> int:
    value = parameters.get(key, "")
    return int(value) if value.isdigit() else 0  # as the backend: a value that is not a number is ignored


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        tensors = config.get("input", []), config.get("output", [])
        if [len(t) for t in tensors] != [1, 1] or [t[0]["name"] for t in tensors] != ["IN", "OUT"] or any(
                t[0].get("data_type") != "TYPE_INT32" for t in tensors):
            raise pb_utils.TritonModelException("square backend expects one TYPE_INT32 input IN and one TYPE_INT32 "
                                                "output OUT")
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException("square backend only supports models with decoupled transaction "
                                                "policy")
        parameters = _parameters(config)
        self.infer_s, self.output_s, self.cancel_s = (_count(parameters, key) / 1e9 for key in _DELAYS)
        self.fail, self.empty = _count(parameters, "CUSTOM_FAIL_COUNT"), _count(parameters, "CUSTOM_EMPTY_COUNT")

    def execute(self, requests):
        for request in requests:
            given = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            sender = request.get_response_sender()
            if given.ndim == 2 and given.shape[0] != 1:
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError("unexpected shape for IN input")),
                            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                continue
            self._respond(sender, int(given.reshape(-1)[0]) if given.size else 0, given.ndim)
        return None

    def _respond(self, sender, count: int, dims: int) -> None:
        for index in range(max(count, 0)):
            start = time.perf_counter_ns()
            cancelled = sender.is_cancelled()
            time.sleep(self.cancel_s if cancelled else self.infer_s)
            fails = index + self.empty < count <= index + self.empty + self.fail
            output_start = 0
            if not cancelled and index + self.empty < count:  # not one of the empty ones
                output_start = time.perf_counter_ns()
                out = pb_utils.Tensor("OUT", np.full([1] * dims, count, np.int32))
                time.sleep(self.output_s)
            end = time.perf_counter_ns()
            if output_start:
                error = pb_utils.TritonError("simulated failure") if fails else None
                sender.send(pb_utils.InferenceResponse([] if fails else [out], error=error))
            sender._report_statistics(start, output_start, end,
                                      "cancel" if cancelled else "fail" if fails else "success")
            if cancelled:
                break
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
