"""`mlserver_huggingface.HuggingFaceRuntime`: a transformers pipeline behind the V2 protocol, as MLServer's.

A request's inputs become the pipeline's arguments by name (gpuserve.huggingface.codecs): `args` are its
positional arguments, `array_inputs` its first one as a list (how a batch of texts reaches it), every other
input a keyword (`question`, `context`, `candidate_labels`, `max_new_tokens` as `raw`, ...). The pipeline's
result is answered as one `hg_jsonlist` output named `output`, one JSON element per result. With adaptive
batching (max_batch_size > 1) gpuserve merges the requests' inputs by rows and the pipeline is called once
on the batch, as in MLServer; requests of one `args` text each (the form MLServer's examples send) are called
as one list of texts and answered as each alone would have been, where MLServer's merged call passes the texts
as that many positional arguments and fails every request of the batch.

Where it differs from MLServer, on purpose: the pipeline runs on a thread of the model's own (one, so calls
are serialised as MLServer's, which runs them on its event loop), never blocking the server; an argument
the pipeline refuses (TypeError, ValueError, KeyError: a missing or unknown input, a malformed value) is a
400 naming the model and its task (MLServer: 500); the model's metadata says the device it runs on
(`parameters.device`); the pipeline is built once (MLServer builds it twice to warm the hub cache).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from gpuserve.adaptive import MERGED_ROWS
from gpuserve.errors import InvalidInput
from gpuserve.huggingface.codecs import HuggingfaceRequestCodec
from gpuserve.huggingface.common import device_name, load_pipeline_from_settings, pipeline_device
from gpuserve.huggingface.metadata import METADATA
from gpuserve.huggingface.settings import get_huggingface_settings
from gpuserve.mlserver.model import MLModel
from gpuserve.model_thread import ModelThread, close_thread
from gpuserve.mlserver.types import InferenceRequest, InferenceResponse, MetadataModelResponse, Parameters

logger = logging.getLogger("gpuserve")

# What a pipeline raises when the request's arguments do not fit it (the client's fault: 400)
_ARGUMENT_ERRORS = (TypeError, ValueError, KeyError)


class HuggingFaceRuntime(MLModel):
    """A transformers (or optimum) pipeline for one task."""

    def __init__(self, settings: Any):
        self.hf_settings = get_huggingface_settings(settings)
        super().__init__(settings)
        self._model: Any = None
        self.device = "cpu"
        self._thread: Optional[ModelThread] = None

    async def load(self) -> bool:
        task = self.hf_settings.task_name
        logger.info("model '%s': loading the pipeline for task '%s'", self.name, task)
        device = pipeline_device(self.hf_settings, self.settings.device)
        self._thread = ModelThread(f"gpuserve-hf-{self.name}")
        try:
            self._model = await self._thread.run(load_pipeline_from_settings, self.hf_settings, self.settings, device)
        except BaseException:
            close_thread(self)  # no unload follows a failed load
            raise
        self.device = device_name(device)
        logger.info("model '%s': task '%s' on %s (batch size %d)", self.name, task, self.device,
                    getattr(self._model, "_batch_size", None) or 1)
        self._merge_metadata()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        try:
            kwargs = HuggingfaceRequestCodec.decode_request(payload)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise InvalidInput(f"model '{self.name}': cannot decode the request: {exc}") from None
        args = kwargs.pop("args", [])
        array_inputs = kwargs.pop("array_inputs", [])
        merged = MERGED_ROWS.get()
        one_each = not array_inputs and merged is not None and len(args) == len(merged) and set(merged) == {1}
        if array_inputs:
            args = [list(array_inputs)] + list(args)
        elif one_each:  # several requests of one positional argument each: the pipeline's batch, one call
            args = [list(args)]
        try:
            prediction = await self._thread.run(_call, self._model, args, kwargs)
            if one_each:
                prediction = _as_answered_alone(prediction, len(merged))
        except _ARGUMENT_ERRORS as exc:
            names = sorted(request_input.name for request_input in payload.inputs)
            raise InvalidInput(f"model '{self.name}' (task '{self.hf_settings.task_name}') refused the request's "
                               f"inputs {names}: {type(exc).__name__}: {exc}") from None
        return self.encode_response(payload=prediction, default_codec=HuggingfaceRequestCodec)

    async def unload(self) -> bool:
        model, self._model = self._model, None
        close_thread(self)
        if model is not None and getattr(model, "framework", "pt") == "pt" and self.device.startswith("cuda"):
            import torch

            del model
            torch.cuda.empty_cache()
        return True

    async def metadata(self) -> MetadataModelResponse:
        metadata = await super().metadata()
        parameters = metadata.parameters.model_dump() if metadata.parameters is not None else {}
        metadata.parameters = Parameters(**{**parameters, "device": self.device})
        return metadata

    def _merge_metadata(self) -> None:
        meta = METADATA.get(self.hf_settings.task)
        if meta:
            self.inputs = list(self.inputs or []) + list(meta.get("inputs", []))
            self.outputs = list(self.outputs or []) + list(meta.get("outputs", []))


def _call(pipeline: Any, args: list, kwargs: Dict[str, Any]) -> Any:
    return pipeline(*args, **kwargs)


def _as_answered_alone(prediction: Any, requests: int) -> list:
    """A list call's results as the requests' own calls would have answered them, one after another: a call on
    one text answers a list (of one result, or of several: a generator's `num_return_sequences`), which the
    batch's call gives as its element (a classifier's dict, a generator's list). When that is not one result a
    request, the merged answer could not be split by request: the batch then runs request by request."""
    if not isinstance(prediction, list) or len(prediction) != requests:
        raise ValueError(f"a batch of {requests} texts answered {type(prediction).__name__}")
    rows = []
    for result in prediction:
        if isinstance(result, list) and len(result) != 1:
            raise ValueError("a request's text answered several results")
        rows.append(result[0] if isinstance(result, list) else result)
    return rows


__all__ = ["HuggingFaceRuntime"]
