"""What a Triton Python model's errors become on the wire, and what its BLS calls reach: the data plane
of the server that serves it, through the server's own event loop (from the instance's thread, or
awaited from an `async def execute`)."""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import queue
from typing import Optional

from gpuserve import triton_pb_utils as pb
from gpuserve.dataplane import STREAMING
from gpuserve.errors import GpuserveError, ModelNotFound, ModelNotReady, Unimplemented
from gpuserve.types import InferInput, InferRequest, InferResponse, RequestedOutput

# TritonError codes -> (HTTP status, gRPC status), as Triton's frontends map the server's error codes
ERROR_STATUS = {
    pb.TritonError.UNKNOWN: (500, "UNKNOWN"), pb.TritonError.INTERNAL: (500, "INTERNAL"),
    pb.TritonError.NOT_FOUND: (404, "NOT_FOUND"), pb.TritonError.INVALID_ARG: (400, "INVALID_ARGUMENT"),
    pb.TritonError.UNAVAILABLE: (503, "UNAVAILABLE"), pb.TritonError.UNSUPPORTED: (501, "UNIMPLEMENTED"),
    pb.TritonError.ALREADY_EXISTS: (409, "ALREADY_EXISTS"), pb.TritonError.CANCELLED: (499, "CANCELLED"),
}
# Triton 2.51's words when a BLS call cannot reach the callee (unknown, unloaded, failed or missing version alike)
# or reaches a decoupled one without decoupled=True
BLS_NOT_READY = "Failed for execute the inference request. Model '{name}' is not ready."
BLS_DECOUPLED = ("Model {name} is using the decoupled. The current BLS request call doesn't support models using the "
                 "decoupled transaction policy. Please use 'decoupled=True' argument to the 'exec' or 'async_exec' "
                 "calls for decoupled models.'")


class PythonModelError(GpuserveError):
    """A request's error as the model set it (`TritonError` and its code) or as its execute raised it."""

    def __init__(self, message: str, code: int = pb.TritonError.INTERNAL, counts_as_success: bool = False):
        super().__init__(message)
        self.code = code
        self.http, self.grpc = ERROR_STATUS.get(code, (500, "INTERNAL"))
        # As Triton's statistics see it: execute returned, so the request succeeded (an error response, or
        # no response at all); only a raised exception or a malformed return is a failure.
        self.counts_as_success = counts_as_success


def error_response(exc: BaseException, callee: str = "") -> pb.InferenceResponse:
    """A BLS call's failure as Triton 2.51's Python backend hands it to the caller: the code is always INTERNAL,
    whatever the callee or the server said (a caller returning the error answers its client 500 / INTERNAL), and
    what the server refused before the callee ran is told the way Triton's server tells it."""
    return pb.InferenceResponse(error=pb.TritonError(bls_message(exc, callee), pb.TritonError.INTERNAL))


def bls_message(exc: BaseException, callee: str) -> str:
    message = str(exc) or type(exc).__name__
    if not callee or isinstance(exc, PythonModelError) or message.startswith("in ensemble '"):
        return message  # the callee (or an ensemble's step) answered: its own words
    if isinstance(exc, (ModelNotFound, ModelNotReady)):
        message = BLS_NOT_READY.format(name=callee)
    elif isinstance(exc, Unimplemented) and "decoupled transaction policy" in message:
        message = BLS_DECOUPLED.format(name=callee)
    elif not 400 <= getattr(exc, "http", 500) < 500:
        return message  # the callee failed while running
    return f"Model {callee} - Error when running inference: {message}"


_FORKED = []  # not empty in a process a model forked (multiprocessing): the server's loop is not in it


def _forked() -> None:
    _FORKED.append(True)


os.register_at_fork(after_in_child=_forked)


