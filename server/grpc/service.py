"""`inference.GRPCInferenceService` on grpc.aio: a thin servicer over the DataPlane.

Each RPC decodes its message, calls the data plane, encodes the answer. Every exception leaves
through the one error table (`gpuserve.errors.status_of`), so a bad input is INVALID_ARGUMENT, an
unknown model NOT_FOUND, and nothing is ever UNKNOWN. System shared memory, trace and log settings
share their state with REST through the data plane, CUDA shared memory too (registration opens the client's
IPC handle where CUDA is usable, else fails with Triton's words). TensorFlow Serving's and TorchServe's
services are served beside this one (tfserving.py, torchserve.py).

The handlers are registered from the service descriptor with grpc's generic handler API, so the
server does not depend on the grpcio version that generated inference_pb2_grpc.py.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from typing import AsyncIterator, Dict, Optional, Tuple

import grpc

from gpuserve.dataplane import STREAMING, DataPlane
from gpuserve.response_stream import SEND_ORDER, SendOrder
from gpuserve.load_override import load_parameters
from gpuserve.engine.batcher import LONE_INLINE_OK
from gpuserve.errors import (GpuserveError, InvalidInput, InvalidSettings, ModelNotFound, cancelled_here, escaped,
                             status_of, words_of)
from gpuserve.settings import ServerSettings
from gpuserve.server.grpc import convert, debug_delays, tls
from gpuserve.server.grpc import inference_pb2 as pb
from gpuserve.server.grpc.mlserver_stream import mlserver_stream, mlserver_streams
from gpuserve.server.grpc.model_repository import repository_handler, repository_rpcs
from gpuserve.server.restricted import grpc_rules, restrict_method, restrict_servicer

logger = logging.getLogger("gpuserve")

SERVICE = "inference.GRPCInferenceService"
STREAM_IN_FLIGHT = 256  # requests of one stream running at once; the reader waits beyond that


def _abort_args(exc: BaseException, log: bool = True) -> Tuple[grpc.StatusCode, str]:
    """The status and details a failed call ends with, logged as REST logs its refusals (server/rest/common.py),
    so a refused call leaves the same line in the log whichever protocol carried it. A stream's error
    responses (`log=False`) are answers the stream goes on after, often a model's own: logged only when
    unexpected."""
    status, name = status_of(exc)
    details = words_of(exc) or type(exc).__name__
    if not isinstance(exc, GpuserveError):
        logger.exception("gRPC request failed", exc_info=exc)
    elif log and status >= 500:
        logger.error("gRPC request failed with %s: %s", name, details)
    elif log:
        logger.warning("gRPC request rejected with %s: %s", name, details)
    return grpc.StatusCode[name], details


def _guard(method):
    """Run a unary handler; turn any exception into its table status with the message as details."""

    name = method.__name__

    @functools.wraps(method)
    async def guarded(self, request, context):
        start = time.perf_counter()
        code = "OK"
        self.plane.transport_metrics.start_grpc(name)
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            code = "ABORTED"
            raise
        except Exception as exc:
            status, details = _abort_args(exc)
            code = status.name
            await context.abort(status, details)
        except BaseException as exc:
            if cancelled_here(exc):
                raise
            status, details = _abort_args(escaped(exc))  # model code's sys.exit() and the like: INTERNAL
            code = status.name
            await context.abort(status, details)
        finally:
            self.plane.transport_metrics.observe_grpc(name, code, time.perf_counter() - start)

    return guarded


def _headers(context) -> Dict[str, str]:
    return {key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}


def _version(text: str) -> Optional[str]:
    return text or None


class InferenceServicer:
    """The RPCs of GRPCInferenceService, named as in inference.proto."""

    def __init__(self, plane: DataPlane):
        self.plane = plane
        self.stream_response_delay_s = debug_delays.stream_response_delay_s()  # a Triton test hook; 0 when unset

    # health -----------------------------------------------------------------------------------
    @_guard
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=self.plane.live())

    @_guard
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.plane.ready())

    @_guard
    async def ModelReady(self, request, context):
        try:
            ready = await self.plane.model_healthy(request.name, _version(request.version))
        except ModelNotFound:  # as Triton: an unknown model or version is simply not ready
            ready = False
        return pb.ModelReadyResponse(ready=ready)

    # metadata ---------------------------------------------------------------------------------
    @_guard
    async def ServerMetadata(self, request, context):
        meta = self.plane.metadata()
        return pb.ServerMetadataResponse(name=meta["name"], version=meta["version"], extensions=meta["extensions"])

    @_guard
    async def ModelMetadata(self, request, context):
        return convert.metadata_to_proto(self.plane.model_metadata(request.name, _version(request.version)))

    @_guard
    async def ModelConfig(self, request, context):
        config = self.plane.model_config(request.name, _version(request.version))
        return pb.ModelConfigResponse(config=convert.config_to_proto(config))

    # inference --------------------------------------------------------------------------------
    async def _infer(self, request: pb.ModelInferRequest, headers: Dict[str, str], context=None, trace=None,
                     views: bool = False) -> pb.ModelInferResponse:
        LONE_INLINE_OK.set(False)  # engine/batcher.py: grpc.aio's one request per loop turn
        if not len(request.inputs) and request.model_name:  # as Triton: an unknown model is NOT_FOUND first
            self.plane.repository.resolve(request.model_name, request.model_version or None)
        if trace is None and self.plane.runtime_settings.tracer.on:  # Triton's traces (gpuserve/tracing.py)
            trace = self.plane.runtime_settings.tracer.sample(request.model_name, headers)
            if trace is not None:
                return await self._traced(trace, request, headers, context, views)
        infer_request = convert.request_from_proto(request)
        infer_request.trace = trace
        try:
            response, response_headers = await self.plane.infer(infer_request, headers)
        except ModelNotFound:
            version = request.model_version
            if version and not (version.isdigit() and int(version) > 0):  # as Triton (string versions that
                details = "" if version.lstrip("+-")[:1].isdigit() else " (details: stol)"  # std::stol's throw
                raise InvalidInput(  # exist, as MLServer allows, are found above)
                    f"failed to get model version from specified version string '{version}'{details}, "
                    "version should be an integral value > 0") from None
            raise
        if response_headers and context is not None:  # a model's response headers travel as trailing metadata
            context.set_trailing_metadata(tuple((str(k).lower(), str(v)) for k, v in response_headers.items()))
        if infer_request.cache_key is not None and hasattr(context, "cache_entry"):  # the native transport's
            context.cache_entry = (infer_request.cache_key, request.model_name, request.model_version or None)
        typed = convert.typed_request(request) and not convert.triton_model(
            self.plane.repository.get_model(request.model_name, request.model_version or None))
        if hasattr(response, "__aiter__") and STREAMING.get():  # a decoupled model's responses, on a stream
            return _decoupled_answers(response, infer_request, request, typed)
        return convert.response_to_proto(response, infer_request, typed, views)

    async def _traced(self, trace, request: pb.ModelInferRequest, headers: Dict[str, str], context=None,
                      views: bool = False):
        """`_infer` for a sampled request: its trace gets the gRPC points in time and ends here."""
        trace.stamp("GRPC_WAITREAD_START")
        trace.stamp("GRPC_WAITREAD_END")
        try:
            answer = await self._infer(request, headers, context, trace, views)
        except BaseException:
            trace.end()
            raise
        if hasattr(answer, "__aiter__"):  # a decoupled model's responses on a stream: traced as they leave
            return _TracedAnswers(answer, trace)
        trace.stamp("GRPC_SEND_START")
        trace.stamp("GRPC_SEND_END")
        trace.end()
        return answer

    @_guard
    async def ModelInfer(self, request, context):
        # the native transport writes an answer's large outputs from the arrays (server/grpc/large.py)
        return await self._infer(request, _headers(context), context, views=getattr(context, "raw_views", False))

    async def ModelStreamInfer(self, requests: AsyncIterator[pb.ModelInferRequest], context) -> AsyncIterator:
        """Triton's stream (below), or MLServer's for an MLServer runtime that streams (mlserver_stream.py),
        as the first request's model decides."""
        requests = requests.__aiter__()
        try:
            first = await requests.__anext__()
        except StopAsyncIteration:
            return
        if mlserver_streams(self.plane, first):
            async for answer in mlserver_stream(self.plane, first, requests, _headers(context), context, _abort_args):
                yield answer
            return
        async for answer in self._triton_stream(_chained(first, requests), context):
            yield answer

    async def _triton_stream(self, requests: AsyncIterator[pb.ModelInferRequest], context
                             ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests of one stream run concurrently (so they can share batches). A one-answer request's
        answer leaves after those of the requests before it; a decoupled model's responses leave as it
        sends them, interleaved with other requests' (as Triton's stream delivers them: qa's
        L0_decoupled test_response_order). A failed request is answered with `error_message`; the stream
        goes on."""
        headers = _headers(context)
        STREAMING.set(True)  # the requests read below (tasks copy this context) may get many responses
        order = SendOrder()  # decoupled responses of its requests leave in the order the models sent them
        slots = asyncio.Semaphore(STREAM_IN_FLIGHT)
        out: asyncio.Queue = asyncio.Queue()  # answers to write, in writing order, then `done`
        room = asyncio.Semaphore(STREAM_IN_FLIGHT)  # answers waiting there: a slow client slows the models
        done = object()
        delay, delaying = self.stream_response_delay_s, asyncio.Lock()

        async def put(answer) -> None:
            await room.acquire()
            out.put_nowait(answer)
        pumps = []

        async def pump(request, task, turn: asyncio.Event, after: asyncio.Event) -> None:
            result = None
            try:
                try:
                    result = await task
                except Exception as exc:
                    await after.wait()
                    await put(_stream_error(request, exc))
                    return
                await after.wait()
                if isinstance(result, pb.ModelInferResponse):
                    # as Triton: each (non-decoupled) answer is the request's final one, and says so
                    result.parameters["triton_final_response"].bool_param = True
                    await put(pb.ModelStreamInferResponse(infer_response=result))
                    return
                turn.set()  # a decoupled model's responses: later requests need not wait for its last one
                async for answer in result:
                    if delay:  # TRITONSERVER_DELAY_GRPC_RESPONSE: each waits, one after another on this stream
                        async with delaying:
                            await asyncio.sleep(delay)
                            await put(answer)
                        continue
                    await put(answer)
            finally:
                turn.set()
                slots.release()
                if result is not None and not isinstance(result, pb.ModelInferResponse):
                    await result.aclose()  # a client that left: the model's senders see is_cancelled()

        async def read() -> None:
            after = asyncio.Event()
            after.set()
            try:
                async for request in requests:
                    await slots.acquire()
                    if self.plane.stopping:  # as Triton, whose models unload at shutdown: in-flight ones finish
                        task = asyncio.get_running_loop().create_future()
                        task.set_exception(ModelNotFound(request.model_name, reason=(
                            f"Request for unknown model: '{request.model_name}' has no available versions")))
                    else:
                        SEND_ORDER.set([order])  # for this request only: the task copies the context now
                        task = asyncio.ensure_future(self._infer(request, headers))
                    turn = asyncio.Event()
                    pumps.append(asyncio.ensure_future(pump(request, task, turn, after)))
                    after = turn
            finally:
                await asyncio.gather(*pumps, return_exceptions=True)
                out.put_nowait(done)

        reader = asyncio.ensure_future(read())
        try:
            while True:
                answer = await out.get()
                if answer is done:
                    break
                room.release()
                yield answer
            try:
                await reader
            except Exception as exc:  # the request stream itself broke
                await context.abort(*_abort_args(exc))
        finally:
            reader.cancel()
            for task in pumps:
                task.cancel()

    # statistics -------------------------------------------------------------------------------
    @_guard
    async def ModelStatistics(self, request, context):
        return convert.statistics_to_proto(await self.plane.statistics_everywhere(request.name or None,
                                                                                _version(request.version)))

    # model repository -------------------------------------------------------------------------
    @_guard
    async def RepositoryIndex(self, request, context):
        response = pb.RepositoryIndexResponse()
        for entry in await self.plane.repository_index_async(request.ready):
            response.models.add(**entry)
        return response

    @_guard
    async def RepositoryModelLoad(self, request, context):  # an empty name: DataPlane.load_model refuses it
        parameters = {key: getattr(value, value.WhichOneof("parameter_choice") or "string_param")
                      for key, value in request.parameters.items()}
        config, files = load_parameters(parameters, files_in_base64=False)
        await self.plane.load_model(request.model_name, config, files)
        return pb.RepositoryModelLoadResponse()

    @_guard
    async def RepositoryModelUnload(self, request, context):
        if not request.model_name:
            raise InvalidInput("'model_name' is required")
        dependents = request.parameters.get("unload_dependents")
        await self.plane.unload_model(request.model_name, unload_dependents=dependents is not None and
                                      dependents.WhichOneof("parameter_choice") == "bool_param" and dependents.bool_param)
        return pb.RepositoryModelUnloadResponse()

    # shared memory: system regions in the data plane's registry; CUDA needs a GPU build ---------
    @_guard
    async def SystemSharedMemoryStatus(self, request, context):
        response = pb.SystemSharedMemoryStatusResponse()
        for region in self.plane.shared_memory.status(request.name or None):
            response.regions[region["name"]].CopyFrom(
                pb.SystemSharedMemoryStatusResponse.RegionStatus(**region))
        return response

    @_guard
    async def SystemSharedMemoryRegister(self, request, context):
        self.plane.shared_memory.register(request.name, request.key, request.offset, request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    @_guard
    async def SystemSharedMemoryUnregister(self, request, context):
        self.plane.shared_memory.unregister(request.name or None)
        return pb.SystemSharedMemoryUnregisterResponse()

    @_guard
    async def CudaSharedMemoryStatus(self, request, context):
        response = pb.CudaSharedMemoryStatusResponse()
        for region in self.plane.shared_memory.cuda_status(request.name or None):
            response.regions[region["name"]].CopyFrom(pb.CudaSharedMemoryStatusResponse.RegionStatus(**region))
        return response

    @_guard
    async def CudaSharedMemoryRegister(self, request, context):
        await self.plane.cuda_register(request.name, request.raw_handle, request.device_id, request.byte_size)
        return pb.CudaSharedMemoryRegisterResponse()

    @_guard
    async def CudaSharedMemoryUnregister(self, request, context):
        await self.plane.cuda_unregister(request.name or None)
        return pb.CudaSharedMemoryUnregisterResponse()

    # trace and log settings: shared with REST through the data plane ---------------------------
    @_guard
    async def TraceSetting(self, request, context):
        settings, model = self.plane.runtime_settings, request.model_name or None
        if len(request.settings):  # an empty SettingValue clears that setting, as in Triton
            current = await self.plane.update_trace({k: list(v.value) or None for k, v in request.settings.items()},
                                                     model)
        else:
            current = settings.trace(model)
        response = pb.TraceSettingResponse()
        for key, value in current.items():
            response.settings[key].value.extend(value if isinstance(value, list) else [str(value)])
        return response

    @_guard
    async def LogSettings(self, request, context):
        settings = self.plane.runtime_settings
        if len(request.settings):
            current = await self.plane.update_log({k: _log_value(v) for k, v in request.settings.items()})
        else:
            current = settings.log()
        response = pb.LogSettingsResponse()
        for key, value in current.items():
            entry = response.settings[key]
            if isinstance(value, bool):
                entry.bool_param = value
            elif isinstance(value, int):
                entry.uint32_param = value
            else:
                entry.string_param = str(value)
        return response


def _log_value(value: pb.LogSettingsRequest.SettingValue):
    which = value.WhichOneof("parameter_choice")
    return None if which is None else getattr(value, which)


def rpcs():
    """(name, request class, response class, streaming) for each RPC of the service descriptor; both
    transports bind the servicer's methods from this."""
    for method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
        yield (method.name, getattr(pb, method.input_type.name), getattr(pb, method.output_type.name),
               method.client_streaming or method.server_streaming)


