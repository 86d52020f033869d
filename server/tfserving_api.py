"""TensorFlow Serving's API over the data plane, free of any transport: which servable a ModelSpec names, its
signature as TFServing describes it, its versions' states, and one Predict.

KServe's TensorFlow runtime is TFServing, so users who come from it (and perf_analyzer's `--service-kind
tfserving`) speak this API to any served model, not only TensorFlow ones: a model's V2 tensors are its
signature's inputs and outputs (a SavedModel's are its signature's keys already, backends/tensorflow.py). The
batched signature is the one a TensorFlow model serves, else `serving_default`; a SavedModel's other signatures
are listed and answer too, unbatched (gpuserve/runtimes_tensorflow.py). Errors carry TFServing's words
and codes, so a client matching them (a missing servable is NOT_FOUND "Servable not found for request: ...")
keeps working. A signature's method_name is the SavedModel's own (saved_model.pb), so a TF1 export's classify and
regress signatures are listed as such; server/tfserving_examples.py serves them. server/grpc/tfserving.py puts
this on the gRPC port; the REST side's metadata route uses `signature_def_map` as JSON.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from gpuserve.dataplane import DataPlane
from gpuserve.errors import GpuserveError, InvalidInput, ModelNotFound
from gpuserve.tfserving_config import version_labels
from gpuserve.types import InferInput, InferRequest, RequestedOutput

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
SIGNATURE_DEF_MAP = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
# V2 datatype -> TensorFlow DataType (tensorflow/core/framework/types.proto)
TF_DTYPES = {"FP32": 1, "FP64": 2, "INT32": 3, "UINT8": 4, "INT16": 5, "INT8": 6, "BYTES": 7, "INT64": 9, "BOOL": 10,
             "BF16": 14, "UINT16": 17, "FP16": 19, "UINT32": 22, "UINT64": 23}
V2_DTYPES = {number: name for name, number in TF_DTYPES.items()}
TF_DTYPE_NAMES = {"FP32": "DT_FLOAT", "FP64": "DT_DOUBLE", "INT32": "DT_INT32", "UINT8": "DT_UINT8",
                  "INT16": "DT_INT16", "INT8": "DT_INT8", "BYTES": "DT_STRING", "INT64": "DT_INT64", "BOOL": "DT_BOOL",
                  "BF16": "DT_BFLOAT16", "UINT16": "DT_UINT16", "FP16": "DT_HALF", "UINT32": "DT_UINT32",
                  "UINT64": "DT_UINT64"}
# ModelVersionStatus.State
START, LOADING, AVAILABLE, END = 10, 20, 30, 50


class FailedPrecondition(GpuserveError):
    """TFServing's answer to a signature the model does not have."""

    http, grpc = 400, "FAILED_PRECONDITION"


class ServableNotFound(ModelNotFound):
    def __init__(self, name: str, version: Optional[int]):
        wanted = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
        super().__init__(name, None if version is None else str(version),
                         reason=f"Servable not found for request: {wanted}")


def spec_version(plane: DataPlane, name: str, version: Optional[int], label: str) -> Optional[int]:
    """The version a ModelSpec names: its number, or its label's version (the labels of a models.config,
    gpuserve/tfserving_config.py); a label that is a version number (what perf_analyzer's `-x` sends) names that
    version."""
    if label:
        if label.isdigit():
            return int(label)
        labels = {}
        for model in plane.repository.versions(name).values():
            labels.update(version_labels(model))
        if label not in labels:
            raise InvalidInput(f"Unrecognized servable version label: {label}")
        return labels[label]
    return version


def message_version(plane: DataPlane, spec) -> Optional[int]:
    """`spec_version` of a ModelSpec message (its `version` wrapper set or not, its `version_label`)."""
    return spec_version(plane, spec.name, spec.version.value if spec.HasField("version") else None,
                        spec.version_label)


