"""`kserve.inference_client`: `InferenceRESTClient` (with `RESTConfig`) and `InferenceGRPCClient`, the async
clients KServe's docs show, for scripts that call a server (gpuserve, KServe, Triton) with only the
import changed. REST speaks V1 or V2 as `RESTConfig.protocol` says; gRPC speaks the V2 service.
Failures surface as KServe's do: `httpx.HTTPStatusError` (REST) and `grpc.aio.AioRpcError` (gRPC)."""

from __future__ import annotations

import enum
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import orjson

from gpuserve.errors import UnsupportedProtocol
from gpuserve.types import InferRequest, InferResponse

_LENGTH_HEADER = "inference-header-content-length"


class RESTConfig:
    def __init__(self, transport=None, protocol: Union[str, enum.Enum] = "v1", retries: int = 3, http2: bool = False,
                 timeout: Any = 60, cert=None, verify: Any = True, auth=None, verbose: bool = False):
        self.transport = transport
        self.protocol = protocol.value if isinstance(protocol, enum.Enum) else protocol
        self.retries, self.http2, self.timeout = retries, http2, timeout
        self.cert, self.verify, self.auth, self.verbose = cert, verify, auth, verbose


def _decode_v2(content: bytes, json_length: Optional[str]) -> InferResponse:
    """A V2 answer, JSON or with the binary tensor extension (outputs' bytes after the JSON header), read
    as KServe's client reads it (`InferResponse.from_bytes`: binary outputs become JSON data)."""
    if json_length is None:
        return InferResponse.from_rest(orjson.loads(content))
    return InferResponse.from_bytes(content, int(json_length))


class InferenceRESTClient:
    def __init__(self, config: Optional[RESTConfig] = None):
        import httpx

        self._config = config = config or RESTConfig()
        transport = config.transport or httpx.AsyncHTTPTransport(retries=config.retries, http2=config.http2,
                                                                 verify=config.verify, cert=config.cert)
        self._client = httpx.AsyncClient(transport=transport, timeout=config.timeout, auth=config.auth)

    def _url(self, base_url, path: str):
        import httpx

        base = httpx.URL(str(base_url))
        if base.scheme not in ("http", "https"):
            raise httpx.InvalidURL("Base url should have 'http://' or 'https://' protocol")
        return base.join(base.path.rstrip("/") + "/" + path.lstrip("/"))

    def _protocol(self, *allowed: str) -> str:
        protocol = self._config.protocol
        if protocol not in allowed:
            raise UnsupportedProtocol(f"Unsupported protocol {protocol}.")
        return protocol

    @staticmethod
    def _check(response) -> None:
        if response.is_success:
            return
        import httpx

        detail = ""
        if response.headers.get("content-type", "").startswith("application/json"):
            try:
                detail = response.json().get("error", "")
            except ValueError:
                pass
        raise httpx.HTTPStatusError(f"{detail}, '{response.status_code} {response.reason_phrase}' for url "
                                    f"'{response.url}'", request=response.request, response=response)

    async def infer(self, base_url, data: Union[InferRequest, dict], model_name: Optional[str] = None,
                    headers: Optional[Mapping[str, str]] = None, response_headers: Optional[Dict[str, str]] = None,
                    is_graph_endpoint: bool = False, timeout: Any = None) -> Union[InferResponse, Dict]:
        if is_graph_endpoint:
            url = base_url
        elif model_name is None:
            raise ValueError("model_name should not be 'None'")
        elif self._protocol("v1", "v2") == "v1":
            url = self._url(base_url, f"v1/models/{model_name}:predict")
        else:
            url = self._url(base_url, f"v2/models/{model_name}/infer")
        headers = dict(headers or {})
        if isinstance(data, InferRequest):
            data, json_length = data.to_rest()
            if json_length:
                headers[_LENGTH_HEADER] = str(json_length)
                headers["content-type"] = "application/octet-stream"
        if isinstance(data, dict):
            data = orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)
            headers.setdefault("content-type", "application/json")
        extra = {} if timeout is None else {"timeout": timeout}
        response = await self._client.post(url, content=data, headers=headers, **extra)
        self._check(response)
        if response_headers is not None:
            response_headers.update(response.headers)
        if is_graph_endpoint or self._config.protocol == "v1":
            return orjson.loads(response.content)
        return _decode_v2(response.content, response.headers.get(_LENGTH_HEADER))

    async def explain(self, base_url, model_name: str, data: Dict, headers: Optional[Mapping[str, str]] = None,
                      timeout: Any = None) -> Dict:
        self._protocol("v1")
        extra = {} if timeout is None else {"timeout": timeout}
        response = await self._client.post(self._url(base_url, f"v1/models/{model_name}:explain"),
                                           content=orjson.dumps(data), headers=headers, **extra)
        self._check(response)
        return orjson.loads(response.content)

    async def _get(self, base_url, path: str, headers, timeout):
        extra = {} if timeout is None else {"timeout": timeout}
        return await self._client.get(self._url(base_url, path), headers=headers, **extra)

    async def is_server_ready(self, base_url, headers: Optional[Mapping[str, str]] = None, timeout: Any = None) -> bool:
        self._protocol("v2")
        response = await self._get(base_url, "v2/health/ready", headers, timeout)
        self._check(response)
        return bool(response.json().get("ready"))

    async def is_server_live(self, base_url, headers: Optional[Mapping[str, str]] = None, timeout: Any = None) -> bool:
        if self._protocol("v1", "v2") == "v1":
            response = await self._get(base_url, "", headers, timeout)
            self._check(response)
            return str(response.json().get("status", "")).lower() == "alive"
        response = await self._get(base_url, "v2/health/live", headers, timeout)
        self._check(response)
        return bool(response.json().get("live"))

    async def is_model_ready(self, base_url, model_name: str, headers: Optional[Mapping[str, str]] = None,
                             timeout: Any = None) -> bool:
        if self._protocol("v1", "v2") == "v1":
            response = await self._get(base_url, f"v1/models/{model_name}", headers, timeout)
            if response.status_code == 503:  # not ready; KServe's V1 says so with a 503
                return False
            self._check(response)
            return bool(response.json().get("ready"))
        response = await self._get(base_url, f"v2/models/{model_name}/ready", headers, timeout)
        return response.is_success  # V2: 200 ready, anything else not

    async def close(self) -> None:
        await self._client.aclose()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