def served_names():
    """The servicer's RPC names: the inference service's and MLServer's repository service's."""
    return [name for name, *_ in rpcs()] + [name for name, *_ in repository_rpcs()]


def restricted_servicer(plane: DataPlane, settings: ServerSettings) -> InferenceServicer:
    """The servicer both transports serve, its restricted RPC groups checked (server/restricted.py)."""
    servicer = restrict_servicer(InferenceServicer(plane), settings.grpc_restricted_protocol, served_names())
    return debug_delays.delay_common(servicer, served_names())  # Triton's test hook; nothing when unset


def _serialized(message) -> bytes:
    return message.SerializeToString()


def service_handler(servicer: InferenceServicer) -> grpc.GenericRpcHandler:
    """One method handler per RPC of the service descriptor, bound to the servicer's methods."""
    handlers = {}
    for name, request_class, response_class, streaming in rpcs():
        make = grpc.stream_stream_rpc_method_handler if streaming else grpc.unary_unary_rpc_method_handler
        # a stream's answers are of two message types (mlserver_stream.py): each serializes itself
        serialize = _serialized if streaming else response_class.SerializeToString
        handlers[name] = make(getattr(servicer, name), request_deserializer=request_class.FromString,
                              response_serializer=serialize)
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


def health_status(plane: DataPlane, service: str, health_pb2):
    """grpc.health.v1 status of the overall ("") and inference service: the data plane's readiness; None for
    any other service name."""
    if service in ("", SERVICE):
        response = health_pb2.HealthCheckResponse
        return response.SERVING if plane.ready() else response.NOT_SERVING
    return None


