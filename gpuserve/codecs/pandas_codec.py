"""The `pd` content type: a DataFrame as a request or response with one tensor per column.

Tabular models (scikit-learn pipelines, gradient-boosted trees) take DataFrames whose columns keep
their own dtypes, which no single tensor can hold. Each column becomes a [rows, 1] tensor, as in
MLServer: numeric columns keep their dtype, text columns travel as BYTES marked `content_type: str`
so they come back as str. Each input's own content type decodes its column. A BYTES input without
one is left as its transport delivered it (str from JSON, bytes from binary), which is what
MLServer's JSON clients get. Multi-column tensors become columns of row arrays. A column whose rows are
objects (dicts, lists of different lengths, mixed values) travels as BYTES marked `pd_json`, one JSON text
a row, and such an input decodes back to those objects, as MLServer writes and reads them (MLflow models
with array or object columns take them so).

pandas is imported on first use, so `import gpuserve.codecs` stays cheap without it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import orjson

from gpuserve.codecs.base import (
    CONTENT_TYPE,
    RequestCodec,
    find_input_codec,
    register_request_codec,
    with_content_type,
)
from gpuserve.codecs.bytes_lists import bytes_tensor, decode_each, object_column
from gpuserve.codecs.string_codec import StringCodec
from gpuserve.datatypes import from_numpy_dtype
from gpuserve.errors import InvalidInput
from gpuserve.types import InferInput, InferOutput, InferRequest, InferResponse

if TYPE_CHECKING:
    import pandas as pd

# MLServer's content type of a column whose rows are objects, each sent as JSON text
JSON_CONTENT_TYPE = "pd_json"


def _pandas():
    try:
        import pandas  # paid by the first DataFrame only
    except ImportError:
        raise InvalidInput("content type 'pd' needs pandas; install gpuserve[pandas]") from None
    return pandas


def _is_dataframe(payload: Any) -> bool:
    pandas = sys.modules.get("pandas")  # no DataFrame can exist before pandas is imported
    return pandas is not None and isinstance(payload, pandas.DataFrame)


def _column_tensor(cls: type, name: str, series: "pd.Series", use_bytes: bool):
    pandas = _pandas()
    dtype = series.dtype
    rows = len(series)
    if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
        array = series.to_numpy()
    elif pandas.api.types.is_numeric_dtype(dtype) and hasattr(dtype, "numpy_dtype"):
        # Nullable extension dtypes (Int64, Float64, boolean): NA can only travel as NaN.
        target = np.dtype(dtype.numpy_dtype)
        missing = bool(series.isna().any())
        if missing and target.kind != "f":
            raise InvalidInput(f"column '{name}' ({dtype}) has missing values; only float columns can send "
                               f"them (as NaN)")
        array = series.to_numpy(dtype=target, na_value=np.nan) if missing else series.to_numpy(dtype=target)
    else:
        return _object_column_tensor(pandas, cls, name, series, use_bytes)
    return cls(name, [rows, 1], from_numpy_dtype(array.dtype), array.reshape(rows, 1))


def _object_column_tensor(pandas: Any, cls: type, name: str, series: "pd.Series", use_bytes: bool):
    rows = len(series)
    if series.isna().any():
        raise InvalidInput(f"column '{name}' ({series.dtype}) has missing values; only float columns can send "
                           f"them (as NaN)")
    kind = pandas.api.types.infer_dtype(series, skipna=False)
    if kind in ("string", "empty"):
        encode = StringCodec.encode_output if cls is InferOutput else StringCodec.encode_input
        return encode(name, series.tolist(), use_bytes=use_bytes)
    if kind == "bytes":
        return cls(name, [rows, 1], "BYTES", object_column(bytes(x) for x in series.tolist()))
    cells = series.tolist()
    if kind in ("integer", "floating", "boolean", "mixed-integer-float"):
        array = np.asarray(cells).reshape(rows, 1)
        if array.dtype.kind not in "biuf":
            raise InvalidInput(f"column '{name}': numbers do not fit a V2 numeric datatype")
        return cls(name, [rows, 1], from_numpy_dtype(array.dtype), array)
    if cells and all(isinstance(c, (list, tuple, np.ndarray)) for c in cells):
        try:
            array = np.stack([np.asarray(c) for c in cells])
        except ValueError:
            array = None  # rows of different lengths: JSON, below
        if array is not None and array.dtype.kind in "biuf":
            return cls(name, list(array.shape), from_numpy_dtype(array.dtype), array)
    return _json_column_tensor(cls, name, cells, kind)


def _json_column_tensor(cls: type, name: str, cells: list, kind: str):
    """Rows of objects (dicts, ragged or mixed lists): each one JSON text, marked `pd_json` (MLServer's)."""
    try:
        items = [orjson.dumps(cell, default=_jsonable, option=orjson.OPT_SERIALIZE_NUMPY).decode() for cell in cells]
    except TypeError as exc:
        raise InvalidInput(f"column '{name}' (holding {kind} values) cannot be encoded: {exc}; use numeric, bool, "
                           f"str, bytes or JSON-serializable columns") from None
    return bytes_tensor(cls, name, items, JSON_CONTENT_TYPE)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _frame_tensors(cls: type, payload: Any, use_bytes: bool, codec: str) -> list:
    if not _is_dataframe(payload):
        raise InvalidInput(f"content type '{codec}' encodes a pandas.DataFrame, got {type(payload).__name__}")
    names = [str(column) for column in payload.columns]
    if len(set(names)) != len(names):
        raise InvalidInput(f"DataFrame column names must be unique as strings, got {names}")
    return [_column_tensor(cls, name, payload.iloc[:, index], use_bytes) for index, name in enumerate(names)]


def _column_values(tensor: Any, is_output: bool) -> Any:
    content_type = tensor.parameters.get(CONTENT_TYPE)
    if content_type == JSON_CONTENT_TYPE:
        return decode_each(tensor, JSON_CONTENT_TYPE, orjson.loads, "JSON text")
    if content_type:
        codec = find_input_codec(content_type)
        if codec is None:
            raise InvalidInput(f"'{tensor.name}' names unknown content type {content_type!r}")
        values = codec.decode_output(tensor) if is_output else codec.decode_input(tensor)
    else:
        values = tensor.as_numpy()
    if isinstance(values, np.ndarray):
        if values.ndim == 0:
            raise InvalidInput(f"'{tensor.name}' has shape []; a DataFrame column needs a row dimension")
        if values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1):
            return values.reshape(-1)
        return list(values)
    values = list(values)
    rows = tensor.shape[0] if tensor.shape else len(values)
    if rows and len(values) != rows and len(values) % rows == 0:
        width = len(values) // rows  # a codec that flattens [N, k] gives N*k values: regroup as rows
        values = [values[i * width:(i + 1) * width] for i in range(rows)]
    return values


