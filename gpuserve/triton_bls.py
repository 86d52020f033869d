"""What a Triton Python model's errors become on the wire, and what its BLS calls reach: the data plane
of the server that serves it, through the server's own event loop (from the instance's thread, or
awaited from an `async def execute`)."""

from __future__ import annotations

import asyncio
import json
from typing import Optional

from gpuserve import triton_pb_utils as pb
from gpuserve.dataplane import STREAMING
from gpuserve.errors import GpuserveError
from gpuserve.types import InferInput, InferRequest, InferResponse, RequestedOutput

# TritonError codes -> (HTTP status, gRPC status), as Triton's frontends map the server's error codes
ERROR_STATUS = {
    pb.TritonError.UNKNOWN: (500, "UNKNOWN"), pb.TritonError.INTERNAL: (500, "INTERNAL"),
    pb.TritonError.NOT_FOUND: (404, "NOT_FOUND"), pb.TritonError.INVALID_ARG: (400, "INVALID_ARGUMENT"),
    pb.TritonError.UNAVAILABLE: (503, "UNAVAILABLE"), pb.TritonError.UNSUPPORTED: (501, "UNIMPLEMENTED"),
    pb.TritonError.ALREADY_EXISTS: (409, "ALREADY_EXISTS"), pb.TritonError.CANCELLED: (499, "CANCELLED"),
}
_CODE_OF_GRPC = {"NOT_FOUND": pb.TritonError.NOT_FOUND, "INVALID_ARGUMENT": pb.TritonError.INVALID_ARG,
                 "UNAVAILABLE": pb.TritonError.UNAVAILABLE, "UNIMPLEMENTED": pb.TritonError.UNSUPPORTED,
                 "ALREADY_EXISTS": pb.TritonError.ALREADY_EXISTS, "CANCELLED": pb.TritonError.CANCELLED}


class PythonModelError(GpuserveError):
    """A request's error as the model set it (`TritonError` and its code) or as its execute raised it."""

    def __init__(self, message: str, code: int = pb.TritonError.INTERNAL):
        super().__init__(message)
        self.http, self.grpc = ERROR_STATUS.get(code, (500, "INTERNAL"))


def error_response(exc: BaseException) -> pb.InferenceResponse:
    code = _CODE_OF_GRPC.get(getattr(exc, "grpc", ""), pb.TritonError.INTERNAL)
    return pb.InferenceResponse(error=pb.TritonError(str(exc) or type(exc).__name__, code))


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
        if self.loop is None or self.loop.is_closed():
            coroutine.close()
            raise pb.TritonModelException("the server's event loop is not running yet")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def _registry(self):
        registry = getattr(self.model, "registry", None)
        if registry is None:
            raise pb.TritonModelException("this model is not in a server's repository: BLS has no models to call")
        return registry

    async def _call(self, request: pb.InferenceRequest):
        inputs = [InferInput.from_numpy(t.name(), t.as_numpy()) for t in request.inputs()]
        version = request.model_version()
        parameters = json.loads(request.parameters())
        if request.timeout():
            parameters.setdefault("timeout", request.timeout())
        ours = InferRequest(request.model_name(), inputs, request_id=request.request_id() or None,
                            parameters=parameters,
                            request_outputs=[RequestedOutput(n) for n in request.requested_output_names()] or None,
                            model_version=str(version) if version is not None and int(version) > 0 else None)
        response, _ = await self._registry().infer(ours)
        return response

    @staticmethod
    def _converted(response) -> pb.InferenceResponse:
        if isinstance(response, BaseException):
            return error_response(response)
        if not isinstance(response, InferResponse):
            return error_response(PythonModelError("the model did not answer with a V2 response"))
        parameters = {k: v for k, v in (response.parameters or {}).items() if k != "triton_final_response"}
        return pb.InferenceResponse([pb.Tensor(o.name, o.as_numpy()) for o in response.outputs], parameters=parameters)

    async def infer(self, request: pb.InferenceRequest) -> pb.InferenceResponse:
        try:
            response = await self._call(request)
        except Exception as exc:
            return error_response(exc)
        return self._converted(response)

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
            return [error_response(exc)]
        finally:
            STREAMING.reset(token)

    def model_ready(self, name: str, version: str) -> bool:
        model = self._registry().get_model(name, version or None)
        return bool(model is not None and model.ready)

    async def load(self, name: str) -> None:
        if not await self._registry().load_async(name):
            raise pb.TritonModelException(f"failed to load '{name}'")

    async def unload(self, name: str) -> None:
        await self._registry().unload_async(name)
