"""TorchServe's gRPC services on gpuserve's gRPC port, beside the V2 service: the inference API's Ping,
Predictions and StreamPredictions, and the management API's DescribeModel and ListModels (server/torchserve_api.py
holds what they mean, shared with REST).

A PredictionsRequest's `input` map is the handler's entry, a key per input with its bytes, as TorchServe's frontend
hands it over; the answer is the handler's item as bytes. Errors are TorchServe's: a model or version it cannot
find is INTERNAL, a failed batch the code of its HTTP status (503 UNAVAILABLE, 507 RESOURCE_EXHAUSTED), the
details TorchServe's message and, on the next line, the exception it names. StreamPredictions sends a handler's
intermediate answers and then its final one (once, for a handler that sends none). StreamPredictions2 (sequences)
answers UNIMPLEMENTED. The management writes (RegisterModel, ScaleWorker, SetDefault, UnregisterModel) are
server/torchserve_manage.py's, with ManagementImpl's codes: register and unregister PERMISSION_DENIED while the model
API is off.
"""

from __future__ import annotations

import json

import grpc

from gpuserve.server import torchserve_api as api, torchserve_manage as manage
from gpuserve.server.grpc import torchserve_pb2 as pb
from gpuserve.server.grpc.other_services import aio_handlers
from gpuserve.server.grpc.service import _guard
from gpuserve.server.restricted import restrict_servicer

INFERENCE_SERVICE = "org.pytorch.serve.grpc.inference.InferenceAPIsService"
MANAGEMENT_SERVICE = "org.pytorch.serve.grpc.management.ManagementAPIsService"
# (service, name, request class, response class, server streaming); a None request class takes raw bytes
RPCS = ((INFERENCE_SERVICE, "Ping", pb.Empty, pb.TorchServeHealthResponse, False),
        (INFERENCE_SERVICE, "Predictions", pb.PredictionsRequest, pb.PredictionResponse, False),
        (INFERENCE_SERVICE, "StreamPredictions", pb.PredictionsRequest, pb.PredictionResponse, True),
        (MANAGEMENT_SERVICE, "DescribeModel", pb.DescribeModelRequest, pb.ManagementResponse, False),
        (MANAGEMENT_SERVICE, "ListModels", pb.ListModelsRequest, pb.ManagementResponse, False),
        (MANAGEMENT_SERVICE, "RegisterModel", pb.RegisterModelRequest, pb.ManagementResponse, False),
        (MANAGEMENT_SERVICE, "ScaleWorker", pb.ScaleWorkerRequest, pb.ManagementResponse, False),
        (MANAGEMENT_SERVICE, "SetDefault", pb.SetDefaultRequest, pb.ManagementResponse, False),
        (MANAGEMENT_SERVICE, "UnregisterModel", pb.UnregisterModelRequest, pb.ManagementResponse, False))
# the Java exception TorchServe names after its message (InferenceImpl / GRPCJob)
_NAMED = {"ModelNotFoundException": "org.pytorch.serve.archive.model.ModelNotFoundException",
          "ModelVersionNotFoundException": "org.pytorch.serve.archive.model.ModelVersionNotFoundException"}
# the management writes' errors (ManagementImpl): the code, and the package of the exception named ("": one it
# lets escape, which grpc-java answers UNKNOWN without details: seen from TorchServe 0.12 for a conflict)
_WRITE_ERRORS = {"ModelNotFoundException": (grpc.StatusCode.NOT_FOUND, "archive.model"),
                 "ModelVersionNotFoundException": (grpc.StatusCode.NOT_FOUND, "archive.model"),
                 "InvalidModelException": (grpc.StatusCode.INVALID_ARGUMENT, "archive.model"),
                 "DownloadArchiveException": (grpc.StatusCode.INVALID_ARGUMENT, "archive"),
                 "BadRequestException": (grpc.StatusCode.INVALID_ARGUMENT, "http"),
                 "InternalServerException": (grpc.StatusCode.INTERNAL, "http"),
                 "ConflictStatusException": (grpc.StatusCode.UNKNOWN, ""),
                 "InvalidModelVersionException": (grpc.StatusCode.UNKNOWN, "")}
# TorchServe's GRPCUtils: an HTTP status's gRPC code
_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
          403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND, 409: grpc.StatusCode.ABORTED,
          413: grpc.StatusCode.RESOURCE_EXHAUSTED, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
          416: grpc.StatusCode.OUT_OF_RANGE, 499: grpc.StatusCode.CANCELLED, 501: grpc.StatusCode.UNIMPLEMENTED,
          503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED}


def http_code(status: int) -> grpc.StatusCode:
    if status in _CODES:
        return _CODES[status]
    return grpc.StatusCode.FAILED_PRECONDITION if 400 <= status < 500 else grpc.StatusCode.INTERNAL