def answer_spec(answer, name: str, version: Optional[int], signature: str) -> None:
    """An answer's ModelSpec message as TFServing's MakeModelSpec fills it: `serving_default` for no signature."""
    answer.name = name
    if version is not None:
        answer.version.value = version
    answer.signature_name = signature or DEFAULT_SIGNATURE


def servable(plane: DataPlane, name: str, version: Optional[int]):
    """(the model a ModelSpec names, its version number or None); NOT_FOUND in TFServing's words when no ready
    servable answers it."""
    if not name:
        raise InvalidInput("Missing ModelSpec")
    try:
        model = plane.repository.resolve(name, None if version is None else str(version))
    except GpuserveError:
        raise ServableNotFound(name, version) from None
    if not getattr(model, "ready", False):
        raise ServableNotFound(name, version)
    number = getattr(model, "version", None)
    number = int(number) if number is not None and str(number).isdigit() else version
    return model, number


def served_signature(model) -> str:
    return getattr(getattr(model, "backend", None), "signature", None) or DEFAULT_SIGNATURE


def other_signatures(model) -> Dict[str, dict]:
    """A TensorFlow SavedModel's signatures besides the served one (metadata-shaped), else none."""
    found = getattr(model, "tfserving_signatures", None)
    return found() if found is not None else {}


def check_signature(model, wanted: str) -> str:
    name = served_signature(model)
    if wanted and wanted != name and wanted not in other_signatures(model):
        raise FailedPrecondition(f'Serving signature key "{wanted}" not found.')
    return wanted or name


def signature_defs(plane: DataPlane, model, version: Optional[int]) -> Dict[str, dict]:
    """Each signature's {"method_name", "inputs": {key: DataType number}, "outputs": {...}}: a SavedModel's as its
    saved_model.pb holds them (TF1 exports have classify and regress signatures), any other model's one
    signature a predict one over its V2 tensors."""
    found = getattr(model, "tfserving_signature_defs", None)
    defs = found() if found is not None else {}
    if defs:
        return defs
    meta = plane.model_metadata(model.name, None if version is None else str(version))
    return {served_signature(model): {
        "method_name": PREDICT_METHOD,
        "inputs": {t["name"]: TF_DTYPES.get(t.get("datatype"), 0) for t in meta.get("inputs", [])},
        "outputs": {t["name"]: TF_DTYPES.get(t.get("datatype"), 0) for t in meta.get("outputs", [])}}}


def _tensor_info(tensor: dict) -> dict:
    shape = tensor.get("shape")
    known = isinstance(shape, list)
    return {"dtype": TF_DTYPE_NAMES.get(tensor.get("datatype"), "DT_INVALID"),
            "tensor_shape": {"dim": [{"size": str(int(d)), "name": ""} for d in (shape if known else [])],
                             "unknown_rank": not known},
            "name": tensor["name"]}


def signature_def_map(plane: DataPlane, model, version: Optional[int]) -> dict:
    """The model's SignatureDefMap as TFServing's REST writes it (protobuf's JSON form, int64 as text)."""
    signatures = {served_signature(model): plane.model_metadata(model.name, None if version is None else str(version)),
                  **other_signatures(model)}
    methods = {name: sig.get("method_name") for name, sig in signature_defs(plane, model, version).items()}
    return {"signature_def": {name: {
        "inputs": {t["name"]: _tensor_info(t) for t in meta.get("inputs", [])},
        "outputs": {t["name"]: _tensor_info(t) for t in meta.get("outputs", [])},
        "method_name": methods.get(name) or PREDICT_METHOD} for name, meta in sorted(signatures.items())}}


def check_metadata_fields(fields) -> None:
    if not len(fields):
        raise InvalidInput("GetModelMetadataRequest must specify at least one metadata_field")
    for field in fields:
        if field != "signature_def":
            raise InvalidInput(f"Metadata field {field} is not supported")


