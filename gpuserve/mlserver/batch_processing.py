"""`mlserver infer`: a file of V2 inference requests (one JSON object a line) sent to a V2 server by `workers`
concurrent senders, `batch_size` lines merged into one request (MLServer's adaptive batching merge, split back
per line), every answer written as one JSON line of the output file with its line's `batch_index`.

As MLServer 1.7.1's command: a line without an `id` gets a UUID, the request carries it as `x-request-id` and
`seldon-puid`; a merged request gets a new id, and each line's answer names it as `inference_id`; outputs are
decoded and written as NumPy-codec tensors (flat `data`, the server's output parameters kept without
`binary_data_size`); a line that is not a valid request, or whose request failed after `retries` tries, is
written as `{"parameters": {"batch_index": i}, "error": {"status": "preprocessing error", "msg": ...}}`.
Lines are written as their answers come, not in file order. Beyond MLServer: a line that is not JSON gets its
error line too (MLServer 1.7.1 drops it, and with it the other lines of its micro-batch), and `--transport
grpc` works (the V2 gRPC service, with the `grpc` extra), where MLServer refuses it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import orjson
from pydantic import ValidationError

from gpuserve.datatypes import to_numpy_dtype
from gpuserve.mlserver.batching.requests import BatchedRequests
from gpuserve.mlserver.codecs import NumpyCodec
from gpuserve.mlserver.types import InferenceRequest, InferenceResponse, Parameters, to_native_request
from gpuserve.mlserver.utils import generate_uuid

logger = logging.getLogger("gpuserve")
CHOICES_TRANSPORT = ["rest", "grpc"]
RETRY_SLEEP_TIME = 1.0
REPORT_EVERY = 100


class BadParameter(ValueError):
    """A command-line value the command cannot work with (MLServer's click.BadParameter)."""


@dataclass
class BatchInputItem:
    index: int
    item: bytes


@dataclass
class BatchOutputItem:
    index: int
    item: bytes


def _headers(items: List[str]) -> Dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition(":")
        if not sep or not key.strip():
            logger.error("Cannot process '%s' as valid header. Ignoring.", item)
            continue
        out[key.strip()] = value.strip()
    return out


def _error_item(index: int, message: Any) -> BatchOutputItem:
    body = {"parameters": {"batch_index": index}, "error": {"status": "preprocessing error", "msg": message}}
    return BatchOutputItem(index, json.dumps(body, default=str).encode())  # json's spacing, as MLServer's


def preprocess_items(items: List[BatchInputItem]) -> Tuple[Optional[BatchedRequests], List[BatchOutputItem],
                                                             Dict[str, int]]:
    """(the merged requests, the lines that are not requests, each request's line by its id)."""
    requests: Dict[str, InferenceRequest] = {}
    indices: Dict[str, int] = {}
    invalid = []
    for item in items:
        try:
            request = InferenceRequest.model_validate(orjson.loads(item.item))
        except (ValidationError, ValueError) as exc:
            logger.error("preprocessing error: batch_index=%d, error=%r", item.index, exc)
            message = exc.errors() if isinstance(exc, ValidationError) else str(exc)
            invalid.append(_error_item(item.index, message))
            continue
        if request.id is None:
            request.id = generate_uuid()
        key = request.id if request.id not in requests else f"{request.id}\0{item.index}"  # two lines, one id:
        requests[key] = request  # both answered (MLServer's dict keeps the last one and loses the other)
        indices[key] = item.index
    if not requests:
        return None, invalid, indices
    batched = BatchedRequests(requests)
    batched.merged_request.id = next(iter(requests.values())).id if len(requests) == 1 else generate_uuid()
    return batched, invalid, indices


def _mlserver_response(native) -> InferenceResponse:
    """The server's answer as MLServer's command writes it: each output decoded, then NumPy-encoded."""
    outputs = []
    for tensor in native.outputs:
        output = NumpyCodec.encode_output(tensor.name, tensor.as_numpy())
        parameters = dict(tensor.parameters or {})
        if parameters:
            parameters.pop("binary_data_size", None)
            output.parameters = Parameters(**parameters)
        outputs.append(output)
    return InferenceResponse(model_name=native.model_name, model_version=native.model_version or None,
                             id=native.id, parameters=native.parameters or None, outputs=outputs)


def postprocess_items(response: InferenceResponse, batched: BatchedRequests,
                      indices: Dict[str, int]) -> List[BatchOutputItem]:
    out = []
    for request_id, part in batched.split_response(response).items():
        parameters = {"batch_index": indices[request_id], "inference_id": response.id}
        if part.parameters:
            parameters.update(part.parameters.model_dump())
        part.parameters = Parameters(**parameters)
        out.append(BatchOutputItem(indices[request_id], part.model_dump_json().encode()))
    return out


class RestSender:
    """V2 REST through httpx: JSON, or the binary tensor extension with `binary_data`."""

    def __init__(self, url: str, workers: int, timeout: float, use_ssl: bool, insecure: bool, verbose: bool):
        import httpx

        self.base = f"{'https' if use_ssl else 'http'}://{url}"
        self.verbose = verbose
        self.client = httpx.AsyncClient(timeout=timeout, verify=not insecure,
                                        limits=httpx.Limits(max_connections=workers))

    async def infer(self, model: str, request, headers: Dict[str, str]):
        from gpuserve.types import InferResponse

        body, json_length = request.to_rest()
        headers = {**headers}
        if json_length is not None:
            headers.update({"content-type": "application/octet-stream",
                            "inference-header-content-length": str(json_length)})
        else:
            headers.setdefault("content-type", "application/json")
            body = orjson.dumps(body) if not isinstance(body, (bytes, bytearray)) else body
        if self.verbose:
            logger.info("POST %s/v2/models/%s/infer, headers %s", self.base, model, headers)
        answer = await self.client.post(f"{self.base}/v2/models/{model}/infer", content=body, headers=headers)
        if answer.status_code != 200:
            try:
                error = answer.json()
                message = error.get("error", error.get("detail", "")) if isinstance(error, dict) else error
            except ValueError:
                message = answer.text
            text = message if isinstance(message, str) else orjson.dumps(message).decode()
            raise RuntimeError(f"[{answer.status_code}] {text}")
        length = answer.headers.get("inference-header-content-length")
        if length is not None:
            return InferResponse.from_bytes(answer.content, int(length))
        return InferResponse.from_rest(response=answer.json())

    async def close(self) -> None:
        await self.client.aclose()


class GrpcSender:
    """The V2 gRPC service (gpuserve's KServe gRPC client; the `grpc` extra)."""

    def __init__(self, url: str, timeout: float, use_ssl: bool, verbose: bool):
        from gpuserve.inference_client import InferenceGRPCClient

        self.client = InferenceGRPCClient(url, use_ssl=use_ssl, timeout=timeout, verbose=verbose)

    async def infer(self, model: str, request, headers: Dict[str, str]):
        request.model_name = model
        # a merged request's parameters are lists (one value a line), which gRPC's InferParameter cannot hold:
        # they travel as their JSON text
        for owner in [request, *request.inputs]:
            if owner.parameters:
                owner.parameters = {key: json.dumps(value) if isinstance(value, (list, dict)) else value
                                    for key, value in owner.parameters.items()}
        metadata = [(key.lower(), value) for key, value in headers.items() if key.lower() != "content-type"]
        return await self.client.infer(request, headers=metadata)

    async def close(self) -> None:
        await self.client.close()


async def send_request(sender, model: str, request, headers: Dict[str, str], retries: int, worker: int):
    for attempt in range(max(retries, 1)):
        try:
            return await sender.infer(model, request, headers)
        except Exception as exc:
            logger.error("consumer %d: retries %d/%d, exception %s", worker, attempt + 1, retries, exc)
            if attempt + 1 >= retries:
                raise
            await asyncio.sleep(RETRY_SLEEP_TIME)


async def process_items(items: List[BatchInputItem], model: str, worker: int, retries: int, sender,
                        headers: Dict[str, str], binary_data: bool) -> List[BatchOutputItem]:
    batched, invalid, indices = preprocess_items(items)
    if batched is None:
        return invalid
    try:
        native = _native(batched, model, binary_data)
    except Exception as exc:  # lines that cannot travel as one request: each says why
        logger.error("consumer %d: failed to preprocess items: %s", worker, exc)
        return [_error_item(index, str(exc)) for index in indices.values()] + invalid
    request_id = batched.merged_request.id
    sent_headers = {**headers, "seldon-puid": request_id, "x-request-id": request_id}
    try:
        answer = await send_request(sender, model, native, sent_headers, retries, worker)
    except Exception as exc:
        logger.error("consumer %d: failed to process task: %s", worker, exc)
        return [_error_item(index, str(exc)) for index in indices.values()] + invalid
    try:
        return postprocess_items(_mlserver_response(answer), batched, indices) + invalid
    except Exception as exc:  # an answer that cannot be split back is each line's error, never a lost line
        logger.error("consumer %d: failed to postprocess item: %s", worker, exc)
        return [_error_item(index, f"cannot split the answer: {exc}") for index in indices.values()] + invalid


def _native(batched: BatchedRequests, model: str, binary_data: bool):
    """The merged request as it is sent; an input merged from lines of other datatypes takes the first line's,
    as MLServer's merge does."""
    native = to_native_request(batched.merged_request, model)
    for tensor in native.inputs:
        array = tensor.as_numpy()
        if tensor.datatype not in ("BYTES", "BF16") and array.dtype != to_numpy_dtype(tensor.datatype):
            array = array.astype(to_numpy_dtype(tensor.datatype))
        tensor.set_data_from_numpy(array, binary_data=binary_data)
    for output in native.request_outputs or ():
        output.parameters = {**(output.parameters or {}), "binary_data": binary_data}
    return native


async def _produce(queue: asyncio.Queue, path: str, batch_size: int) -> None:
    batch: List[BatchInputItem] = []
    with open(path, "rb") as lines:
        for index, line in enumerate(lines):
            batch.append(BatchInputItem(index, line))
            if len(batch) == batch_size:
                await queue.put(batch)
                batch = []
    if batch:
        await queue.put(batch)


async def _consume(worker: int, queue_in: asyncio.Queue, queue_out: asyncio.Queue, process, interval: float,
                   jitter: float) -> None:
    while True:
        items = await queue_in.get()
        started = time.perf_counter()
        try:
            out = await process(items, worker)
        except Exception as exc:  # every line still gets its answer line
            out = [_error_item(item.index, str(exc)) for item in items]
        if interval > 0 or jitter > 0:
            await asyncio.sleep(max(0.0, interval + random.random() * jitter - (time.perf_counter() - started)))
        await queue_out.put(out)
        queue_in.task_done()


async def _finalize(queue: asyncio.Queue, path: str, counter: List[int]) -> None:
    with open(path, "wb") as out:
        while True:
            items = await queue.get()
            for item in items:
                out.write(item.item + b"\n")
                counter[0] += 1
                if counter[0] % REPORT_EVERY == 0:
                    logger.info("Finalizer: processed instances: %d", counter[0])
            out.flush()
            queue.task_done()


async def process_batch(model_name: str, url: str, workers: int, retries: int, batch_size: int,
                        input_data_path: str, output_data_path: str, binary_data: bool, transport: str,
                        request_headers: List[str], timeout: float, batch_interval: float, batch_jitter: float,
                        use_ssl: bool, insecure: bool, verbose: bool, extra_verbose: bool) -> int:
    """The lines of `input_data_path` answered into `output_data_path`; returns how many lines were written."""
    begun = time.perf_counter()
    if transport not in CHOICES_TRANSPORT:
        raise BadParameter(f"transport must be one of {CHOICES_TRANSPORT}, not {transport!r}")
    if workers < 1 or batch_size < 1:
        raise BadParameter("workers and batch size must be at least 1")
    if not os.path.isfile(input_data_path):
        raise BadParameter(f"Provided input file path '{input_data_path}' does not exist.")
    if not os.access(os.path.dirname(os.path.abspath(output_data_path)), os.W_OK):
        raise BadParameter(f"Provided output file path '{output_data_path}' is not writable.")
    headers = _headers(list(request_headers))
    for label, value in (("server url", url), ("model name", model_name), ("request headers", headers),
                         ("input file path", input_data_path), ("output file path", output_data_path),
                         ("workers", workers), ("retries", retries), ("batch interval", batch_interval),
                         ("batch jitter", batch_jitter), ("connection timeout", timeout),
                         ("micro-batch size", batch_size)):
        logger.info("%s: %s", label, value)
    verbose = verbose or extra_verbose
    sender = GrpcSender(url, timeout, use_ssl, extra_verbose) if transport == "grpc" else \
        RestSender(url, workers, timeout, use_ssl, insecure, extra_verbose)

    async def process(items, worker):
        return await process_items(items, model_name, worker, retries, sender, headers, binary_data)

    queue_in: asyncio.Queue = asyncio.Queue(2 * workers)
    queue_out: asyncio.Queue = asyncio.Queue(2 * workers)
    counter = [0]
    consumers = [asyncio.create_task(_consume(w, queue_in, queue_out, process, batch_interval, batch_jitter))
                 for w in range(workers)]
    finalizer = asyncio.create_task(_finalize(queue_out, output_data_path, counter))
    try:
        await _produce(queue_in, input_data_path, batch_size)
        await queue_in.join()
        await queue_out.join()
    finally:
        for task in [*consumers, finalizer]:
            task.cancel()
        await asyncio.gather(*consumers, finalizer, return_exceptions=True)
        await sender.close()
    logger.info("Total processed instances: %d", counter[0])
    logger.info("Time taken: %.2f seconds", time.perf_counter() - begun)
    return counter[0]
