"""A BLS call from a process a Python model forked (qa bls test_multiprocess: `multiprocessing.Pool` workers
calling `exec()`). gpuserve serves Python models in its own process, so such a child has a copy of the
server but not the event loop that runs it; the call goes to the server's HTTP endpoint on loopback instead,
tensors in the binary extension, and its refusals come back as the errors the in-process path raises."""

from __future__ import annotations

import http.client
import json

from gpuserve.errors import InvalidInput, ModelNotFound, Unimplemented
from gpuserve.types import InferRequest, InferResponse

TIMEOUT_S = 600.0  # a BLS call waits as long as the callee takes; this only ends a call to a vanished server
_LENGTH = "Inference-Header-Content-Length"


def infer_over_loopback(host: str, port: int, request: InferRequest) -> InferResponse:
    from gpuserve.triton_bls import PythonModelError

    for tensor in request.inputs:
        tensor.set_data_from_numpy(tensor.as_numpy(), binary_data=True)
    request.parameters = {**(request.parameters or {}), "binary_data_output": True}
    body, json_length = request.to_rest()
    headers = {"Content-Type": "application/octet-stream"}
    if json_length is not None:
        headers[_LENGTH] = str(json_length)
    else:
        body = json.dumps(body).encode()
    path = f"/v2/models/{request.model_name}" + \
        (f"/versions/{request.model_version}" if request.model_version else "") + "/infer"
    connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
    try:
        connection.request("POST", path, body=body, headers=headers)
        answer = connection.getresponse()
        content, length = answer.read(), answer.getheader(_LENGTH)
    finally:
        connection.close()
    if answer.status != 200:
        try:
            message = json.loads(content).get("error", "")
        except ValueError:
            message = content.decode("utf-8", "replace")
        raise _refusal(answer.status, message, request.model_name, PythonModelError)
    if length is not None:
        return InferResponse.from_bytes(content, int(length))
    return InferResponse.from_rest(response=json.loads(content))


def _refusal(status: int, message: str, model: str, model_error) -> Exception:
    """The error the in-process call would have raised, as far as the answer tells it: the server's
    refusals (unknown or unready model, a decoupled one, bad input) or the callee's own words."""
    if status in (404, 503) or message.startswith("Request for unknown model") or \
            message.endswith(f"Model with name {model} is not ready."):
        return ModelNotFound(model)
    if "decoupled transaction policy" in message:
        return Unimplemented(message)
    if 400 <= status < 500 and not message.startswith("Failed to process the request(s)"):
        return InvalidInput(message)
    return model_error(message)
