"""`kserve.utils.utils`: turning a V1 body or a V2 `InferRequest` into the array (or DataFrame, or list of
strings) a framework model takes, and its result back into the answer of the same protocol. KServe's
built-in servers and its custom-model examples are written around these two, so scripts moved over keep
calling them."""

from __future__ import annotations

import uuid
from typing import Dict, List, Optional, Union

import numpy as np

from gpuserve.constants.constants import PredictorProtocol
from gpuserve.errors import InvalidInput
from gpuserve.types import InferOutput, InferRequest, InferResponse
from gpuserve.utils.numpy_codec import from_np_dtype


def generate_uuid() -> str:
    return str(uuid.uuid4())


def strtobool(val: str) -> bool:
    """distutils' strtobool (gone in Python 3.12), as KServe's scripts parse their flags with it."""
    lowered = val.lower()
    if lowered in ("y", "yes", "t", "true", "on", "1"):
        return True
    if lowered in ("n", "no", "f", "false", "off", "0"):
        return False
    raise ValueError(f"invalid truth value {val!r}")


def _protocol_is(protocol, expected: PredictorProtocol) -> bool:
    if isinstance(protocol, PredictorProtocol):
        return protocol == expected
    return isinstance(protocol, str) and protocol.lower() == expected.value.lower()


def is_v1(protocol: Union[str, PredictorProtocol]) -> bool:
    return _protocol_is(protocol, PredictorProtocol.REST_V1)


def is_v2(protocol: Union[str, PredictorProtocol]) -> bool:
    return _protocol_is(protocol, PredictorProtocol.REST_V2)


def _content_type(request: InferRequest) -> Optional[str]:
    value = (request.parameters or {}).get("content_type")
    # A gRPC request's parameters may still be InferParameter messages.
    return getattr(value, "string_param", value)


def get_predict_input(payload: Union[Dict, InferRequest], columns: Optional[List] = None):
    """V1: the instances (or inputs) as an array; a DataFrame when they are records; strings stay a list.
    V2: the first input as an array (a list when it holds strings), or all inputs as one DataFrame when
    the request's `content_type` parameter is "pd"."""
    if isinstance(payload, dict):
        instances = payload["inputs"] if "inputs" in payload else payload["instances"]
        if len(instances) == 0:
            return np.array(instances)
        first = instances[0]
        if isinstance(first, dict) or (isinstance(first, list) and first and isinstance(first[0], dict)):
            import pandas as pd

            return pd.concat([pd.DataFrame(one, columns=columns) for one in instances], axis=0)
        if isinstance(first, str):
            return instances
        return np.array(instances)
    if isinstance(payload, InferRequest):
        if _content_type(payload) == "pd":
            return payload.as_dataframe()
        first = payload.inputs[0]
        data = first.data
        if first.datatype == "BYTES" and isinstance(data, list) and data and isinstance(data[0], str):
            return data
        return first.as_numpy()
    raise InvalidInput(f"unsupported payload type {type(payload)}")


def _output(name: str, array: np.ndarray, binary: bool) -> InferOutput:
    output = InferOutput(name=name, shape=list(array.shape), datatype=from_np_dtype(array.dtype))
    output.set_data_from_numpy(array, binary_data=binary)
    return output


def get_predict_response(payload: Union[Dict, InferRequest], result, model_name: str):
    """The answer in the protocol `payload` came in: V1 `{"predictions": [...]}` (a DataFrame as one
    record per row), V2 an `InferResponse` with one output per DataFrame column, else one `output-0`."""
    if isinstance(payload, dict):
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - pandas comes with the server
            pd = None
        if pd is not None and isinstance(result, pd.DataFrame):
            return {"predictions": [row.to_dict() for _, row in result.iterrows()]}
        if isinstance(result, np.ndarray):
            return {"predictions": result.tolist()}
        return {"predictions": result}
    if isinstance(payload, InferRequest):
        binary = payload.use_binary_outputs
        outputs = []
        if hasattr(result, "columns") and hasattr(result, "iterrows"):  # a DataFrame
            for column in result.columns:
                outputs.append(_output(str(column), result[column].to_numpy(), binary))
        elif isinstance(result, list) and result and isinstance(result[0], str):
            outputs.append(_output("output-0", np.array(result, dtype=np.object_), binary))
        else:
            outputs.append(_output("output-0", np.asarray(result), binary))
        return InferResponse(model_name=model_name, infer_outputs=outputs,
                             response_id=payload.id if payload.id else generate_uuid(),
                             use_binary_outputs=binary, requested_outputs=payload.request_outputs)
    raise InvalidInput(f"unsupported payload type {type(payload)}")


__all__ = ["generate_uuid", "strtobool", "is_v1", "is_v2", "get_predict_input", "get_predict_response"]
