"""KServe V1: liveness (`GET /`), list, readiness, `:predict` and `:explain`."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from gpuserve.dataplane import DataPlane, kserve_unknown_model
from gpuserve.errors import InferenceError, ModelNotFound, ModelNotReady, ServerNotLive
from gpuserve.model import InferenceVerb
from gpuserve.runtimes_tensorflow import TensorFlowModel
from gpuserve.server.rest.common import ErrorRoutes, guarded, json_response, read_body, v1_answer, v1_request
from gpuserve.server.rest.streaming import Stream, is_stream, streaming_response
from gpuserve.server.rest.tfserving import status_json


def add_v1_routes(app: FastAPI, plane: DataPlane, errors: ErrorRoutes, body_limit: int) -> None:
    guard = guarded(errors, plane.transport_metrics)

    @app.get("/", tags=["V1"], summary="Server liveness (KServe's V1)")
    @guard
    async def live(request: Request):
        if not plane.live():  # as /v2/health/live: a status a liveness probe acts on
            raise ServerNotLive(plane.not_live_reason())
        return json_response({"status": "alive"})

    @app.get("/v1/models", tags=["V1"], summary="Names of the served models")
    @guard
    async def list_models(request: Request):
        # KServe lists a script's models in the order they were registered (start([a, b]) answers a, b);
        # a served folder's, found in no meaningful order, are listed by name.
        names = list(plane.repository.get_models())
        return json_response({"models": sorted(names) if plane.repository.source is not None else names})

    # KServe answers the same list at /v2/models (Triton has no such route, so nothing V2 clients use changes).
    app.get("/v2/models", tags=["V2 metadata"], summary="Names of the served models")(list_models)

    @app.get("/v1/models/{model_name}", tags=["V1"], summary="Model readiness")
    @guard
    async def model_ready(model_name: str, request: Request):
        try:
            healthy = await plane.model_healthy(model_name)
        except ModelNotFound:
            raise kserve_unknown_model(model_name) from None
        if not healthy:
            model = plane.repository.get_model(model_name)
            raise ModelNotReady(model_name, getattr(model, "reason", "") or None)
        answer = {"name": model_name, "ready": True}
        if isinstance(plane.repository.get_model(model_name), TensorFlowModel):  # TFServing's answer too, for
            answer.update(status_json(plane, model_name, None))  # KServe's TensorFlow runtime is TFServing
        return json_response(answer)

    async def call(model_name: str, request: Request, verb: InferenceVerb):
        headers = dict(request.headers)
        body, event = v1_request(await read_body(request, body_limit), headers)
        response, response_headers = await plane.predict_v1(model_name, body, headers, verb)
        if is_stream(response):
            return streaming_response(await Stream.start(response), response_headers)
        as_event = v1_answer(model_name, response, event, response_headers)
        if as_event is not None:
            return Response(as_event[0], headers=as_event[1])
        if isinstance(response, (bytes, str)):  # KServe sends a model's text or bytes as they are
            return Response(response, headers=response_headers or None)
        if hasattr(response, "to_rest") and not isinstance(response, dict):
            raise InferenceError(f"model '{model_name}' returned {type(response).__name__} to a V1 request")
        return json_response(response, headers=response_headers or None)

    @app.post("/v1/models/{model_name}:predict", tags=["V1"], summary="Predict (V1 instances/predictions)")
    @guard
    async def predict(model_name: str, request: Request):
        return await call(model_name, request, InferenceVerb.PREDICT)

    @app.post("/v1/models/{model_name}:explain", tags=["V1"], summary="Explain a prediction")
    @guard
    async def explain(model_name: str, request: Request):
        return await call(model_name, request, InferenceVerb.EXPLAIN)
