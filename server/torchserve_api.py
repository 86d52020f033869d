"""TorchServe's inference API and its management reads over the data plane, free of any transport (its writes:
torchserve_manage.py).

`predictions(plane, name, version, entry, headers)` is one TorchServe prediction: `entry` is the dict the handler
gets as its list item (`{"body": bytearray}` for a raw body, `{"body": <parsed>}` for JSON, one key per form
part; `entry_from_body` builds it from an HTTP body as TorchServe 0.12's frontend does), `headers` the request's
headers. It answers `(payload: bytes, content_type: str | None, status: int)`, errors included as TorchServe's
JSON body (`{"code", "type", "message"}`), so a transport only writes them out; pass `response_headers={}` to get
the headers the handler set. REST uses it (server/rest/torchserve.py); a gRPC InferenceAPIsService can too
(its `PredictionsRequest.input` map is `entry` with bytes values).

Checked against TorchServe 0.12 itself (a probe handler echoing what it got, curl on both sides):
- the entry: raw body -> {"body": bytearray}; application/json -> parsed (bytearray when it does not parse);
  text/* -> str; multipart/form-data and x-www-form-urlencoded -> ONE entry, each part/field a key (bytearray);
- headers: the request's, each part's {"content-type": ...} under its name, "explain": "False", "url_path": "";
- answers: bytes as they are, str as UTF-8, anything else json.dumps(indent=2); no content type unless the
  handler sets one; the status the handler set (200 else);
- errors: 404 ModelNotFoundException "Model not found: NAME", 404 ModelVersionNotFoundException "Model version:
  V does not exist for model: NAME", 503 InternalServerException "Prediction failed" for a handler's exception,
  all as 2-space-indented JSON with content type application/json.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple
from urllib.parse import parse_qsl

from gpuserve.dataplane import DataPlane
from gpuserve.errors import GpuserveError, ModelNotReady, QueueFull
from gpuserve.torchserve import stream
from gpuserve.torchserve.model import ENTRY_INPUT, Answer, Entry, TorchServeModel, object_input
from gpuserve.types import InferRequest

JSON = "application/json"
JOB_QUEUE_SIZE = 100  # TorchServe's job_queue_size: describe's remainingCapacity when the model sets no bound
STARTED = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


class TorchServeError(Exception):
    def __init__(self, code: int, kind: str, message: str):
        super().__init__(message)
        self.code, self.kind, self.message = code, kind, message

    def reply(self) -> Tuple[bytes, str, int]:
        return error_body(self.code, self.kind, self.message), JSON, self.code


def error_body(code: int, kind: str, message: str) -> bytes:
    return json.dumps({"code": code, "type": kind, "message": message}, indent=2).encode()


def not_found(name: str) -> TorchServeError:
    return TorchServeError(404, "ModelNotFoundException", f"Model not found: {name}")


def _parts(body: bytes, content_type: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """multipart/form-data: each part a key, its bytes (bytearray) and its {"content-type"}."""
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    entry, headers = {}, {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name is None:
            continue
        entry[name] = bytearray(part.get_payload(decode=True) or b"")
        is_file = part.get_param("filename", header="content-disposition") is not None
        headers[name] = {"content-type": part.get_content_type() if part.get("content-type") else
                         ("application/octet-stream" if is_file else "")}
    return entry, headers


def entry_from_body(body: bytes, content_type: Optional[str]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(the handler's entry, the per-part headers) for one HTTP body, as TorchServe 0.12 builds them."""
    content_type = content_type or ""
    media = content_type.split(";")[0].strip().lower()
    if media.startswith("multipart/form-data"):
        return _parts(body, content_type)
    if media == "application/x-www-form-urlencoded":
        fields = parse_qsl(body.decode("latin-1"))
        return {k: bytearray(v.encode("latin-1")) for k, v in fields}, {k: {"content-type": ""} for k, _ in fields}
    value: Any = bytearray(body)
    if media == JSON:
        try:
            value = json.loads(body)
        except ValueError:
            pass
    elif media.startswith("text"):
        value = body.decode("utf-8", errors="replace")
    return {"body": value}, {"body": {"content-type": content_type}}


