"""Triton's generate extension over REST: `/generate` answers one JSON object, `/generate_stream` one
Server-Sent Event per response (errors after the first event as `{"error": ...}` events, as Triton).
A V2 request to an MLServer runtime is MLServer's generate instead (server/rest/infer_stream.py)."""

from __future__ import annotations

from typing import Optional

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gpuserve.dataplane import DataPlane
from gpuserve.errors import InvalidInput
from gpuserve.generate import ONE_RESPONSE, generate_response, parse_body, responses_of
from gpuserve.types import InferRequest
from gpuserve.server.rest.common import ErrorRoutes, guarded, json_response, parse_json, read_body
from gpuserve.server.rest.infer_stream import GONE, event, first_or_gone, one_answer, stream_answer, v2_generate


def add_generate_routes(app: FastAPI, plane: DataPlane, errors: ErrorRoutes, body_limit: int) -> None:
    guard = guarded(errors, plane.transport_metrics)

    tracer = plane.runtime_settings.tracer

    async def start(model_name: str, version: Optional[str], request: Request):
        """(result, request ID, trace): the body is read keeping repeated members, which Triton refuses.
        A sampled request's trace (gpuserve/tracing.py) is ended by the caller once it has answered."""
        trace = tracer.sample(model_name, request.headers) if tracer.on else None
        if trace is not None:
            trace.stamp("HTTP_RECV_START")
        try:
            raw = await read_body(request, body_limit)
            if trace is not None:
                trace.stamp("HTTP_RECV_END")
            body = parse_body(raw)
            if body is None:
                body = parse_json(raw)  # not JSON: refused in the words of the other routes
            if v2_generate(plane, model_name, version, body):  # MLServer's: a V2 request (infer_stream.py)
                if trace is not None:
                    trace.end()
                return InferRequest.from_rest(model_name, body, version), None, None
            result = await plane.generate(model_name, version, body, dict(request.headers), trace)
        except BaseException:
            if trace is not None:
                trace.end()
            raise
        return result, body.get("id") if isinstance(body, dict) else None, trace

    async def generate(model_name: str, version: Optional[str], request: Request):
        result, request_id, trace = await start(model_name, version, request)
        if isinstance(result, InferRequest):
            return await one_answer(plane, result, dict(request.headers))
        answers = []
        stream = responses_of(result, trace)
        try:  # a second response settles it: the rest of a decoupled model's stream is not waited for
            async for item in stream:
                if isinstance(item, BaseException):
                    raise item
                answers.append(item)
                if len(answers) > 1:
                    break
        finally:
            await stream.aclose()  # the model's senders see is_cancelled()
            if trace is not None:
                trace.end()
        if len(answers) != 1:
            raise InvalidInput(ONE_RESPONSE)
        return json_response(generate_response(answers[0], model_name, version, request_id))

    async def generate_stream(model_name: str, version: Optional[str], request: Request):
        # errors before any response: a plain JSON error
        result, request_id, trace = await start(model_name, version, request)
        if isinstance(result, InferRequest):
            return await stream_answer(plane, result, dict(request.headers), request.receive)
        answers = responses_of(result, trace)
        try:
            first = await first_or_gone(answers, request.receive)
        except StopAsyncIteration:
            first = None
        except BaseException:
            if trace is not None:
                trace.end()
            raise
        if first is GONE:  # the client left before the first response: the model was told (is_cancelled)
            if trace is not None:
                trace.end()
            return Response(status_code=499)
        # as Triton: the status follows the first response, so a first response that is an error is a 400
        status = 400 if isinstance(first, BaseException) else 200

        async def events():
            try:
                if first is None:
                    return
                async for item in _chain(first, answers):
                    if isinstance(item, BaseException):  # reported in the stream, which goes on
                        payload = {"error": str(item) or type(item).__name__}
                    else:
                        payload = generate_response(item, model_name, version, request_id)
                    yield event(payload)
            finally:
                await answers.aclose()
                if trace is not None:
                    trace.end()

        return StreamingResponse(events(), status_code=status, media_type="text/event-stream; charset=utf-8")

    @app.post("/v2/models/{model_name}/generate", tags=["V2 generate"], summary="Generate (one response)")
    @guard
    async def generate_latest(model_name: str, request: Request):
        return await generate(model_name, None, request)

    @app.post("/v2/models/{model_name}/versions/{model_version}/generate", tags=["V2 generate"],
              summary="Generate on one version")
    @guard
    async def generate_version(model_name: str, model_version: str, request: Request):
        return await generate(model_name, model_version, request)

    @app.post("/v2/models/{model_name}/generate_stream", tags=["V2 generate"], summary="Generate, streamed (SSE)")
    @guard
    async def generate_stream_latest(model_name: str, request: Request):
        return await generate_stream(model_name, None, request)

    @app.post("/v2/models/{model_name}/versions/{model_version}/generate_stream", tags=["V2 generate"],
              summary="Generate on one version, streamed (SSE)")
    @guard
    async def generate_stream_version(model_name: str, model_version: str, request: Request):
        return await generate_stream(model_name, model_version, request)


async def _chain(first, rest):
    yield first
    async for item in rest:
        yield item
