"""Triton's binary tensor data extension for HTTP: a JSON header, then raw tensor bytes.

The `Inference-Header-Content-Length` header says where the JSON ends; each input whose parameters
carry `binary_data_size` takes that many bytes from the rest, in input order. Inputs are decoded
zero-copy (`np.frombuffer`: read-only from a bytes body, writable from a large body the server read into a
buffer of its own). Outputs go binary when the request asks for it, per output
(`binary_data`) or for all (`binary_data_output`).
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import orjson

from gpuserve.datatypes import FIXED_SIZE_DTYPES, VIEW_BYTES, check_input_byte_size, element_size, wire_raw
from gpuserve.errors import InvalidInput
from gpuserve.server.rest.common import loads
from gpuserve.shared_memory import is_shared_memory_output
from gpuserve.triton_config import V2_TYPES
from gpuserve.types import (InferInput, InferRequest, InferResponse, array_to_json, plain_count, read_binary_data,
                            rest_request)

ConfigOf = Callable[[str, Optional[str]], Dict[str, Any]]


# Binary inputs of a large body start on this boundary (`aligned_body`): a view wherever the JSON header left
# it was misaligned, NumPy took its unaligned loops (~1.5x slower on reductions) and ONNX Runtime summed a
# misaligned float input slightly differently from an aligned copy of it
ALIGNMENT = 64


def aligned_body(length: int, header_length: str) -> Optional[memoryview]:
    """A writable buffer for a body of `length` bytes whose JSON header is `header_length` bytes long (the
    request's Inference-Header-Content-Length), placed so that the binary data after the header starts on
    an ALIGNMENT boundary; each input after the first stays aligned when the sizes before it are multiples
    of ALIGNMENT. None when the header length cannot be the body's (the decode refuses the request then)."""
    try:
        json_length = int(header_length)
    except ValueError:
        return None
    if not 0 <= json_length <= length:
        return None
    store = np.empty(length + ALIGNMENT - 1, np.uint8)  # not zeroed: the body fills it all
    skip = -(store.ctypes.data + json_length) % ALIGNMENT
    return memoryview(store)[skip:skip + length]


def infer_body_buffer(length: int, header_length: Optional[str], encoded, route) -> Optional[memoryview]:
    """Where a declared request body is read, on both HTTP servers: aligned_body for a binary inference body
    (`header_length` from Inference-Header-Content-Length, `route` a fast_path match) of VIEW_BYTES or more
    without a Content-Encoding header; None for every other body."""
    if header_length is None or encoded is not None or length < VIEW_BYTES or route is None or route[0] != "infer":
        return None
    return aligned_body(length, header_length)


def decode_request(body: bytes, header_length: str, model_name: str, version: Optional[str],
                   config_of: Optional[ConfigOf] = None) -> InferRequest:
    try:
        json_length = int(header_length)
    except ValueError:
        raise InvalidInput(f"invalid Inference-Header-Content-Length '{header_length}'") from None
    if json_length < 0 or json_length > len(body):
        raise InvalidInput(f"Inference-Header-Content-Length {json_length} is outside the body of {len(body)} bytes")
    if json_length == 0 and config_of is not None:
        return raw_request(body, model_name, version, config_of(model_name, version))
    header = loads(bytes(body[:json_length]))
    request = _plain_request(header, body, json_length, model_name, version)
    if request is not None:
        return request
    request = InferRequest.from_rest(model_name, header, version)
    offset = read_binary_data(request.inputs, body, json_length, "input", model_name, request.id)
    if offset != len(body):
        raise InvalidInput(f"{len(body) - offset} unexpected bytes after the binary tensor data")
    return request


def _plain_request(header: Any, body: Any, offset: int, model_name: str, version: Optional[str]
                   ) -> Optional[InferRequest]:
    """The common request (tritonclient's), decoded without the general path's checks, which took most of
    the ~8 us a one-input request cost: each input exactly a name, a shape of non-negative integers, a
    fixed-size datatype and parameters holding only its binary_data_size, the sizes its shapes' bytes and
    the body ending with the last. None for anything else: the general path then decodes it, or refuses it
    in Triton's words."""
    inputs = header.get("inputs") if type(header) is dict else None
    if type(inputs) is not list:
        return None
    tensors = []
    for item in inputs:
        if type(item) is not dict or len(item) != 4:
            return None
        name, shape, parameters, datatype = item.get("name"), item.get("shape"), item.get("parameters"), \
            item.get("datatype")
        dtype = FIXED_SIZE_DTYPES.get(datatype) if type(datatype) is str else None
        count = plain_count(shape)
        if dtype is None or type(name) is not str or not name or count is None \
                or type(parameters) is not dict or len(parameters) != 1:
            return None
        size = parameters.get("binary_data_size")
        if type(size) is not int or size != count * dtype.itemsize or offset + size > len(body):
            return None
        array = np.frombuffer(body, dtype, count, offset).reshape(shape)  # writable where the body is
        tensor = InferInput(name, shape, datatype, array, parameters)
        tensor._data = None  # as read_binary_data leaves it: `data` reads as a list
        tensors.append(tensor)
        offset += size
    if offset != len(body):
        return None
    return rest_request(InferRequest, model_name, header, tensors, version)


def raw_request(body: bytes, model_name: str, version: Optional[str], config: Dict[str, Any]) -> InferRequest:
    """Triton's raw binary request (`Inference-Header-Content-Length: 0`): the whole body is the data of
    the model's only input, whose name, datatype and shape come from the model's configuration, and every
    output answers binary. curl and plain HTTP clients use it to post a file without writing JSON; the
    refusals say what Triton says, since those are the messages such clients have seen."""
    inputs = config.get("input") or []
    if len(inputs) != 1:
        raise InvalidInput(f"Raw request must only have 1 input (found 1) to be deduced but got {len(inputs)} "
                           f"inputs in '{model_name}' model configuration")
    spec = inputs[0]
    name = spec["name"]
    datatype = V2_TYPES.get(spec.get("data_type", ""), "")
    shape = [1] if config.get("max_batch_size") else []
    variable, count = None, 1
    for dim in spec.get("dims") or []:
        if int(dim) == -1:
            if variable is not None:
                raise InvalidInput(f"The shape of the raw input '{name}' can not be deduced because there are "
                                   "more than one variable-sized dimension")
            variable = len(shape)
        else:
            count *= int(dim)
        shape.append(int(dim))
    if datatype == "BYTES":
        if variable is not None or count != 1:
            raise InvalidInput(f"For BYTE datatype raw input '{name}', the model must have input shape [1]")
        data = struct.pack("<I", len(body)) + bytes(body)  # the one element, with its length as Triton prefixes it
    else:
        itemsize = element_size(datatype) if datatype else 0
        if not itemsize:
            raise InvalidInput(f"raw input '{name}' has datatype {spec.get('data_type')}, which raw requests "
                               "cannot carry")
        if variable is not None:
            per_step = count * itemsize
            shape[variable] = len(body) // per_step if per_step else 0
        check_input_byte_size(name, datatype, shape, len(body), model_name)
        data = body
    header = {"inputs": [{"name": name, "datatype": datatype, "shape": shape,
                          "parameters": {"binary_data_size": len(data)}}],
              "parameters": {"binary_data_output": True}}
    request = InferRequest.from_rest(model_name, header, version)
    read_binary_data(request.inputs, data, 0, "input")
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


class Parts:
    """A binary answer of VIEW_BYTES or more as its pieces, written one after another, never joined (the
    copies of a 1.9 GB answer held 5.7 GB at once); `len` is its length in bytes."""

    __slots__ = ("parts", "size")

    def __init__(self, parts: List[Any]):
        self.parts = parts
        self.size = sum(len(part) for part in parts)

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)


def encode_response(response: InferResponse, request: InferRequest) -> Tuple[Any, Optional[int]]:
    """The body (bytes, or Parts for a large binary answer), and the JSON header's length (None when
    nothing went binary)."""
    outputs, chunks = [], []
    size = 0
    for tensor in response.outputs:
        entry = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        parameters = dict(tensor.parameters)
        if is_shared_memory_output(tensor):  # written to the client's shared memory: no data, no parameters
            outputs.append(entry)
            continue
        array = tensor.as_numpy()
        if _binary_for(tensor.name, request):
            raw = wire_raw(array, tensor.datatype)
            size += len(raw)
            parameters["binary_data_size"] = len(raw)
            chunks.append(raw)
        else:
            parameters.pop("binary_data_size", None)  # set_data_from_numpy() announced bytes; JSON here
            entry["data"] = array_to_json(array, tensor.datatype, getattr(response, "nan_literals", False))
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
    if size >= VIEW_BYTES:
        return Parts([header, *chunks]), len(header)
    return b"".join([header, *chunks]), len(header)