class ServerBridge:
    """What a model's BLS calls reach: the data plane of the server that serves it, on its loop."""

    def __init__(self, model):
        self.model = model
        self.loop: Optional[asyncio.AbstractEventLoop] = None

    def on_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def loop_thread_call(self) -> None:
        forbid = getattr(self.model, "forbid_inline", None)
        if forbid is not None:
            forbid()

    def run(self, coroutine):
        return self._on_loop(coroutine).result()

    def _on_loop(self, coroutine):
        if self.loop is None or self.loop.is_closed():
            coroutine.close()
            raise pb.TritonModelException("the server's event loop is not running yet")
        if _FORKED:  # the loop's thread stayed in the parent: waiting on it would never end
            coroutine.close()
            raise pb.TritonModelException("BLS calls from a process the model forked are not supported by gpuserve "
                                          "(its Python models run in the server's process)")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def _registry(self):
        registry = getattr(self.model, "registry", None)
        if registry is None:
            raise pb.TritonModelException("this model is not in a server's repository: BLS has no models to call")
        return registry

    @staticmethod
    def _request(request: pb.InferenceRequest) -> InferRequest:
        inputs = [_input(t) for t in request.inputs()]
        version = request.model_version()
        parameters = json.loads(request.parameters())
        if request.timeout():
            parameters.setdefault("timeout", request.timeout())
        # a call to a sequence model: its correlation ID and flags, as the protocols carry them
        if request.correlation_id():
            parameters["sequence_id"] = request.correlation_id()
        flags = request.flags()
        if flags & pb.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START:
            parameters["sequence_start"] = True
        if flags & pb.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END:
            parameters["sequence_end"] = True
        ours = InferRequest(request.model_name(), inputs, request_id=request.request_id() or None,
                            parameters=parameters,
                            request_outputs=[RequestedOutput(n) for n in dict.fromkeys(request._outputs)] or None,
                            model_version=str(version) if version is not None and int(version) > 0 else None)
        given = request._trace
        if isinstance(given, pb.InferenceTrace) and given._trace is not None:  # trace=request.trace()
            ours.trace = given._trace.child()
        return ours

    async def _call(self, request: pb.InferenceRequest):
        response, _ = await self._registry().infer(self._request(request))
        return response

    def infer_blocking(self, request: pb.InferenceRequest) -> pb.InferenceResponse:
        """`exec()` from a thread; from a process the model forked (a multiprocessing pool) the server's loop
        is not there, so the call goes to the server's HTTP endpoint on loopback, as Triton's stub reaches
        its server from any process."""
        loopback = getattr(getattr(self.model, "registry", None), "http_loopback", None) if _FORKED else None
        if loopback:  # (host, port) of the HTTP endpoint of the server serving this model (server/model_server.py)
            from gpuserve.triton_bls_fork import infer_over_loopback

            try:
                return self._converted(infer_over_loopback(loopback[0], loopback[1], self._request(request)))
            except OSError as exc:
                return error_response(PythonModelError(f"BLS from a forked process: the server's HTTP endpoint "
                                                       f"{loopback[0]}:{loopback[1]} did not answer: {exc}"))
            except Exception as exc:
                return error_response(exc, request.model_name())
        return self.run(self.infer(request))

    @staticmethod
    def _converted(response, cancelled: bool = False) -> pb.InferenceResponse:
        if isinstance(response, BaseException):
            if cancelled and getattr(response, "code", None) == pb.TritonError.CANCELLED:
                # a callee's answer to the caller's cancel(): its code stays, as the Triton that has cancel() keeps it
                return pb.InferenceResponse(error=pb.TritonError(str(response), pb.TritonError.CANCELLED))
            return error_response(response)
        if not isinstance(response, InferResponse):
            return error_response(PythonModelError("the model did not answer with a V2 response"))
        parameters = {k: v for k, v in (response.parameters or {}).items() if k != "triton_final_response"}
        answer = pb.InferenceResponse([_output(o) for o in response.outputs])
        answer._parameters = parameters  # the callee's, as given (a non-Python callee may answer a float)
        return answer

    async def infer(self, request: pb.InferenceRequest) -> pb.InferenceResponse:
        try:
            response = await self._call(request)
        except Exception as exc:
            return error_response(exc, request.model_name())
        return self._converted(response)

    def open_stream(self, request: pb.InferenceRequest) -> "BlsStream":
        """A streaming call (`exec(decoupled=True)`) from a model's thread: its responses reach the caller as
        the callee sends them, and the caller may cancel it meanwhile."""
        stream = BlsStream()
        stream.future = self._on_loop(self._pump(request, stream))
        return stream

    async def _pump(self, request: pb.InferenceRequest, stream: "BlsStream") -> None:
        streaming, watched = STREAMING.set(True), BLS_STREAM.set(stream)
        try:
            request._parameters.setdefault("triton_enable_empty_final_response", True)
            response = await self._call(request)
            if not hasattr(response, "__aiter__"):
                stream.put(self._converted(response), True)
                return
            async for item in response:
                final = item.parameters.get("triton_final_response") if isinstance(item, InferResponse) \
                    else getattr(item, "triton_final", True)
                stream.put(self._converted(item, stream.cancelled), bool(final))
        except asyncio.CancelledError:  # cancelled before a callee that watches its cancellation started
            stream.put(pb.InferenceResponse(error=pb.TritonError("Request was cancelled", pb.TritonError.CANCELLED)),
                       True)
        except Exception as exc:
            stream.put(error_response(exc, request.model_name()), True)
        finally:
            BLS_STREAM.reset(watched)
            STREAMING.reset(streaming)
            stream.put(None, True)  # the end, for a callee whose last response was not marked final

    async def infer_stream(self, request: pb.InferenceRequest) -> list:
        """Every response of a call (a decoupled model's many, ending with an empty final one when the
        model sent only the flag, as Triton's BLS iterator does; another model's one)."""
        token = STREAMING.set(True)
        try:
            request._parameters.setdefault("triton_enable_empty_final_response", True)
            response = await self._call(request)
            if not hasattr(response, "__aiter__"):
                return [self._converted(response)]
            return [self._converted(item) async for item in response]
        except Exception as exc:
            return [error_response(exc, request.model_name())]
        finally:
            STREAMING.reset(token)

    def model_ready(self, name: str, version: str) -> bool:
        model = self._registry().get_model(name, version or None)
        return bool(model is not None and model.ready)

    async def load(self, name: str, config: Optional[str] = None, files: Optional[dict] = None) -> None:
        registry = self._registry()
        try:
            loaded = await (registry.load_async(name, config, files) if config is not None or files
                            else registry.load_async(name))
        except Exception as exc:  # a malformed override, a model that is nowhere: the model sees Triton's exception
            raise pb.TritonModelException(f"failed to load '{name}': {exc}") from None
        if not loaded:
            reason = getattr(registry, "load_failures", {}).get(name) or ""
            raise pb.TritonModelException(f"failed to load '{name}'" + (f": {reason}" if reason else ""))

    async def unload(self, name: str) -> None:
        await self._registry().unload_async(name)


