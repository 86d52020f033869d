"""`ModelStreamInfer` as MLServer 1.5+ answers it, for MLServer runtimes with a `predict_stream` of their own.

MLServer and Triton share the RPC's name but not its answer: Triton's stream carries
`ModelStreamInferResponse` (an `error_message` beside the response; tritonclient reads that), MLServer's
carries `ModelInferResponse` itself (MLServer's generated stub reads that) and ends a failed stream with
its status. Neither client can read the other's, and nothing in a request says which client sent it, so
the model decides: a runtime written for MLServer's streaming gets MLServer's form (its users' clients are
MLServer's), every other model Triton's (server/grpc/service.py).

As MLServer: the first request names the model, the whole stream is one `predict_stream` call reading
every request of it (each given the first one's id), responses are typed `contents` unless the first
request sent raw ones, the CloudEvents headers of the last response travel as trailing metadata, and a
failure ends the stream with its status (UNAVAILABLE for a model unloaded meanwhile, INVALID_ARGUMENT for a bad
request, INTERNAL for what the runtime raises). A stream whose first request names no loaded model stays
Triton's (its `error_message`), since no model says which client is asking.
"""

from __future__ import annotations

import logging
import re
from typing import Any, AsyncIterator, Dict

from gpuserve.dataplane import STREAMING, DataPlane
from gpuserve.server.grpc import convert
from gpuserve.server.grpc import inference_pb2 as pb

logger = logging.getLogger("gpuserve.grpc")


def mlserver_streams(plane: DataPlane, first: pb.ModelInferRequest) -> bool:
    model = plane.repository.get_model(first.model_name, first.model_version or None)
    return bool(getattr(model, "streams", False))


async def mlserver_stream(plane: DataPlane, first: pb.ModelInferRequest, later: AsyncIterator[pb.ModelInferRequest],
                          headers: Dict[str, str], context: Any, abort_args) -> AsyncIterator[pb.ModelInferResponse]:
    async def rest():
        async for request in later:
            yield convert.request_from_proto(request)

    typed = not first.raw_input_contents
    token = STREAMING.set(True)
    try:
        request = convert.request_from_proto(first)
        request.stream_rest = rest()
        result, trailing = await plane.infer(request, headers)
    except Exception as exc:  # the first request's fault or the model's: the stream ends with its status
        await context.abort(*abort_args(exc))
    finally:
        STREAMING.reset(token)
    if not hasattr(result, "__aiter__"):  # a runtime in parallel workers: one predict, as MLServer's workers
        yield await _answer(result, request, typed, context, abort_args)
        _trail(context, trailing)
        return
    try:
        async for item in result:
            if isinstance(item, BaseException):
                await context.abort(*abort_args(item))
            trailing = item.parameters.pop("headers", None) or trailing
            yield await _answer(item, request, typed, context, abort_args)
    finally:
        await result.aclose()
    _trail(context, trailing)


async def _answer(response, request, typed: bool, context: Any, abort_args) -> pb.ModelInferResponse:
    try:
        return convert.response_to_proto(response, request, typed)
    except Exception as exc:  # outputs the message cannot carry: the stream ends with the words
        await context.abort(*abort_args(exc))


_KEY = re.compile(r"[0-9a-z_.-]+")


def _trail(context: Any, headers) -> None:
    """The last response's headers as trailing metadata; a pair gRPC cannot carry (a key of other
    characters, a value with a line break: a runtime's own) is left out and logged, as one would end the
    whole stream on the client's side."""
    if not headers or context is None:
        return
    metadata = []
    for key, value in headers.items():
        key, value = str(key).lower(), str(value)
        if _KEY.fullmatch(key) and not key.endswith("-bin") and value.isprintable() and value.isascii():
            metadata.append((key, value))
        else:
            logger.warning("a response header gRPC metadata cannot carry was left out: %r", key)
    context.set_trailing_metadata(tuple(metadata))
