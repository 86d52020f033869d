"""Forwarding to a remote predictor: the default `Model.predict`/`explain` of KServe's transformer pattern.

One pooled httpx client per model (keep-alive, HTTP/1.1), retries on connection failures only, so a
request the predictor may have started is never sent twice. Errors from the predictor keep their
status so the caller's client sees what the predictor said.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

import orjson

from gpuserve.errors import InvalidInput, RemotePredictorError, UnsupportedProtocol
from gpuserve.types import InferRequest, InferResponse

_LENGTH_HEADER = "inference-header-content-length"


class RemotePredictor:
    def __init__(self) -> None:
        self._http = None
        self._grpc = None

    def _client(self, model):
        if self._http is None:
            import httpx

            transport = httpx.AsyncHTTPTransport(retries=max(int(model.retries or 0), 0))
            self._http = httpx.AsyncClient(transport=transport, timeout=model.timeout)
        return self._http

    @staticmethod
    def _base(model, host: str) -> str:
        if host.startswith(("http://", "https://")):
            return host.rstrip("/")
        return f"{'https' if model.use_ssl else 'http'}://{host}"

    async def _post(self, model, url: str, body: Any, headers: Optional[dict]) -> Any:
        reply = await self._send(model, url, body, headers)
        try:
            return orjson.loads(reply.content)
        except orjson.JSONDecodeError:
            raise RemotePredictorError(f"predictor at {url} returned invalid JSON", status=502) from None

    async def _send(self, model, url: str, body: Any, headers: Optional[dict], json_length: Optional[int] = None):
        """POST a JSON body, or bytes whose first `json_length` are JSON (binary tensors follow)."""
        import httpx

        forward = {"content-type": "application/json"}
        if json_length is not None:
            forward = {"content-type": "application/octet-stream", _LENGTH_HEADER: str(json_length)}
        if headers:
            for key in ("x-request-id", "x-b3-traceid", "traceparent", "authorization"):
                if key in headers:
                    forward[key] = headers[key]
        content = body if isinstance(body, (bytes, bytearray, memoryview)) else _json(body)
        try:
            reply = await self._client(model).post(url, content=content, headers=forward)
        except httpx.TimeoutException as exc:
            raise RemotePredictorError(f"predictor at {url} timed out: {exc}", status=504) from None
        except httpx.HTTPError as exc:
            raise RemotePredictorError(f"predictor at {url} unreachable: {exc}", status=502) from None
        if reply.status_code >= 400:
            try:
                detail = reply.json().get("error", reply.text)
            except ValueError:
                detail = reply.text
            raise RemotePredictorError(f"predictor answered {reply.status_code}: {detail}", status=reply.status_code)
        return reply

    async def predict(self, model, payload: Any, headers: Optional[dict]) -> Any:
        protocol = model.protocol or "v1"
        if protocol == "grpc-v2":
            from gpuserve.remote_grpc import grpc_infer

            if not isinstance(payload, InferRequest):
                raise InvalidInput("the grpc-v2 predictor protocol takes an InferRequest payload")
            return await grpc_infer(model, payload, headers)
        base = self._base(model, model.predictor_host)
        if protocol == "v1":
            if isinstance(payload, InferRequest):
                payload = {"instances": [t.as_numpy() for t in payload.inputs][0]}
            return await self._post(model, f"{base}/v1/models/{model.name}:predict", payload, headers)
        if protocol == "v2":
            json_length = None
            if isinstance(payload, InferRequest):
                body, json_length = payload.to_rest()  # binary inputs travel binary, as KServe's client sends them
            elif isinstance(payload, dict):
                body = payload
            else:
                raise InvalidInput("the v2 predictor protocol takes an InferRequest or a V2 JSON dict")
            url = f"{base}/v2/models/{model.name}/infer"
            reply = await self._send(model, url, body, headers, json_length)
            answer_length = reply.headers.get(_LENGTH_HEADER)
            try:
                if answer_length is not None:
                    return InferResponse.from_bytes(reply.content, int(answer_length))
                return InferResponse.from_rest(orjson.loads(reply.content))
            except orjson.JSONDecodeError:
                raise RemotePredictorError(f"predictor at {url} returned invalid JSON", status=502) from None
        raise UnsupportedProtocol(f"unsupported predictor protocol '{protocol}'")

    async def explain(self, model, payload: Any, headers: Optional[dict], host: str) -> Any:
        if (model.protocol or "v1") != "v1":
            raise UnsupportedProtocol("explain is defined by the V1 protocol only")
        return await self._post(model, f"{self._base(model, host)}/v1/models/{model.name}:explain", payload, headers)

    async def is_ready(self, model) -> bool:
        """The predictor's readiness for this model; any failure to ask counts as not ready."""
        if (model.protocol or "v1") == "grpc-v2":
            from gpuserve.remote_grpc import grpc_model_ready

            return await grpc_model_ready(model)
        import httpx

        base = self._base(model, model.predictor_host)
        path = f"/v1/models/{model.name}" if (model.protocol or "v1") == "v1" else f"/v2/models/{model.name}/ready"
        try:
            reply = await self._client(model).get(base + path)
        except httpx.HTTPError:
            return False
        return reply.status_code == 200

    def close_soon(self) -> None:
        client, self._http = self._http, None
        if client is None:
            return
        try:
            asyncio.get_running_loop().create_task(client.aclose())
        except RuntimeError:
            pass


def _json(body: Any) -> bytes:
    try:
        return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError as exc:  # orjson reads 1,024 levels of nesting but writes 254
        if "Recursion limit" in str(exc):
            raise InvalidInput(f"the request nests too deeply to forward to the predictor ({exc})") from None
        raise