def _frame(tensors: list, is_output: bool) -> "pd.DataFrame":
    pandas = _pandas()
    columns: dict[str, Any] = {}
    rows: Optional[int] = None
    for tensor in tensors:
        if tensor.name in columns:
            raise InvalidInput(f"'{tensor.name}' appears twice; DataFrame columns must be unique")
        values = _column_values(tensor, is_output)
        if rows is None:
            rows = len(values)
        elif len(values) != rows:
            raise InvalidInput(f"'{tensor.name}' has {len(values)} rows but '{tensors[0].name}' has {rows}; "
                               f"DataFrame columns need equal row counts")
        columns[tensor.name] = values
    return pandas.DataFrame(columns)


@register_request_codec
class PandasCodec(RequestCodec):
    """A DataFrame as one tensor per column; `use_bytes=False` keeps text as str in the tensors."""

    ContentType = "pd"
    JsonContentType = "pd_json"  # a column of objects, one JSON text a row

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return _is_dataframe(payload)

    @classmethod
    def encode_response(cls, model_name: str, payload: "pd.DataFrame", model_version: Optional[str] = None,
                        use_bytes: bool = True, **kwargs) -> InferResponse:
        outputs = _frame_tensors(InferOutput, payload, use_bytes, cls.ContentType)
        return InferResponse(kwargs.get("response_id"), model_name, outputs, model_version=model_version,
                             parameters=with_content_type(kwargs.get("parameters"), cls.ContentType))

    @classmethod
    def decode_response(cls, response: InferResponse) -> "pd.DataFrame":
        return _frame(response.outputs, is_output=True)

    @classmethod
    def encode_request(cls, payload: "pd.DataFrame", use_bytes: bool = True, **kwargs) -> InferRequest:
        inputs = _frame_tensors(InferInput, payload, use_bytes, cls.ContentType)
        return InferRequest(kwargs.get("model_name", ""), inputs, request_id=kwargs.get("request_id"),
                            parameters=with_content_type(kwargs.get("parameters"), cls.ContentType))

    @classmethod
    def decode_request(cls, request: InferRequest) -> "pd.DataFrame":
        return _frame(request.inputs, is_output=False)