def model_status(plane: DataPlane, name: str, version: Optional[int]) -> List[dict]:
    """Each version's {version, state, error_code, error_message}: AVAILABLE when ready, LOADING while the server
    starts, END with the reason when its load failed. NOT_FOUND as TFServing words it."""
    if not name:
        raise InvalidInput("Missing ModelSpec")
    found = []
    for number, model in plane.repository.versions(name).items():
        number = int(number) if number is not None and str(number).isdigit() else 0
        if version is not None and number != version and number != 0:
            continue
        if model.ready:
            found.append({"version": number, "state": AVAILABLE, "error_code": 0, "error_message": ""})
        elif not getattr(model, "reason", "") and not plane.started:
            found.append({"version": number, "state": LOADING, "error_code": 0, "error_message": ""})
        else:
            found.append({"version": number, "state": END, "error_code": 2,  # UNKNOWN, as TFServing's failed load
                          "error_message": getattr(model, "reason", "") or "not loaded"})
    if not found:
        raise ModelNotFound(name, reason=f"Could not find version {version} of model {name}" if version is not None
                            else f"Could not find any versions of model {name}")
    return sorted(found, key=lambda entry: -entry["version"])


def _check_names(meta: dict, inputs: Dict[str, Any], output_filter) -> Optional[List[RequestedOutput]]:
    """TFServing's checks of a request's aliases against the signature, in its words."""
    expected = sorted(t["name"] for t in meta.get("inputs", []))
    given = sorted(inputs)
    if len(given) != len(expected):
        extra = sorted(set(given) - set(expected))
        missing = sorted(set(expected) - set(given))
        raise InvalidInput(f"input size does not match signature: {len(given)}!={len(expected)} "
                           f"len({{{','.join(given)}}}) != len({{{','.join(expected)}}}). "
                           f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}.")
    for alias in given:
        if alias not in expected:
            raise InvalidInput(f"input tensor alias not found in signature: {alias}. Inputs expected to be in "
                               f"the set {{{','.join(expected)}}}.")
    if not len(output_filter):
        return None
    outputs = sorted(t["name"] for t in meta.get("outputs", []))
    seen = []
    for alias in output_filter:
        if alias not in outputs:
            raise InvalidInput(f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                               f"the set {{{','.join(outputs)}}}.")
        if alias in seen:
            raise InvalidInput(f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return [RequestedOutput(alias) for alias in seen]


async def predict(plane: DataPlane, model, version: Optional[int], inputs: Dict[str, Tuple[str, np.ndarray]],
                  output_filter, headers: Optional[Dict[str, str]] = None,
                  signature: str = "") -> Dict[str, Tuple[str, np.ndarray]]:
    """One Predict through the data plane (batched, counted in statistics as any request): inputs and outputs by
    alias, each (V2 datatype, array). Another signature of a SavedModel runs on its own (unbatched)."""
    others = other_signatures(model) if signature and signature != served_signature(model) else {}
    if signature in others:
        meta = others[signature]
        requested = _check_names(meta, inputs, output_filter)
        names = [r.name for r in requested] if requested else [t["name"] for t in meta["outputs"]]
        kinds = {t["name"]: t["datatype"] for t in meta["outputs"]}
        arrays = await model.tfserving_predict(signature, {n: array for n, (_, array) in inputs.items()}, names)
        return {name: (kinds[name], arrays[name]) for name in names}
    meta = plane.model_metadata(model.name, None if version is None else str(version))
    requested = _check_names(meta, inputs, output_filter)
    request = InferRequest(model.name, [InferInput(name, list(array.shape), datatype, array)
                                        for name, (datatype, array) in inputs.items()],
                           request_outputs=requested, model_version=None if version is None else str(version))
    response, _ = await plane.infer(request, headers or {})
    if hasattr(response, "__aiter__"):
        raise InvalidInput(f"model '{model.name}' is decoupled (it answers a stream): TensorFlow Serving's Predict "
                           "has one response; use the V2 ModelStreamInfer")
    return {output.name: (output.datatype, output.as_numpy()) for output in response.outputs}
