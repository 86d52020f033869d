"""TensorFlow Serving's REST form of Classify and Regress: `{"signature_name", "context", "examples"}` in, the same
ClassificationRequest / RegressionRequest the gRPC service takes built from it, and `{"results": ...}` out, as
TFServing's REST handler does (its json_tensor.cc), so a script written against TFServing reads the same answers.

A feature's JSON value is one element or a list of them, all of one kind: a string or `{"b64": ...}` a bytes
value, a number written with a fraction or exponent a float, a whole number (or true/false) an int64. TFServing's
error words are kept, including their quoting of the request's JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any, Union

import numpy as np

from gpuserve.errors import InvalidInput
from gpuserve.server.grpc import tfserving_pb2 as pb

INT64_MAX, UINT64_MAX = (1 << 63) - 1, (1 << 64) - 1
KIND_WORDS = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64", None: "UNKNOWN"}


def _type(value: Any) -> str:
    """rapidjson's name of a JSON value's type, as TFServing's messages say it."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _quoted(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("Unable to base64 decode") from None


def _add(feature: pb.Feature, name: str, value: Any) -> None:
    """One JSON element into the feature; every element of a feature must be of its first one's kind."""
    def kind_is(wanted: str) -> None:
        kind = feature.WhichOneof("kind")
        if kind is not None and kind != wanted:
            raise InvalidInput(f"Unexpected element type in feature: {name} expecting type: {KIND_WORDS[kind]}")

    if isinstance(value, bool):
        kind_is("int64_list")
        feature.int64_list.value.append(int(value))
    elif isinstance(value, str):
        kind_is("bytes_list")
        feature.bytes_list.value.append(value.encode("utf-8"))
    elif _is_b64(value):
        kind_is("bytes_list")
        feature.bytes_list.value.append(_b64(value["b64"]))
    elif isinstance(value, float) or (isinstance(value, int) and value > UINT64_MAX):
        kind_is("float_list")
        feature.float_list.value.append(float(value))
    elif isinstance(value, int):
        kind_is("int64_list")
        if value > INT64_MAX:
            raise InvalidInput(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        if value < -INT64_MAX - 1:
            raise InvalidInput(f"Feature: {name} has element with unexpected JSON type: Number")
        feature.int64_list.value.append(value)
    else:
        raise InvalidInput(f"Feature: {name} has element with unexpected JSON type: {_type(value)}")


def _example(value: Any, example: pb.Example) -> None:
    if not isinstance(value, dict):
        raise InvalidInput(f"Example must be JSON object but got JSON {_type(value)}")
    for name, content in value.items():
        feature = example.features.feature[name]
        for element in content if isinstance(content, list) else [content]:
            _add(feature, name, element)


def fill_request(body: bytes, request: Union[pb.ClassificationRequest, pb.RegressionRequest]) -> None:
    """The request's signature and Input from TFServing's JSON; examples with a context become an
    example_list_with_context."""
    if not body.strip():
        raise InvalidInput("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"JSON Parse error: Invalid encoding in string. at offset: {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"JSON Parse error: {exc.msg} at offset: {exc.pos}") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"JSON Value: {_quoted(doc)} Is not object")
    if "signature_name" in doc:
        if not isinstance(doc["signature_name"], str):
            raise InvalidInput(f"JSON Value: {_quoted(doc)} not formatted correctly. 'signature_name' key must be "
                               "a string value.")
        request.model_spec.signature_name = doc["signature_name"]
    with_context = "context" in doc
    if with_context:
        _example(doc["context"], request.input.example_list_with_context.context)
    if "examples" not in doc:
        raise InvalidInput(f"JSON Value: {_quoted(doc)} When method is classify, key 'examples' is expected and "
                           "was not found")
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise InvalidInput(f"JSON Value: {_quoted(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise InvalidInput(f"JSON Value: {_quoted(doc)} 'examples' value is an empty array")
    into = request.input.example_list_with_context if with_context else request.input.example_list
    for value in examples:
        _example(value, into.examples.add())


def _decimal(value: float) -> Any:
    """A float32 as its shortest text reads back (TFServing's WriteDecimal), not float64's noise digits."""
    return float(str(np.float32(value))) if math.isfinite(value) else value


def classification_json(result: pb.ClassificationResult) -> dict:
    """{"results": [[[label, score], ...] per example]}."""
    if not result.classifications:
        raise InvalidInput("Cannot convert empty ClassificationResults to JSON")
    return {"results": [[[c.label, _decimal(c.score)] for c in row.classes] for row in result.classifications]}


def regression_json(result: pb.RegressionResult) -> dict:
    """{"results": [value per example]}."""
    if not result.regressions:
        raise InvalidInput("Cannot convert empty RegressionResults to JSON")
    return {"results": [_decimal(r.value) for r in result.regressions]}
