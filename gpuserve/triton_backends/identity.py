"""Triton's identity backend (`backend: "identity"`): each output is the input at the same position, as sent.

Triton builds it for its own tests, and its qa model repositories use it for models whose work does not matter
(load and unload timing, shutdown with requests in flight): `creation_delay_sec` holds the load back that many
seconds, `execute_delay_ms` each execute. As the backend does, each request's answer carries the example
parameters param0..param3, each input is logged with its byte size, and the byte sizes add up in the counter
input_byte_size_counter (qa/L0_backend_identity checks all three). gpuserve serves it through its Python-backend machinery with this
file as the model's model.py (triton_config.settings_from_config points the model here), in a folder of its
own: a model's folder is on sys.path while its file imports, and modules imported meanwhile from there are
dropped afterwards (gpuserve/ there dropped gpuserve modules other threads had just imported).
"""

import json
import time

import numpy as np

from gpuserve import triton_pb_utils as pb_utils


def _parameters(config):
    found = config.get("parameters") or {}
    if isinstance(found, list):  # `parameters [ { key: ... value: ... } ]` as a list of entries
        found = {entry.get("key"): entry.get("value") or {} for entry in found}
    return {key: (value or {}).get("string_value", "") for key, value in found.items()}


_SIZES = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2, "UINT32": 4, "INT32": 4,
          "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8}
_PARAMETERS = {"param0": "an example string parameter", "param1": 42, "param2": False, "param3": 123.123}


def _byte_size(array: np.ndarray, datatype: str) -> int:
    """As the request carried it: BYTES elements each with their 4-byte length, others at their type's width."""
    if datatype == "BYTES":
        return sum(4 + len(x if isinstance(x, bytes) else str(x).encode()) for x in array.reshape(-1))
    return int(array.size) * _SIZES.get(datatype, array.itemsize)


class Internal(Exception):
    """Named for Triton's status, which the load's reason starts with ("Internal: ...")."""


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        """Runs on the config as written (before gpuserve runs KIND_GPU instances on the CPU of a machine
        without CUDA): the identity backend has CPU instances only, and says so in these words."""
        groups = auto_complete_model_config.as_dict().get("instance_group") or []
        if any(str(group.get("kind", "")).upper() == "KIND_GPU" for group in groups):
            raise Internal("GPU instances not supported")
        return auto_complete_model_config

    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = _parameters(config)
        self.execute_delay_s = float(parameters.get("execute_delay_ms") or 0) / 1000
        self.pairs = [(i["name"], o["name"]) for i, o in zip(config.get("input", []), config.get("output", []))]
        self.types = {i["name"]: str(i.get("data_type", "")).replace("TYPE_", "").replace("STRING", "BYTES")
                      for i in config.get("input", [])}
        family = pb_utils.MetricFamily(name="input_byte_size_counter", kind=pb_utils.MetricFamily.COUNTER,
                                       description="Cumulative input byte size of all requests received by the model")
        self.byte_counter = family.Metric(labels={"model": config.get("name", args.get("model_name", "")),
                                                  "version": str(args.get("model_version", ""))})
        time.sleep(float(parameters.get("creation_delay_sec") or 0))

    def execute(self, requests):
        if self.execute_delay_s:
            time.sleep(self.execute_delay_s)
        responses = []
        for request in requests:
            outputs = []
            for given, out in self.pairs:
                tensor = pb_utils.get_input_tensor_by_name(request, given)
                if tensor is None:
                    continue
                array = tensor._array  # as sent, BF16 too (held as float32, which as_numpy() refuses)
                size = _byte_size(array, self.types.get(given, ""))
                pb_utils.Logger.log_info(f"\tinput {given}: datatype = {self.types.get(given, '')}, shape = "
                                         f"[{','.join(str(d) for d in array.shape)}], byte_size = {size}, "
                                         f"buffer_count = 1")
                self.byte_counter.increment(size)
                outputs.append(pb_utils.Tensor(out, array))
                outputs[-1]._bf16 = tensor._bf16
            response = pb_utils.InferenceResponse(outputs)
            response._parameters = dict(_PARAMETERS)  # a C++ backend may set a double (a Python model may not)
            responses.append(response)
        return responses
