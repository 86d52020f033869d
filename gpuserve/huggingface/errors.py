"""`mlserver_huggingface.errors`: why a HuggingFace model's settings are refused, in MLServer's words.

Each is an MLServerError (a gpuserve error), so a model whose settings raise one is reported not ready
with that sentence as its reason, and the other models keep serving.
"""

from __future__ import annotations

from typing import Iterable

from gpuserve.mlserver.errors import MLServerError


class MissingHuggingFaceSettings(MLServerError):
    def __init__(self):
        super().__init__("Missing HuggingFace Runtime settings.")


class InvalidTransformersTask(MLServerError):
    def __init__(self, task: str, available_tasks: Iterable[str]):
        super().__init__(f"Invalid transformer task: {task}. Available tasks: {available_tasks}.")


class InvalidOptimumTask(MLServerError):
    def __init__(self, task: str, available_tasks: Iterable[str]):
        # MLServer's message leaves `{task}` unformatted (its f-string prefix is on the other line); ours names it
        super().__init__(f"Invalid transformer task for Optimum model: {task}. "
                         f"Available Optimum tasks: {available_tasks}.")


class InvalidModelParameter(MLServerError):
    def __init__(self, name: str, value: str, param_type: str):
        super().__init__(f"Bad model parameter: {name} with value {value} can't be parsed as a {param_type}")


class InvalidModelParameterType(MLServerError):
    def __init__(self, param_type: str):
        super().__init__(f"Bad model parameter type: {param_type}. "
                         "Only valid types are INT, FLOAT, DOUBLE, STRING, BOOL.")


__all__ = ["MissingHuggingFaceSettings", "InvalidTransformersTask", "InvalidOptimumTask", "InvalidModelParameter",
           "InvalidModelParameterType"]
