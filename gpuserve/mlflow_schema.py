"""An MLflow model's signature in V2 terms, and the `dict` content type MLflow's tensor models take.

MLServer's MLflow runtime publishes a signature as the model's metadata: each column or tensor an input
(or output) with its datatype, shape and content type, and the request-level content type the model's
requests decode with (`pd` for a column signature, `np` for one unnamed tensor, `dict` for named
tensors, as MLflow's own schema enforcement reads them). Clients written against it (and V2 metadata
readers) see the same here. Columns of nested types (arrays, objects, maps, any) travel as BYTES marked
`pd_json`, as there; gpuserve's `pd` codec reads each element of such a column as JSON.

Imported only where MLflow is installed (gpuserve/runtimes_mlflow.py).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
from mlflow.types.schema import DataType, Schema, TensorSpec

from gpuserve.datatypes import from_numpy_dtype
from gpuserve.mlserver.codecs import (
    NumpyCodec,
    RequestCodec,
    get_decoded,
    has_decoded,
    register_request_codec,
)
from gpuserve.mlserver.types import InferenceRequest, InferenceResponse, MetadataTensor, Parameters

INPUT_PREFIX = "input-"  # the names MLServer gives a signature's unnamed tensors
OUTPUT_PREFIX = "output-"

# A column's MLflow type -> (V2 datatype, content type)
_COLUMNS = {
    DataType.boolean: ("BOOL", "np"),
    DataType.integer: ("INT32", "np"),
    DataType.long: ("INT64", "np"),
    DataType.float: ("FP32", "np"),
    DataType.double: ("FP64", "np"),
    DataType.string: ("BYTES", "str"),
    DataType.binary: ("BYTES", "base64"),
    DataType.datetime: ("BYTES", "datetime"),
}


def _datatype_and_content(spec: Any) -> tuple:
    if isinstance(spec, TensorSpec):
        return from_numpy_dtype(np.dtype(spec.type)), "np"
    found = _COLUMNS.get(spec.type) if isinstance(spec.type, DataType) else None
    return found if found is not None else ("BYTES", "pd_json")  # Array, Object, Map, AnyType


def metadata_tensors(schema: Optional[Schema], prefix: str) -> List[MetadataTensor]:
    """One metadata tensor per column or tensor of `schema`; a column is [-1, 1], as the `pd` codec sends it."""
    tensors = []
    for index, spec in enumerate(schema.inputs if schema is not None else ()):
        datatype, content_type = _datatype_and_content(spec)
        shape = list(spec.shape) if isinstance(spec, TensorSpec) else [-1, 1]
        tensors.append(MetadataTensor(name=spec.name or f"{prefix}{index}", datatype=datatype, shape=shape,
                                      parameters=Parameters(content_type=content_type)))
    return tensors


def request_content_type(schema: Optional[Schema]) -> Optional[str]:
    """How a request decodes by default for a model with this input schema (None: no signature)."""
    if schema is None:
        return None
    if schema.is_tensor_spec():
        return TensorDictCodec.ContentType if schema.has_input_names() else NumpyCodec.ContentType
    return "pd"


@register_request_codec
class TensorDictCodec(RequestCodec):
    """`dict`: a request as {input name: array}, a {name: array} answer as one output per entry."""

    ContentType = "dict"

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return isinstance(payload, dict) and bool(payload) and \
            all(isinstance(value, np.ndarray) for value in payload.values())

    @classmethod
    def encode_response(cls, model_name: str, payload: Dict[str, np.ndarray], model_version: Optional[str] = None,
                        **kwargs) -> InferenceResponse:
        outputs = [NumpyCodec.encode_output(name, value, **kwargs) for name, value in payload.items()]
        return InferenceResponse(model_name=model_name, model_version=model_version, outputs=outputs,
                                 parameters=Parameters(content_type=cls.ContentType))

    @classmethod
    def decode_response(cls, response: InferenceResponse) -> Dict[str, np.ndarray]:
        return {output.name: NumpyCodec.decode_output(output) for output in response.outputs}

    @classmethod
    def encode_request(cls, payload: Dict[str, np.ndarray], **kwargs) -> InferenceRequest:
        inputs = [NumpyCodec.encode_input(name, value, **kwargs) for name, value in payload.items()]
        return InferenceRequest(inputs=inputs, parameters=Parameters(content_type=cls.ContentType))

    @classmethod
    def decode_request(cls, request: InferenceRequest) -> Dict[str, Any]:
        """Each input as its own content type decoded it, else as an array (MLServer hands such an input's
        raw list through; an array is what an MLflow tensor model takes)."""
        return {tensor.name: get_decoded(tensor) if has_decoded(tensor) else NumpyCodec.decode_input(tensor)
                for tensor in request.inputs}
