"""Triton's binary tensor data extension for HTTP: a JSON header, then raw tensor bytes.

The `Inference-Header-Content-Length` header says where the JSON ends; each input whose parameters
carry `binary_data_size` takes that many bytes from the rest, in input order. Inputs are decoded
zero-copy (`np.frombuffer`, read-only). Outputs go binary when the request asks for it, per output
(`binary_data`) or for all (`binary_data_output`).
"""

from __future__ import annotations

from typing import Optional, Tuple

import orjson

from gpuserve.datatypes import numpy_to_raw
from gpuserve.errors import InvalidInput
from gpuserve.server.rest.common import loads
from gpuserve.shared_memory import is_shared_memory_output
from gpuserve.types import InferRequest, InferResponse, array_to_json, read_binary_data


def decode_request(body: bytes, header_length: str, model_name: str, version: Optional[str]) -> InferRequest:
    try:
        json_length = int(header_length)
    except ValueError:
        raise InvalidInput(f"invalid Inference-Header-Content-Length '{header_length}'") from None
    if json_length < 0 or json_length > len(body):
        raise InvalidInput(f"Inference-Header-Content-Length {json_length} is outside the body of {len(body)} bytes")
    header = loads(bytes(body[:json_length]))
    request = InferRequest.from_rest(model_name, header, version)
    offset = read_binary_data(request.inputs, body, json_length, "input")
    if offset != len(body):
        raise InvalidInput(f"{len(body) - offset} unexpected bytes after the binary tensor data")
    return request


def _binary_for(name: str, request: InferRequest) -> bool:
    if request.request_outputs:
        for wanted in request.request_outputs:
            if wanted.name == name:
                flag = wanted.parameters.get("binary_data")
                if flag is not None:
                    return bool(flag)
                break
    return bool(request.parameters.get("binary_data_output", False))


def wants_binary(request: InferRequest) -> bool:
    if request.parameters.get("binary_data_output"):
        return True
    return any(o.parameters.get("binary_data") for o in request.request_outputs or ())


def encode_response(response: InferResponse, request: InferRequest) -> Tuple[bytes, Optional[int]]:
    """The body, and the JSON header's length (None when nothing went binary)."""
    outputs, chunks = [], []
    for tensor in response.outputs:
        entry = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        parameters = dict(tensor.parameters)
        if is_shared_memory_output(tensor):  # written to the client's shared memory: no data, no parameters
            outputs.append(entry)
            continue
        array = tensor.as_numpy()
        if _binary_for(tensor.name, request):
            raw = numpy_to_raw(array, tensor.datatype)
            parameters["binary_data_size"] = len(raw)
            chunks.append(raw)
        else:
            parameters.pop("binary_data_size", None)  # set_data_from_numpy() announced bytes; JSON here
            entry["data"] = array_to_json(array, tensor.datatype)
        if parameters:
            entry["parameters"] = parameters
        outputs.append(entry)
    head = {"model_name": response.model_name}
    if response.model_version is not None:
        head["model_version"] = str(response.model_version)
    if response.id is not None:
        head["id"] = response.id
    if response.parameters:
        head["parameters"] = response.parameters
    head["outputs"] = outputs
    header = orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)
