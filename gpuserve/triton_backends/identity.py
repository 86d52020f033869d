"""Triton's identity backend (`backend: "identity"`): each output is the input at the same position, as sent.

Triton builds it for its own tests, and its qa model repositories use it for models whose work does not matter
(load and unload timing, shutdown with requests in flight): `creation_delay_sec` holds the load back that many
seconds, `execute_delay_ms` each execute. gpuserve serves it through its Python-backend machinery with this
file as the model's model.py (triton_config.settings_from_config points the model here), in a folder of its
own: a model's folder is on sys.path while its file imports, and modules imported meanwhile from there are
dropped afterwards (gpuserve/ there dropped gpuserve modules other threads had just imported).
"""

import json
import time

from gpuserve import triton_pb_utils as pb_utils


def _parameters(config):
    found = config.get("parameters") or {}
    if isinstance(found, list):  # `parameters [ { key: ... value: ... } ]` as a list of entries
        found = {entry.get("key"): entry.get("value") or {} for entry in found}
    return {key: (value or {}).get("string_value", "") for key, value in found.items()}


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
        time.sleep(float(parameters.get("creation_delay_sec") or 0))

    def execute(self, requests):
        if self.execute_delay_s:
            time.sleep(self.execute_delay_s)
        responses = []
        for request in requests:
            outputs = [pb_utils.Tensor(out, pb_utils.get_input_tensor_by_name(request, given).as_numpy())
                       for given, out in self.pairs if pb_utils.get_input_tensor_by_name(request, given) is not None]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
