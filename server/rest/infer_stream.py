"""`POST /v2/models/NAME[/versions/V]/infer_stream`: a V2 inference request in, one Server-Sent Event per
response out (`data: <V2 response JSON>`), as MLServer 1.5+ serves it. Any model answers: an MLServer
runtime's own `predict_stream`, a decoupled model's many responses, or another model's one.

MLServer runtimes also take a V2 request on `/generate` (answered as `/infer`) and `/generate_stream`
(answered as here), as MLServer routes them; every other model keeps Triton's flat generate request
(server/rest/generate.py asks `v2_generate` which one a request is).

Better than MLServer 1.7.1 on purpose: a failure before the first response is that error's status with
`{"error": ...}` (MLServer: a 500 with a plain-text traceback, also for an unknown model), and one after
it is a last `data: {"error": ...}` event on a stream that then ends cleanly (MLServer cuts the
connection mid-chunk).
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

import orjson
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gpuserve.dataplane import STREAMING, DataPlane
from gpuserve.generate import responses_of
from gpuserve.types import InferRequest, InferResponse
from gpuserve.server.rest.common import JSON_OPTIONS, ErrorRoutes, cancel_on_disconnect, guarded, read_body
from gpuserve.server.rest.v2 import decode_infer, encode_infer

EVENT_STREAM = "text/event-stream; charset=utf-8"


def v2_generate(plane: DataPlane, model_name: str, version: Optional[str], body: Any) -> bool:
    """Whether a generate request is MLServer's (a V2 request to an MLServer runtime) rather than Triton's."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        return False
    model = plane.repository.get_model(model_name, version)
    return bool(getattr(model, "generates_ids", False))


def event(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload, option=JSON_OPTIONS) + b"\n\n"


async def first_or_gone(answers, receive):
    """The stream's first item, or GONE when the client went away first: then the stream is closed (its
    model's generator, or a decoupled model's senders, see it) rather than left running for nobody."""
    task = asyncio.current_task()
    watcher = asyncio.ensure_future(cancel_on_disconnect(receive, task))
    try:
        return await answers.__anext__()
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled() and watcher.result():
            await answers.aclose()
            return GONE
        raise
    finally:
        watcher.cancel()


GONE = object()  # what first_or_gone gives for a client that left; the route answers nobody


async def stream_answer(plane: DataPlane, request: InferRequest, headers: dict, receive):
    token = STREAMING.set(True)
    try:
        result, response_headers = await plane.infer(request, headers)
    finally:
        STREAMING.reset(token)
    if response_headers and not hasattr(result, "__aiter__") and isinstance(result, InferResponse) and \
            getattr(plane.repository.get_model(request.model_name, request.model_version), "generates_ids", False):
        # an MLServer runtime's one answer: its headers in the event, as MLServer's (and as a streamed one's)
        result.parameters["headers"] = response_headers
        response_headers = None
    answers = responses_of(result)
    try:  # what fails before the first response is the request's error, with its status
        first = await first_or_gone(answers, receive)
    except StopAsyncIteration:
        first = None
    except BaseException:
        await answers.aclose()
        raise
    if first is GONE:
        return Response(status_code=499)  # (nginx's "client closed request"; nobody reads it)
    if isinstance(first, BaseException):
        await answers.aclose()
        raise first

    async def events():
        try:
            if first is None:
                return
            yield event(first.wire_dict() if isinstance(first, InferResponse) else first)
            async for item in answers:
                if isinstance(item, BaseException):
                    yield event({"error": str(item) or type(item).__name__})
                    return
                yield event(item.wire_dict() if isinstance(item, InferResponse) else item)
        finally:
            await answers.aclose()  # a client that left: the model's senders see is_cancelled()

    return StreamingResponse(events(), media_type=EVENT_STREAM, headers=response_headers or None)


async def one_answer(plane: DataPlane, request: InferRequest, headers: dict):
    response, response_headers = await plane.infer(request, headers)
    return encode_infer(response, request, response_headers)


def add_infer_stream_routes(app: FastAPI, plane: DataPlane, errors: ErrorRoutes, body_limit: int) -> None:
    guard = guarded(errors, plane.transport_metrics)

    async def infer_stream(model_name: str, version: Optional[str], request: Request):
        body = await read_body(request, body_limit)
        infer_request = decode_infer(body, request, model_name, version, plane.model_config)
        return await stream_answer(plane, infer_request, dict(request.headers), request.receive)

    @app.post("/v2/models/{model_name}/infer_stream", tags=["V2 inference"],
              summary="Inference, streamed (SSE, as MLServer)")
    @guard
    async def infer_stream_latest(model_name: str, request: Request):
        return await infer_stream(model_name, None, request)

    @app.post("/v2/models/{model_name}/versions/{model_version}/infer_stream", tags=["V2 inference"],
              summary="Inference on one version, streamed (SSE, as MLServer)")
    @guard
    async def infer_stream_version(model_name: str, model_version: str, request: Request):
        return await infer_stream(model_name, model_version, request)