def _add_health(server: grpc.aio.Server, plane: DataPlane, settings: ServerSettings) -> bool:
    """The standard grpc.health.v1 service when grpcio-health-checking is installed."""
    try:
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    except ImportError:
        return False

    class Health(health.aio.HealthServicer):
        async def Check(self, request, context):
            status = health_status(plane, request.service, health_pb2)
            if status is not None:
                return health_pb2.HealthCheckResponse(status=status)
            return await super().Check(request, context)

    servicer = Health()
    rules = grpc_rules(settings.grpc_restricted_protocol)
    for name in ("Check", "Watch"):
        setattr(servicer, name, restrict_method(getattr(servicer, name), "health", rules))
    servicer.Check = debug_delays.delayed(servicer.Check, debug_delays.common_delay_s())
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return True


class CallCounter(grpc.aio.ServerInterceptor):
    """Counts the calls under way, which a shutdown waits for and names in Triton's log line."""

    def __init__(self) -> None:
        self.active = 0

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._unary(handler.unary_unary))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=self._streaming(handler.unary_stream))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=self._unary(handler.stream_unary))
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=self._streaming(handler.stream_stream))
        return handler

    def _unary(self, behaviour):
        async def counted(request, context):
            self.active += 1
            try:
                result = behaviour(request, context)
                return await result if inspect.isawaitable(result) else result
            finally:
                self.active -= 1
        return counted

    def _streaming(self, behaviour):
        async def counted(request, context):
            self.active += 1
            try:
                result = behaviour(request, context)
                if inspect.isawaitable(result):  # a behaviour that writes with context.write
                    await result
                    return
                if hasattr(result, "__aiter__"):
                    async for answer in result:
                        yield answer
                else:
                    for answer in result:
                        yield answer
            finally:
                self.active -= 1
        return counted


