"""TensorFlow Serving's gRPC services on gpuserve's gRPC port, beside the V2 service: PredictionService's Predict,
GetModelMetadata, Classify, Regress and MultiInference, ModelService's GetModelStatus and HandleReloadConfigRequest
(server/tfserving_api.py holds what they mean; server/tfserving_examples.py what the tf.Example ones mean,
server/tfserving_reload.py what a reload does).

Tensors arrive as TFServing's clients write them, `tensor_content` bytes (tf.make_tensor_proto) or typed
`*_val` fields (perf_analyzer, hand-built protos; fewer values than elements repeat the last, as TensorFlow
reads them), and leave in the typed fields, as TFServing answers by default, so both `tf.make_ndarray` and
code reading `outputs[...].float_val` work. HandleReloadConfigRequest swaps the served TFServing models
(server/tfserving_reload.py).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from gpuserve.datatypes import numpy_to_raw, raw_to_numpy, to_numpy_dtype
from gpuserve.engine.batcher import LONE_INLINE_OK
from gpuserve.errors import InvalidInput
from gpuserve.server import tfserving_api as api
from gpuserve.server import tfserving_examples as examples
from gpuserve.server.grpc import tfserving_pb2 as pb
from gpuserve.server.grpc.other_services import aio_handlers
from gpuserve.server.grpc.service import _guard, _headers
from gpuserve.server.restricted import restrict_servicer
from gpuserve.server.tfserving_reload import reload_config

# V2 datatype -> the TensorProto field its values go in
VALUE_FIELD = {"FP32": "float_val", "FP64": "double_val", "INT32": "int_val", "INT16": "int_val", "INT8": "int_val",
               "UINT8": "int_val", "UINT16": "int_val", "INT64": "int64_val", "BOOL": "bool_val",
               "BYTES": "string_val", "FP16": "half_val", "BF16": "half_val", "UINT32": "uint32_val",
               "UINT64": "uint64_val"}


def tensor_to_numpy(alias: str, tensor: pb.TensorProto) -> Tuple[str, np.ndarray]:
    """(V2 datatype, array) of a request's TensorProto; INVALID_ARGUMENT naming the alias when it cannot be."""
    datatype = api.V2_DTYPES.get(tensor.dtype)
    if datatype is None:
        name = pb.DataType.Name(tensor.dtype) if tensor.dtype in pb.DataType.values() else str(tensor.dtype)
        raise InvalidInput(f"tensor parsing error: {alias} (gpuserve does not serve {name} tensors)")
    if tensor.tensor_shape.unknown_rank:
        raise InvalidInput(f"tensor parsing error: {alias} (its shape has an unknown rank)")
    shape = [int(dim.size) for dim in tensor.tensor_shape.dim]
    if any(size < 0 for size in shape):
        raise InvalidInput(f"tensor parsing error: {alias} (shape {shape} has a negative size)")
    count = math.prod(shape)
    if tensor.tensor_content:
        if datatype == "BYTES":
            raise InvalidInput(f"tensor parsing error: {alias} (DT_STRING values go in string_val)")
        try:
            return datatype, raw_to_numpy(tensor.tensor_content, datatype, shape)
        except (InvalidInput, ValueError) as exc:
            raise InvalidInput(f"tensor parsing error: {alias} ({exc})") from None
    values = getattr(tensor, VALUE_FIELD[datatype])
    if len(values) > count:
        raise InvalidInput(f"tensor parsing error: {alias} ({len(values)} values for shape {shape})")
    if datatype == "BYTES":
        flat = np.empty(len(values), dtype=object)
        flat[:] = list(values)
    elif datatype == "FP16":
        flat = np.array(values, dtype=np.int32).astype(np.uint16).view(np.float16)
    elif datatype == "BF16":
        flat = (np.array(values, dtype=np.int32).astype(np.uint32) << 16).view(np.float32)
    else:
        flat = np.array(values, dtype=to_numpy_dtype(datatype))
    if len(flat) < count:  # TensorFlow's short form: the last value repeats, none means zeros
        fill = flat[-1] if len(flat) else (b"" if datatype == "BYTES" else 0)
        full = np.empty(count, dtype=flat.dtype)
        full[:len(flat)] = flat
        full[len(flat):] = fill
        flat = full
    return datatype, flat.reshape(shape)


def numpy_to_tensor(tensor: pb.TensorProto, datatype: str, array: np.ndarray) -> None:
    """Fill a response's TensorProto: dtype, shape, the values in their typed field."""
    if datatype not in VALUE_FIELD:
        raise InvalidInput(f"an output of datatype {datatype} has no TensorFlow type")
    array = np.asarray(array)
    tensor.dtype = api.TF_DTYPES[datatype]
    for size in array.shape:
        tensor.tensor_shape.dim.add(size=int(size))
    if datatype == "FP16":
        values = np.ascontiguousarray(array, dtype=np.float16).view(np.uint16)
    elif datatype == "BF16":
        values = np.frombuffer(numpy_to_raw(array, "BF16"), dtype=np.uint16)
    elif datatype == "BYTES":
        values = [e if isinstance(e, bytes) else str(e).encode("utf-8") for e in array.reshape(-1).tolist()]
        getattr(tensor, VALUE_FIELD[datatype]).extend(values)
        return
    else:
        values = array
    getattr(tensor, VALUE_FIELD[datatype]).extend(values.reshape(-1).tolist())