def find(plane: DataPlane, name: str, version: Optional[str]):
    """The model a TorchServe path names, or TorchServe's error."""
    versions = plane.repository.versions(name) if name else {}
    if not versions:
        raise not_found(name)
    if version not in (None, "") and version not in versions:
        raise TorchServeError(404, "ModelVersionNotFoundException",
                              f"Model version: {version} does not exist for model: {name}")
    model = plane.repository.get_model(name, version or None)
    if model is None:
        raise not_found(name)
    return model


def _unavailable(model, version: Optional[str]) -> TorchServeError:
    """TorchServe 0.12's words (seen from it, for a model scaled to 0 workers) when no worker of the model is
    up; the version only where the request named one, its quote as TorchServe places it."""
    shown = f'" Version {version}' if version else ""
    return TorchServeError(503, "ServiceUnavailableException",
                           f'Model "{model.name}{shown}" has no worker to serve inference request. Please use scale '
                           "workers API to add workers. If this is a sequence inference, please check if it is "
                           "closed, or expired; or exceeds maxSequenceJobQueueSize")


def _encoded(value: Any) -> bytes:
    """One answer as TorchServe's worker writes it (ts/protocol/otf_message_handler.py)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if type(value).__module__ == "torch" and type(value).__name__ == "Tensor":
        import io

        import torch

        buffer = io.BytesIO()
        torch.save(value, buffer)
        return buffer.getvalue()
    return json.dumps(value, indent=2).encode("utf-8")


async def answer(plane: DataPlane, name: str, version: Optional[str], entry: Dict[str, Any],
                 headers: Optional[Dict[str, Any]] = None, rest: bool = True, request_id: Optional[str] = None,
                 model=None) -> Answer:
    """One TorchServe prediction's Answer (the handler's item, or its batch's failure in `error`); TorchServeError
    when no archive answers (not found, not ready, not an archive). `rest=False` (gRPC) gives the handler only each
    input's {"content-type": ""}, as TorchServe's gRPC frontend does: no "explain"/"url_path", no metadata.
    `model`: the one `find` gave the caller already."""
    model = model or find(plane, name, version)
    # TorchServe counts a request that found its model, served or not (server/torchserve_metrics.py)
    counts = COUNTS.setdefault((model.name, version or "default"), [0, 0.0, 0.0])
    counts[0] += 1
    if not getattr(model, "ready", False):
        raise _unavailable(model, version)
    if not is_archive(model):
        raise TorchServeError(400, "BadRequestException", f"model '{name}' is not a TorchServe archive: ask it "
                              "on KServe V1 (/v1/models/NAME:predict) or V2 (/v2/models/NAME/infer)")
    request_id = request_id or str(uuid.uuid4())
    parts = {k: {"content-type": ""} for k in entry}
    all_headers = {"explain": "False", "url_path": "", **parts, **(headers or {})} if rest else parts
    request = InferRequest(model.name, [object_input(ENTRY_INPUT, [Entry(entry, all_headers, request_id)])],
                           request_id=request_id, model_version=getattr(model, "version", None))
    begin = time.monotonic()
    try:
        response, _ = await plane.infer(request, {})
    except (ModelNotReady, QueueFull):
        raise _unavailable(model, version) from None
    except GpuserveError as exc:
        raise TorchServeError(exc.http, "InternalServerException" if exc.http >= 500 else "BadRequestException",
                              str(exc)) from None
    found = response.outputs[0].as_numpy()[0]
    if found.error is None:
        counts[1] += (time.monotonic() - begin) * 1e6
        counts[2] += found.queued_us
    return found


# TorchServe's own request metrics (server/metrics.py exposes them as its ts_* counters): per (model, the
# version the request named or "default"), [requests that reached the model, µs answering the successful ones,
# µs they queued]; and its Requests2XX/4XX/5XX, per HTTP status class of its API's answers
COUNTS: Dict[Tuple[str, str], List[float]] = {}
STATUSES: Dict[str, int] = {}


def count_status(status: int) -> None:
    key = f"Requests{status // 100}XX"
    STATUSES[key] = STATUSES.get(key, 0) + 1


def is_archive(model) -> bool:
    """A TorchServe archive's model: in the server process, or in parallel workers (minWorkers > 1)."""
    return isinstance(model, TorchServeModel) or getattr(getattr(model, "settings", None), "implementation", None) \
        == "torchserve" and getattr(model, "workers", 0) > 0


def failure_kind(found: Answer) -> str:
    return "ServiceUnavailableException" if found.status == 503 and found.error != "Prediction failed" \
        else "InternalServerException"