# the streaming BLS call whose callee is being reached: a decoupled Python callee's request registers its
# response stream with it, so that the caller's cancel() reaches the callee's is_cancelled()
BLS_STREAM: "contextvars.ContextVar[Optional[BlsStream]]" = contextvars.ContextVar("gpuserve_bls_stream",
                                                                                   default=None)


class BlsStream:
    """One streaming BLS call's responses, put by the server's loop and taken in order by the caller's
    thread, which waits for each as Triton's response iterator does; `cancel()` is the iterator's."""

    def __init__(self):
        self._queue: "queue.SimpleQueue" = queue.SimpleQueue()
        self._callees: list = []
        self.cancelled = False
        self.future = None  # the pump's, on the server's loop

    def put(self, response: Optional[pb.InferenceResponse], final: bool) -> None:
        self._queue.put((response, final))

    def get(self):
        """(response, final); (None, True) once the stream has ended."""
        return self._queue.get()

    def watch(self, callee_stream) -> None:
        """A callee's request (from the server's loop): it sees a cancel made before or after this."""
        self._callees.append(callee_stream)
        if self.cancelled:
            callee_stream.cancelled = True

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        for callee in list(self._callees):
            callee.cancelled = True  # its senders' is_cancelled() says so; its responses still come
        if not self._callees and self.future is not None:
            self.future.cancel()  # nothing started that could answer the cancellation: the call ends here


def _input(tensor: pb.Tensor) -> InferInput:
    array, datatype = pb.host_array(tensor)  # a BF16 tensor (float32 inside) is sent as BF16
    return InferInput(tensor.name(), list(array.shape), datatype, array) if datatype \
        else InferInput.from_numpy(tensor.name(), array)


def _output(output) -> pb.Tensor:
    tensor = pb.Tensor(output.name, output.as_numpy())
    tensor._bf16 = output.datatype == "BF16"  # as Triton: the caller reads it through DLPack, not as_numpy()
    return tensor