class TFServingServicer:
    """The served RPCs of both services, named as TFServing's."""

    def __init__(self, plane):
        self.plane = plane

    @_guard
    async def Predict(self, request: pb.PredictRequest, context) -> pb.PredictResponse:
        LONE_INLINE_OK.set(False)  # engine/batcher.py: as the V2 service's calls
        spec = request.model_spec
        model, version = api.servable(self.plane, spec.name, api.message_version(self.plane, spec))
        signature = api.check_signature(model, spec.signature_name)
        inputs = {alias: tensor_to_numpy(alias, tensor) for alias, tensor in request.inputs.items()}
        outputs = await api.predict(self.plane, model, version, inputs, request.output_filter, _headers(context),
                                    signature)
        answer = pb.PredictResponse()
        api.answer_spec(answer.model_spec, spec.name, version, signature)
        for alias, (datatype, array) in outputs.items():
            numpy_to_tensor(answer.outputs[alias], datatype, array)
        return answer

    @_guard
    async def Classify(self, request: pb.ClassificationRequest, context) -> pb.ClassificationResponse:
        return await examples.classify(self.plane, request)

    @_guard
    async def Regress(self, request: pb.RegressionRequest, context) -> pb.RegressionResponse:
        return await examples.regress(self.plane, request)

    @_guard
    async def MultiInference(self, request: pb.MultiInferenceRequest, context) -> pb.MultiInferenceResponse:
        return await examples.multi_inference(self.plane, request)

    @_guard
    async def GetModelMetadata(self, request: pb.GetModelMetadataRequest, context) -> pb.GetModelMetadataResponse:
        if not request.HasField("model_spec"):
            raise InvalidInput("Missing ModelSpec")
        api.check_metadata_fields(request.metadata_field)
        spec = request.model_spec
        model, version = api.servable(self.plane, spec.name, api.message_version(self.plane, spec))
        signatures = pb.SignatureDefMap()
        for key, signature in api.signature_def_map(self.plane, model, version)["signature_def"].items():
            entry = signatures.signature_def[key]
            entry.method_name = signature["method_name"]
            for side in ("inputs", "outputs"):
                for alias, info in signature[side].items():
                    _tensor_info(getattr(entry, side)[alias], info)
        answer = pb.GetModelMetadataResponse()
        answer.model_spec.name = spec.name
        if version is not None:
            answer.model_spec.version.value = version
        packed = answer.metadata["signature_def"]
        packed.type_url = api.SIGNATURE_DEF_MAP
        packed.value = signatures.SerializeToString()
        return answer

    @_guard
    async def GetModelStatus(self, request: pb.GetModelStatusRequest, context) -> pb.GetModelStatusResponse:
        if not request.HasField("model_spec"):
            raise InvalidInput("Missing ModelSpec")
        spec = request.model_spec
        answer = pb.GetModelStatusResponse()
        for entry in api.model_status(self.plane, spec.name, api.message_version(self.plane, spec)):
            status = answer.model_version_status.add(version=entry["version"], state=entry["state"])
            status.status.error_code = entry["error_code"]
            status.status.error_message = entry["error_message"]
        return answer

    @_guard
    async def HandleReloadConfigRequest(self, request: pb.ReloadConfigRequest, context) -> pb.ReloadConfigResponse:
        await reload_config(self.plane, configs_of(request.config))
        answer = pb.ReloadConfigResponse()
        answer.status.error_code = 0  # a failure is the call's status, as TFServing's (its message is never sent)
        return answer


def configs_of(config: pb.ModelServerConfig) -> Optional[List[Dict[str, Any]]]:
    """A ModelServerConfig's model_config_list in the form models.config's parser gives (gpuserve/tfserving_config.py);
    None when it holds no list."""
    if config.WhichOneof("config") != "model_config_list":
        return None
    found = []
    for entry in config.model_config_list.config:
        policy = entry.model_version_policy
        kind = policy.WhichOneof("policy_choice")
        chosen: Dict[str, Any] = {}
        if kind == "latest":
            chosen = {"latest": {"num_versions": policy.latest.num_versions}}
        elif kind == "all":
            chosen = {"all": {}}
        elif kind == "specific":
            chosen = {"specific": {"versions": list(policy.specific.versions)}}
        found.append({"name": entry.name, "base_path": entry.base_path, "model_platform": entry.model_platform,
                      "model_type": entry.model_type, "model_version_policy": chosen,
                      "version_labels": dict(entry.version_labels)})
    return found


def _tensor_info(info: pb.TensorInfo, described: dict) -> None:
    info.name = described["name"]
    info.dtype = pb.DataType.Value(described["dtype"])
    shape = described["tensor_shape"]
    info.tensor_shape.unknown_rank = shape["unknown_rank"]
    for dim in shape["dim"]:
        info.tensor_shape.dim.add(size=int(dim["size"]))


def rpcs():
    """(service, name, request class or None for raw bytes, response class or None, streaming) of every RPC."""
    for service in ("PredictionService", "ModelService"):
        for method in pb.DESCRIPTOR.services_by_name[service].methods:
            yield (f"tensorflow.serving.{service}", method.name, getattr(pb, method.input_type.name),
                   getattr(pb, method.output_type.name), False)


def served_names():
    return [name for _, name, *_ in rpcs()]


def restricted_servicer(plane, settings) -> TFServingServicer:
    """The servicer both transports serve, its RPCs in Triton's restricted groups (server/restricted.py)
    checked as the V2 service's: Predict is inference, GetModelMetadata metadata, GetModelStatus health."""
    return restrict_servicer(TFServingServicer(plane), settings.grpc_restricted_protocol, served_names())


def handlers(servicer: TFServingServicer):
    """The two services for grpc.aio."""
    return aio_handlers(servicer, rpcs())