def encoded(found: Answer) -> bytes:
    """The handler's item as the worker writes it; TorchServeError when it cannot be."""
    try:
        return _encoded(found.value)
    except TypeError:
        raise TorchServeError(503, "InternalServerException", "Unsupported model output data type.") from None


async def predictions(plane: DataPlane, name: str, version: Optional[str], entry: Dict[str, Any],
                      headers: Optional[Dict[str, Any]] = None, response_headers: Optional[Dict[str, str]] = None
                      ) -> Tuple[bytes, Optional[str], int]:
    """One TorchServe prediction: (payload, content type or None, HTTP status); never raises for the client's
    or the handler's errors (they are TorchServe's JSON bodies). A handler that sent intermediate answers makes the
    payload an async iterator of the answer's parts (status 200: TorchServe streams such answers chunked)."""
    try:
        parts, found = await streamed(plane, name, version, entry, headers)
        if parts is not None:
            return parts, None, 200
        if found.error is not None:
            return error_body(found.status, failure_kind(found), found.error), JSON, found.status
        payload = encoded(found)
    except TorchServeError as exc:
        return exc.reply()
    set_headers = dict(found.headers or {})
    content_type = next((v for k, v in set_headers.items() if k.lower() == "content-type"), None)
    if response_headers is not None:
        response_headers.update({k: v for k, v in set_headers.items() if k.lower() != "content-type"})
    return payload, content_type, found.status or 200


