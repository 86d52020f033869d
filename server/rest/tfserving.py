"""TensorFlow Serving's REST routes beside KServe's V1 ones (KServe's TensorFlow runtime is TFServing, so its
users' scripts call these): a model's status (`GET /v1/models/NAME/versions/N`), its metadata (`GET
/v1/models/NAME[/versions/N]/metadata`, the SignatureDefMap as protobuf's JSON) and predict on a version (`POST
/v1/models/NAME/versions/N:predict`). `GET /v1/models/NAME` stays KServe's readiness answer; for a TensorFlow
model it also carries TFServing's `model_version_status` (v1.py). `/labels/LABEL` stands for `/versions/N` in
each, for a models.config's version labels. server/tfserving_api.py holds the meaning, shared with the gRPC
services.
"""

from __future__ import annotations

from typing import Optional

from fastapi import FastAPI
from starlette.requests import Request

from gpuserve.dataplane import DataPlane
from gpuserve.errors import InvalidInput
from gpuserve.model import InferenceVerb
from gpuserve.server import tfserving_api as api
from gpuserve.server.rest.common import ErrorRoutes, guarded, json_response, read_body, v1_request

STATES = {api.START: "START", api.LOADING: "LOADING", api.AVAILABLE: "AVAILABLE", api.END: "END"}
CODES = {0: "OK", 2: "UNKNOWN"}  # tensorflow.error.Code names of the codes model_status gives


def status_json(plane: DataPlane, name: str, version: Optional[int]) -> dict:
    """{"model_version_status": [...]} as TFServing's REST writes it (versions as text, codes by name)."""
    return {"model_version_status": [
        {"version": str(entry["version"]), "state": STATES[entry["state"]],
         "status": {"error_code": CODES.get(entry["error_code"], "UNKNOWN"), "error_message": entry["error_message"]}}
        for entry in api.model_status(plane, name, version)]}


def _version(text: Optional[str]) -> Optional[int]:
    if text is None:
        return None
    if not text.isdigit():
        raise InvalidInput(f"version '{text}' is not a version number")
    return int(text)


def add_tfserving_routes(app: FastAPI, plane: DataPlane, errors: ErrorRoutes, body_limit: int) -> None:
    guard = guarded(errors, plane.transport_metrics)

    @app.get("/v1/models/{model_name}/versions/{version}", tags=["TFServing"], summary="A version's status")
    @guard
    async def version_status(model_name: str, version: str, request: Request):
        return json_response(status_json(plane, model_name, _version(version)))

    async def metadata(model_name: str, version: Optional[str]):
        model, number = api.servable(plane, model_name, _version(version))
        spec = {"name": model_name, "signature_name": "", "version": str(number) if number is not None else ""}
        signatures = {"@type": api.SIGNATURE_DEF_MAP, **api.signature_def_map(plane, model, number)}
        return json_response({"model_spec": spec, "metadata": {"signature_def": signatures}})

    @app.get("/v1/models/{model_name}/metadata", tags=["TFServing"], summary="The model's signature")
    @guard
    async def latest_metadata(model_name: str, request: Request):
        return await metadata(model_name, None)

    @app.get("/v1/models/{model_name}/versions/{version}/metadata", tags=["TFServing"],
             summary="A version's signature")
    @guard
    async def version_metadata(model_name: str, version: str, request: Request):
        return await metadata(model_name, version)

    @app.post("/v1/models/{model_name}/versions/{version}:predict", tags=["TFServing"],
              summary="Predict on a version (V1 instances/inputs)")
    @guard
    async def version_predict(model_name: str, version: str, request: Request):
        return await predict(model_name, version, request)

    # a version by its label (models.config's version_labels, gpuserve/tfserving_config.py), as TFServing's REST
    @app.get("/v1/models/{model_name}/labels/{label}", tags=["TFServing"], summary="A labelled version's status")
    @guard
    async def label_status(model_name: str, label: str, request: Request):
        return json_response(status_json(plane, model_name, api.spec_version(plane, model_name, None, label)))

    @app.get("/v1/models/{model_name}/labels/{label}/metadata", tags=["TFServing"],
             summary="A labelled version's signature")
    @guard
    async def label_metadata(model_name: str, label: str, request: Request):
        return await metadata(model_name, str(api.spec_version(plane, model_name, None, label)))

    @app.post("/v1/models/{model_name}/labels/{label}:predict", tags=["TFServing"],
              summary="Predict on a labelled version (V1 instances/inputs)")
    @guard
    async def label_predict(model_name: str, label: str, request: Request):
        return await predict(model_name, str(api.spec_version(plane, model_name, None, label)), request)

    async def predict(model_name: str, version: str, request: Request):
        api.servable(plane, model_name, _version(version))  # TFServing's NOT_FOUND for a version not served
        headers = dict(request.headers)
        body, _ = v1_request(await read_body(request, body_limit), headers)
        response, response_headers = await plane.predict_v1(model_name, body, headers, InferenceVerb.PREDICT,
                                                            version=version)
        return json_response(response, headers=response_headers or None)