def _address(host: str, port: int) -> str:
    """host:port as grpc takes it; `unix:PATH` (tritonserver's --grpc-address form for a Unix socket) becomes the
    socket `PATH:port`, as there."""
    if host.startswith("unix:"):
        return f"{host}:{port}"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6 literal
    return f"{host}:{port}"


async def start_grpc_server(plane: DataPlane, settings: ServerSettings) -> Tuple[grpc.aio.Server, int]:
    """Build, bind and start the server; returns it and the bound port (port 0: one the OS picked)."""
    limit = int(settings.grpc_max_message_bytes)
    # A port in use must fail, not be shared silently, unless several workers share it on purpose.
    options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit),
               ("grpc.so_reuseport", 1 if settings.reuse_port or settings.reuse_grpc_port else 0)]
    options += sorted(settings.grpc_arguments.items())  # Triton's keepalive and connection-age flags
    counter = CallCounter()
    server = grpc.aio.server(options=options, interceptors=[counter])
    server.gpuserve_calls = counter  # a shutdown waits for them (server/shutdown.py)
    servicer = restricted_servicer(plane, settings)
    server.add_generic_rpc_handlers((service_handler(servicer), repository_handler(servicer)))
    from gpuserve.server.grpc import tfserving, torchserve  # they import this module's guard

    server.add_generic_rpc_handlers(tfserving.handlers(tfserving.restricted_servicer(plane, settings)))
    server.add_generic_rpc_handlers(torchserve.handlers(torchserve.restricted_servicer(plane, settings)))
    _add_health(server, plane, settings)
    address = _address(settings.grpc_host or settings.host, settings.grpc_port)
    credentials = tls.grpcio_credentials(settings) if tls.wanted(settings) else None
    try:
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError as exc:
        port, reason = 0, str(exc)
    else:
        reason = "the port is in use or the address is not available here"
    if not port:
        await server.stop(None)
        if _taken(settings.grpc_host or settings.host, settings.grpc_port):
            raise InvalidSettings(f"failed to start GRPC service: Unavailable - Socket '{address}' already in use")
        raise InvalidSettings(f"cannot listen for gRPC on {address}: {reason}")
    await server.start()
    return server, settings.grpc_port if address.startswith("unix:") else port