async def streamed(plane: DataPlane, name: str, version: Optional[str], entry: Dict[str, Any],
                   headers: Optional[Dict[str, Any]] = None, rest: bool = True):
    """`answer`, listening for the handler's intermediate answers (gpuserve/torchserve/stream.py) where its
    handler can send them (`streams`; the others' requests open no channel): (None, the Answer) when the handler
    sent none, else (the answer's parts as they come, each encoded as the worker encodes an answer, the final item
    last; None). TorchServeError as `answer`."""
    model = find(plane, name, version)
    if not getattr(model, "streams", False):
        return None, await answer(plane, name, version, entry, headers, rest, model=model)
    request_id = str(uuid.uuid4())
    queue = stream.open_channel(request_id)
    task = asyncio.ensure_future(answer(plane, name, version, entry, headers, rest, request_id, model))
    first = asyncio.ensure_future(queue.get())
    try:
        await asyncio.wait({task, first}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        first.cancel()
        stream.close_channel(request_id)
        raise
    if not first.done():
        first.cancel()
        stream.close_channel(request_id)
        return None, task.result()  # (its TorchServeError, if any, raised here)
    return _answer_parts(first.result(), queue, task, request_id), None


async def _answer_parts(first: Any, queue: "asyncio.Queue", task: "asyncio.Future", request_id: str
                        ) -> AsyncIterator[bytes]:
    """The intermediate items, then the final one (or the batch's failure, its status already sent as 200)."""
    try:
        yield _encoded(first)
        while not task.done() or not queue.empty():
            following = asyncio.ensure_future(queue.get())
            await asyncio.wait({task, following}, return_when=asyncio.FIRST_COMPLETED)
            if following.done():
                yield _encoded(following.result())
            else:
                following.cancel()
        found = task.result()
        yield _encoded(found.value) if found.error is None else error_body(found.status, failure_kind(found),
                                                                              found.error)
    finally:
        task.cancel()
        stream.close_channel(request_id)


def of_archive(model) -> bool:
    """A TorchServe archive's model in any state: loaded, scaled to 0, in worker processes, or broken."""
    return isinstance(model, TorchServeModel) or "torchserve" in (
        getattr(getattr(model, "settings", None), "implementation", None), getattr(model, "implementation", None))


def torchserve_models(plane: DataPlane) -> Dict[str, Dict[str, Any]]:
    found: Dict[str, Dict[str, Any]] = {}
    for name, version, model in plane.repository.all_versions():
        if of_archive(model):
            found.setdefault(name, {})[version] = model
    return found


def list_models(plane: DataPlane, limit: int = 100, token: int = 0) -> Dict[str, Any]:
    """TorchServe's `GET /models`: the archives served, one entry per model (its default version's archive), paged
    as its ApiUtils pages them: `limit` (100 where above 100 or negative) from `token`, and `nextPageToken` unless
    the page ran past the end."""
    out = []
    for name, versions in sorted(torchserve_models(plane).items()):
        model = plane.repository.get_model(name, None) or next(iter(versions.values()))
        out.append({"modelName": name, "modelUrl": _url(model)})
    limit = 100 if limit > 100 or limit < 0 else limit
    token = max(token, 0)
    if token + limit > len(out):
        return {"models": out[token:]}
    return {"nextPageToken": str(token + limit), "models": out[token:token + limit]}


def archive_options(model) -> Dict[str, Any]:
    """An archive's TorchServe options (its config entry, model-config.yaml and API writes: gpuserve/torchserve/
    store.py); empty for another model."""
    parameters = getattr(getattr(model, "settings", None), "parameters", None)
    return dict((getattr(parameters, "extra", None) or {}).get("torchserve") or {})


def _url(model) -> str:
    options = archive_options(model)
    uri = getattr(getattr(getattr(model, "settings", None), "parameters", None), "uri", None)
    return options.get("marName") or (os.path.basename(uri) if uri else model.name)


def describe(plane: DataPlane, name: str, version: Optional[str]) -> List[Dict[str, Any]]:
    """TorchServe's `GET /models/NAME[/VERSION|/all]` (a list of one, or of every version for "all")."""
    chosen = list(plane.repository.versions(name).values()) if version == "all" else [find(plane, name, version)]
    if not chosen:
        raise not_found(name)
    return [_description(model) for model in chosen]


def _description(model) -> Dict[str, Any]:
    """One model as TorchServe 0.12's describe writes it (its fields in its order; the timeouts and sequence settings
    from the model's config entry where it has them, else TorchServe's defaults)."""
    settings = getattr(model, "settings", None)
    options = archive_options(model)
    batch = int(getattr(settings, "max_batch_size", None) or 1)
    delay = int(round((getattr(settings, "max_batch_time", 0.0) or 0.0) * 1000)) if batch > 1 else 100
    device = str(getattr(settings, "device", None) or "cpu")
    ready = bool(getattr(model, "ready", False))
    count = int(options["minWorkers"]) if options.get("minWorkers") is not None else \
        int(getattr(settings, "parallel_workers", None) or 1)
    most = max(int(options.get("maxWorkers") or count), count)
    workers = [{"id": str(9000 + i), "startTime": STARTED, "status": "READY", "memoryUsage": 0, "pid": os.getpid(),
                "gpu": device.startswith("cuda"), "gpuUsage": "N/A"} for i in range(count)] if ready else []
    capacity = int(getattr(settings, "max_queue_size", 0) or 0) or JOB_QUEUE_SIZE

    def option(key, default):
        value = options.get(key, default)
        return type(default)(value) if isinstance(default, (int, str)) and not isinstance(default, bool) else value

    # minWorkers workers (processes when more than one); maxWorkers is not scaled to
    return {"modelName": model.name, "modelVersion": str(getattr(model, "version", None) or ""),
            "modelUrl": _url(model), "runtime": "python", "minWorkers": count, "maxWorkers": most, "batchSize": batch,
            "maxBatchDelay": delay, "responseTimeout": option("responseTimeout", 120),
            "startupTimeout": option("startupTimeout", 120),
            "maxRetryTimeoutInSec": option("maxRetryTimeoutInSec", 300),
            "clientTimeoutInMills": option("clientTimeoutInMills", 0), "parallelType": option("parallelType", ""),
            "parallelLevel": option("parallelLevel", 0), "deviceType": "gpu" if device.startswith("cuda") else "cpu",
            "continuousBatching": bool(options.get("continuousBatching", False)),
            "useJobTicket": bool(options.get("useJobTicket", False)), "useVenv": bool(options.get("useVenv", False)),
            "stateful": False, "sequenceMaxIdleMSec": 0, "sequenceTimeoutMSec": 0, "maxNumSequence": 0,
            "maxSequenceJobQueueSize": 0,
            # TorchServe marks the models it loads from --models / load_models, not those a snapshot restores or
            # its register API adds
            "loadedAtStartup": not (options.get("fromSnapshot") or options.get("registered")), "workers": workers,
            "jobQueueStatus": {"remainingCapacity": capacity, "pendingRequests": 0},
            **({} if ready or count == 0 else {"reason": getattr(model, "reason", "") or "not loaded"})}
