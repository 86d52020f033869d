"""A black-box explainer's predictor: the inference model over V2 REST at `infer_uri`, as MLServer's
`remote_predict` / `to_v2_inference_request` ask it, with a timeout on every call and, while the explainer
loads, patience with a model (or server) that is not up yet.

alibi calls the predictor synchronously, many times per explanation; it runs on the model's own thread
(runtime.py), never on the event loop, so a call to this same server is answered while it waits.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from typing import List, Optional, Union

import httpx
import numpy as np

from gpuserve.datatypes import from_numpy_dtype, to_numpy_dtype
from gpuserve.mlserver.errors import MLServerError

SELDON_SKIP_LOGGING_HEADER = "Seldon-Skip-Logging"
DEFAULT_INPUT_NAME = "predict"  # what the inference model's input is called when its metadata names none
INFER_TIMEOUT_S = float(os.environ.get("GPUSERVE_ALIBI_EXPLAIN_TIMEOUT", 60))
LOAD_WAIT_S = 60.0  # how long a load waits for an inference model that answers "not (yet) loaded": 404, 503
CONNECT_WAIT_S = 5.0  # ... and for one whose server refuses the connection (not listening yet)


class RemoteInferenceError(MLServerError):
    """The inference model answered with an error (MLServer's words): a 4xx stays a 400; a model that cannot
    be reached, or answers 5xx, is a 502."""

    def __init__(self, code: int, reason: str):
        super().__init__(f"Remote inference call failed with {code}, {reason}", 400 if code < 500 else 502)


class RemoteModel:
    """Callable as alibi's predictor: an array (or a list of strings) in, the model's first output (or
    `infer_output`) out, decoded as NumPy with a trailing axis of one dropped."""

    def __init__(self, infer_uri: str, infer_output: Optional[str] = None, ssl_verify_path: Optional[str] = None,
                 timeout: float = INFER_TIMEOUT_S):
        self.infer_uri = infer_uri
        self.infer_output = infer_output
        self.timeout = timeout
        self.metadata: Optional[dict] = None
        self.loading = False  # set by the runtime while the explainer loads
        self._http = httpx.Client(timeout=timeout, verify=ssl_verify_path or True)

    def close(self) -> None:
        self._http.close()

    def __call__(self, input_data: Union[np.ndarray, List[str]]) -> np.ndarray:
        if self.metadata is None and "/v2/pipelines/" not in self.infer_uri:
            self.metadata = self.call("GET", re.sub(r"/infer$", "", self.infer_uri))
        answer = self.call("POST", self.infer_uri, self.request(input_data))
        outputs = answer.get("outputs") or []
        if not outputs:
            raise RemoteInferenceError(200, f"no outputs in the answer of {self.infer_uri}")
        decoded = _decode(outputs[0])
        if decoded.ndim > 1 and decoded.shape[-1] == 1:
            decoded = decoded.squeeze(axis=decoded.ndim - 1)  # [N, 1] -> [N], as alibi expects
        return decoded

    def request(self, input_data: Union[np.ndarray, List[str]]) -> dict:
        """As MLServer's `to_v2_inference_request`: the metadata's first input name, its first output (or
        `infer_output`), NumPy-encoded (a list of strings: `str`)."""
        metadata = self.metadata or {}
        input_name = (metadata.get("inputs") or [{}])[0].get("name", DEFAULT_INPUT_NAME)
        outputs: List[dict] = []
        if self.infer_output:
            outputs = [{"name": self.infer_output}]
        elif metadata.get("outputs"):
            first = metadata["outputs"][0]
            outputs = [{"name": first["name"], "parameters": first.get("parameters")}]
        if isinstance(input_data, list):
            content_type = "str"
            tensor = {"name": input_name, "shape": [len(input_data), 1], "datatype": "BYTES",
                      "data": [str(item) for item in input_data]}
        else:
            content_type = "np"
            array = np.asarray(input_data)
            if array.ndim == 1:
                array = array.reshape(-1, 1)  # as MLServer's NumpyCodec: a column
            tensor = {"name": input_name, "shape": list(array.shape), "datatype": from_numpy_dtype(array.dtype),
                      "data": array.ravel().tolist()}
        tensor["parameters"] = {"content_type": content_type}
        return {"id": str(uuid.uuid4()), "parameters": {"content_type": content_type}, "inputs": [tensor],
                "outputs": outputs}

    def call(self, method: str, url: str, body: Optional[dict] = None) -> dict:
        """One call. While loading, a refused connection is retried for CONNECT_WAIT_S and a 404 / 503 (the
        model not loaded yet) for LOAD_WAIT_S; otherwise every failure is a RemoteInferenceError at once."""
        started = time.monotonic()
        while True:
            waited = time.monotonic() - started
            try:
                response = self._http.request(method, url, json=body, headers={SELDON_SKIP_LOGGING_HEADER: "true"})
            except httpx.TimeoutException as exc:
                raise RemoteInferenceError(504, f"no answer from {url} within {self.timeout:g} s "
                                                f"({type(exc).__name__})") from None
            except httpx.HTTPError as exc:
                if self.loading and waited < CONNECT_WAIT_S:
                    time.sleep(0.2)
                    continue
                raise RemoteInferenceError(502, f"cannot reach {url}: {type(exc).__name__}: {exc}") from None
            if response.status_code in (404, 503) and self.loading and waited < LOAD_WAIT_S:
                time.sleep(0.2)
                continue
            if response.status_code != 200:
                raise RemoteInferenceError(response.status_code, f"{response.reason_phrase}: {response.text[:500]}")
            return response.json()


def _decode(output: dict) -> np.ndarray:
    """A JSON V2 output as NumPy (MLServer's NumpyCodec.decode_output)."""
    datatype = output["datatype"]
    data = output.get("data") or []
    if datatype == "BYTES":
        return np.array(data, dtype=object).reshape(output["shape"])
    return np.asarray(data, dtype=to_numpy_dtype(datatype)).reshape(output["shape"])