class TorchServeServicer:
    def __init__(self, plane):
        self.plane = plane

    @_guard
    async def Ping(self, request, context) -> pb.TorchServeHealthResponse:
        healthy = self.plane.live()
        status = {"status": "Healthy" if healthy else "Unhealthy"}
        return pb.TorchServeHealthResponse(health=json.dumps(status, indent=2))

    async def _predict(self, request: pb.PredictionsRequest, context, streaming: bool = False):
        """The answer (a PredictionResponse), or with `streaming` an async iterator of the handler's intermediate
        answers and its final one when it sent any."""
        if not request.model_name:
            await context.abort(grpc.StatusCode.INTERNAL, "Parameter model_name is required.\nBadRequestException.()")
        entry = {key: bytearray(value) for key, value in request.input.items()}
        try:
            if streaming:
                parts, found = await api.streamed(self.plane, request.model_name, request.model_version or None,
                                                  entry, rest=False)
                if parts is not None:
                    return parts
            else:
                found = await api.answer(self.plane, request.model_name, request.model_version or None, entry,
                                         rest=False)
            if found.error is None:
                return pb.PredictionResponse(prediction=api.encoded(found))
        except api.TorchServeError as exc:
            if exc.kind in _NAMED:  # found no model or version
                await context.abort(grpc.StatusCode.INTERNAL, f"{exc.message}\n{_NAMED[exc.kind]}")
            if exc.kind == "ServiceUnavailableException":  # no worker: TorchServe's failed addJob
                await context.abort(grpc.StatusCode.INTERNAL, f"{exc.message}\nInternalServerException.()")
            await context.abort(http_code(exc.code), f"{exc.message}\n{exc.kind}.()")
        await context.abort(http_code(found.status), f"{found.error}\norg.pytorch.serve.http.InternalServerException")

    @_guard
    async def Predictions(self, request: pb.PredictionsRequest, context) -> pb.PredictionResponse:
        return await self._predict(request, context)

    async def _stream_start(self, request: pb.PredictionsRequest, context):
        return await self._predict(request, context, streaming=True)

    _stream_start.__name__ = "StreamPredictions"  # the guard counts it under the RPC's name
    _stream_start = _guard(_stream_start)

    async def StreamPredictions(self, request, context):
        """The handler's intermediate answers (send_intermediate_predict_response), then its final one; one
        answer from a handler that sends none. grpc.aio hands a server-streaming method its request; the native
        transport hands every streaming method its requests as a stream, of which this takes the one."""
        if hasattr(request, "__aiter__"):
            async for first in request:
                request = first
                break
            else:
                return
        answer = await self._stream_start(request, context)
        if isinstance(answer, pb.PredictionResponse):
            yield answer
            return
        try:
            async for part in answer:
                yield pb.PredictionResponse(prediction=part)
        finally:  # a client that left mid-stream: the handler's call is let go and its channel closed now
            await answer.aclose()

    @_guard
    async def DescribeModel(self, request: pb.DescribeModelRequest, context) -> pb.ManagementResponse:
        try:
            described = api.describe(self.plane, request.model_name, request.model_version or None)
        except api.TorchServeError as exc:  # TorchServe names the exception on the next line, as Predictions does
            await context.abort(grpc.StatusCode.NOT_FOUND, f"{exc.message}\n{_NAMED.get(exc.kind, exc.kind)}")
        return pb.ManagementResponse(msg=json.dumps(described, indent=2))

    @_guard
    async def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ManagementResponse:
        """TorchServe's paging (torchserve_api.list_models), an unset `limit` (proto3's 0) read as REST's default."""
        page = api.list_models(self.plane, int(request.limit) or 100, int(request.next_page_token))
        return pb.ManagementResponse(msg=json.dumps(page, indent=2))


    async def _write(self, context, work) -> pb.ManagementResponse:
        """A management write's answer: its StatusResponse text, or its error as TorchServe's ManagementImpl."""
        try:
            done = await work
        except api.TorchServeError as exc:
            if exc.kind == "MethodNotAllowedException":  # register or unregister with the model API off
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"{manage.DISABLED}\norg.pytorch.serve.archive.model.ModelException")
            code, package = _WRITE_ERRORS.get(exc.kind, (http_code(exc.code), "http"))
            if not package:  # an exception ManagementImpl does not catch: gRPC's bare UNKNOWN, no details
                await context.abort(code, "")
            await context.abort(code, f"{exc.message}\norg.pytorch.serve.{package}.{exc.kind}")
        return pb.ManagementResponse(msg=done.message)

    @_guard
    async def RegisterModel(self, request: pb.RegisterModelRequest, context) -> pb.ManagementResponse:
        """Proto3 leaves unset fields 0 or "": read as absent (TorchServe's GRPCUtils); `synchronous` false unless
        set."""
        params = {f.name: v for f, v in request.ListFields()}
        params["synchronous"] = request.synchronous
        return await self._write(context, manage.register(self.plane, params))

    @_guard
    async def ScaleWorker(self, request: pb.ScaleWorkerRequest, context) -> pb.ManagementResponse:
        least = request.min_worker or 1
        return await self._write(context, manage.scale(self.plane, request.model_name, request.model_version or None,
                                                       least, request.max_worker or least, request.synchronous))

    @_guard
    async def SetDefault(self, request: pb.SetDefaultRequest, context) -> pb.ManagementResponse:
        return await self._write(context, manage.set_default(self.plane, request.model_name, request.model_version))

    @_guard
    async def UnregisterModel(self, request: pb.UnregisterModelRequest, context) -> pb.ManagementResponse:
        return await self._write(context, manage.unregister(self.plane, request.model_name,
                                                            request.model_version or None))


def rpcs():
    """(service, name, request class or None, response class or None, server streaming) of every RPC."""
    return RPCS


def served_names():
    return [name for _, name, *_ in RPCS]


def restricted_servicer(plane, settings) -> TorchServeServicer:
    """Both transports' servicer, its RPCs in Triton's restricted groups as the V2 service's (server/restricted.py)."""
    return restrict_servicer(TorchServeServicer(plane), settings.grpc_restricted_protocol, served_names())


def handlers(servicer: TorchServeServicer):
    """The two services for grpc.aio."""
    return aio_handlers(servicer, RPCS)