def _stream_error(request: pb.ModelInferRequest, exc: BaseException) -> pb.ModelStreamInferResponse:
    """A failed request on a stream: the error in `error_message`, marked final unless a decoupled model
    sent it as one of several responses (as Triton marks it); the stream goes on."""
    _, message = _abort_args(exc, log=False)
    answer = pb.ModelStreamInferResponse(error_message=message, infer_response=pb.ModelInferResponse(
        model_name=request.model_name, model_version=request.model_version, id=request.id))
    answer.infer_response.parameters["triton_final_response"].bool_param = bool(getattr(exc, "triton_final", True))
    return answer


async def _chained(first, rest):
    yield first
    async for item in rest:
        yield item


async def _decoupled_answers(responses, infer_request, request: pb.ModelInferRequest, typed: bool
                             ) -> AsyncIterator[pb.ModelStreamInferResponse]:
    try:
        async for item in responses:
            if isinstance(item, BaseException):
                yield _stream_error(request, item)
            else:
                yield pb.ModelStreamInferResponse(infer_response=convert.response_to_proto(item, infer_request, typed))
    finally:
        await responses.aclose()


class _TracedAnswers:
    """As Triton 2.51 traces a decoupled request on a stream: INFER_RESPONSE_COMPLETE at its first
    response, GRPC_SEND_START/END around each one it sends, and the trace ends after the last, or when
    the stream is closed, read or not (a client gone before its first response)."""

    def __init__(self, answers, trace):
        self.answers, self.trace, self.sent, self.ended = answers, trace, 0, False

    def __aiter__(self):
        return self

    async def __anext__(self) -> pb.ModelStreamInferResponse:
        if self.sent:
            self.trace.stamp("GRPC_SEND_END")
        try:
            answer = await self.answers.__anext__()
        except BaseException:
            await self.aclose()
            raise
        if not self.sent:
            self.trace.stamp("INFER_RESPONSE_COMPLETE")
        self.sent += 1
        self.trace.stamp("GRPC_SEND_START")
        return answer

    async def aclose(self) -> None:
        if not self.ended:
            self.ended = True
            try:
                await self.answers.aclose()
            finally:
                self.trace.end()


def _taken(host: str, port: int) -> bool:
    """Whether another socket holds the port (grpcio's add_port answers 0 for that and for a bad address alike)."""
    import errno
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False