class InferenceGRPCClient:
    """The V2 gRPC service, on one grpc.aio channel made in the loop of the first call."""

    def __init__(self, url: str, verbose: bool = False, use_ssl: bool = False, root_certificates: Optional[str] = None,
                 private_key: Optional[str] = None, certificate_chain: Optional[str] = None, creds=None,
                 channel_args: Optional[Sequence[Tuple[str, Any]]] = None, timeout: Optional[float] = 60,
                 retries: Optional[int] = 3):
        self.url, self.verbose, self.use_ssl, self.creds = url, verbose, use_ssl, creds
        self._certs = (root_certificates, private_key, certificate_chain)
        self._options = list(channel_args or [("grpc.max_send_message_length", -1),
                                              ("grpc.max_receive_message_length", -1)])
        self._timeout, self.retries = timeout, retries
        self._channel = None
        self._stub = None

    def _service(self):
        if self._stub is None:
            import grpc

            from gpuserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

            if self.use_ssl or self.creds is not None:
                creds = self.creds or grpc.ssl_channel_credentials(*(_read(path) for path in self._certs))
                self._channel = grpc.aio.secure_channel(self.url, creds, options=self._options)
            else:
                self._channel = grpc.aio.insecure_channel(self.url, options=self._options)
            self._stub = GRPCInferenceServiceStub(self._channel)
        return self._stub

    def _kwargs(self, timeout, headers) -> dict:
        return {"timeout": self._timeout if timeout is None else timeout, "metadata": headers}

    async def infer(self, infer_request, timeout: Optional[float] = None, headers=None) -> InferResponse:
        """An InferRequest (sent as its `to_grpc()`) or a ModelInferRequest; the answer is read with
        `InferResponse.from_grpc`, as KServe's client reads it."""
        request = infer_request.to_grpc() if isinstance(infer_request, InferRequest) else infer_request
        reply = await self._service().ModelInfer(request, **self._kwargs(timeout, headers))
        return InferResponse.from_grpc(reply)

    async def is_server_ready(self, timeout: Optional[float] = None, headers=None) -> bool:
        from gpuserve.protocol.grpc import grpc_predict_v2_pb2 as pb

        return (await self._service().ServerReady(pb.ServerReadyRequest(), **self._kwargs(timeout, headers))).ready

    async def is_server_live(self, timeout: Optional[float] = None, headers=None) -> bool:
        from gpuserve.protocol.grpc import grpc_predict_v2_pb2 as pb

        return (await self._service().ServerLive(pb.ServerLiveRequest(), **self._kwargs(timeout, headers))).live

    async def is_model_ready(self, model_name: str, timeout: Optional[float] = None, headers=None) -> bool:
        from gpuserve.protocol.grpc import grpc_predict_v2_pb2 as pb

        request = pb.ModelReadyRequest(name=model_name)
        return (await self._service().ModelReady(request, **self._kwargs(timeout, headers))).ready

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


def _read(path: Optional[str]) -> Optional[bytes]:
    if path is None:
        return None
    with open(path, "rb") as file:
        return file.read()
