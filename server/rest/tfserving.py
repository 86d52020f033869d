"""TensorFlow Serving's REST routes beside KServe's V1 ones (KServe's TensorFlow runtime is TFServing, so its
users' scripts call these): a model's status (`GET /v1/models/NAME/versions/N`), its metadata (`GET
/v1/models/NAME[/versions/N]/metadata`, the SignatureDefMap as protobuf's JSON), predict on a version (`POST
/v1/models/NAME/versions/N:predict`), and classify and regress on tf.Examples (`POST
/v1/models/NAME[/versions/N]:classify` and `:regress`, TFServing's `{"examples": [...]}` JSON,
rest/tfserving_examples.py). `GET /v1/models/NAME` stays KServe's readiness answer; for a TensorFlow model it also
carries TFServing's `model_version_status` (v1.py). `/labels/LABEL` stands for `/versions/N` in each, for a
models.config's version labels. server/tfserving_api.py and server/tfserving_examples.py hold the meaning,
shared with the gRPC services.
"""

from __future__ import annotations

from typing import Optional

from fastapi import FastAPI
from starlette.requests import Request

from gpuserve.dataplane import DataPlane
from gpuserve.errors import InvalidInput, Unimplemented
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

    # Classify and Regress: TFServing's JSON, the gRPC services' meaning (server/tfserving_examples.py)
    async def on_examples(model_name: str, version: Optional[str], label: Optional[str], request: Request,
                          method: str):
        try:  # TFServing's messages, as the gRPC service takes them: protobuf, the grpc extra's, not a REST need
            from gpuserve.server import tfserving_examples as examples
            from gpuserve.server.grpc import tfserving_pb2 as pb
            from gpuserve.server.rest import tfserving_examples as examples_json
        except ImportError as exc:
            raise Unimplemented(f":{method} needs protobuf (pip install gpuserve[grpc]): {exc}") from None
        message = pb.ClassificationRequest() if method == "classify" else pb.RegressionRequest()
        message.model_spec.name = model_name
        if version is not None:
            message.model_spec.version.value = _version(version)
        elif label is not None:
            message.model_spec.version_label = label
        examples_json.fill_request(await read_body(request, body_limit), message)  # before the model, as TFServing
        if method == "classify":
            answer = await examples.classify(plane, message)
            return json_response(examples_json.classification_json(answer.result))
        answer = await examples.regress(plane, message)
        return json_response(examples_json.regression_json(answer.result))

    for method in ("classify", "regress"):  # each at the three places TFServing's REST takes it
        _examples_routes(app, guard, on_examples, method)


def _examples_routes(app: FastAPI, guard, on_examples, method: str) -> None:
    """`POST /v1/models/NAME[/versions/N|/labels/LABEL]:METHOD` for tf.Examples (classify or regress), each
    handler named for its route (the request metrics' endpoint label)."""

    async def latest(model_name: str, request: Request):
        return await on_examples(model_name, None, None, request, method)

    async def versioned(model_name: str, version: str, request: Request):
        return await on_examples(model_name, version, None, request, method)

    async def labelled(model_name: str, label: str, request: Request):
        return await on_examples(model_name, None, label, request, method)

    summary = f"{method.capitalize()} tf.Examples"
    for handler, name, where, said in ((latest, method, "", ""),
                                       (versioned, f"version_{method}", "/versions/{version}", " on a version"),
                                       (labelled, f"label_{method}", "/labels/{label}", " on a labelled version")):
        handler.__name__ = handler.__qualname__ = name
        app.post(f"/v1/models/{{model_name}}{where}:{method}", tags=["TFServing"], summary=summary + said)(
            guard(handler))
