"""`mlserver_huggingface.common`: building the transformers pipeline a HuggingFace model serves.

As MLServer 1.7.1: `pipeline(task, model=pretrained_model or parameters.uri, tokenizer=pretrained_tokenizer or
pretrained_model, model_kwargs, device, batch_size=max_batch_size or 1, framework)`, through optimum's ONNX
Runtime pipeline when `optimum_model` is true; a batched model (max_batch_size > 1) whose tokenizer has no
pad token pads with its end-of-sequence token, or runs its batches one row at a time when it has neither.
Where gpuserve differs, on purpose:
- without MLServer's `device` extra the model's gpuserve `device` decides (auto: the first CUDA device when
  usable, else the CPU); MLServer's default is the CPU;
- the pad token is the EOS token itself (MLServer assigns a list holding the id's text, which transformers
  does not read as a token id);
- pipelines are built one at a time in a process (transformers' loading is not thread-safe);
- a thread-count setting torch refuses (interop threads, once torch has run anything) is logged and skipped
  instead of failing the load;
- a batched text generator pads its prompts on the left (where a decoder-only model's continuation starts);
- transformers, torch and optimum are imported here, at load: without them the model is not ready, with the
  package to install as its reason.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Optional

from gpuserve.errors import ModelLoadError
from gpuserve.huggingface.errors import InvalidOptimumTask, InvalidTransformersTask
from gpuserve.huggingface.settings import HuggingFaceSettings

logger = logging.getLogger("gpuserve")

OPTIMUM_ACCELERATOR = "ort"
# transformers builds a model's modules on the `meta` device through process-wide torch state before it
# fills in the weights: two loads at once (a repository's models load together) leave one of them with
# empty meta tensors ("Cannot copy out of meta tensor"). One load at a time.
_LOADING = threading.Lock()
INSTALL = "pip install 'gpuserve[huggingface]' (and torch: 'gpuserve[torch]')"


def transformers_without_keras3() -> None:
    """Keep transformers 4.x off TensorFlow where it cannot use it: beside Keras 3 (TensorFlow >= 2.16's own,
    e.g. gpuserve[tensorflow]) it needs tf-keras, and without it a pipeline that looks for TensorFlow classes
    (every pipeline, once both torch and tensorflow are installed) fails to import them ("Keras 3 ... not yet
    supported in Transformers"). There, and unless USE_TF says otherwise, transformers is told USE_TF=0 and
    serves with torch; before transformers is imported, as it reads USE_TF once."""
    import importlib.metadata
    import importlib.util
    import os
    import sys

    if "USE_TF" in os.environ or "transformers" in sys.modules or importlib.util.find_spec("tensorflow") is None \
            or importlib.util.find_spec("tf_keras") is not None:
        return
    try:
        keras3 = importlib.metadata.version("keras").split(".")[0] == "3"
    except importlib.metadata.PackageNotFoundError:
        return
    if keras3:
        os.environ["USE_TF"] = "0"


def _transformers() -> Any:
    transformers_without_keras3()
    try:
        import transformers.pipelines
    except ImportError as exc:
        raise ModelLoadError(f"serving a HuggingFace model needs transformers: {INSTALL} ({exc})") from None
    return transformers.pipelines


def _optimum_pipeline() -> Any:
    """optimum's pipeline with the ONNX Runtime accelerator: optimum 1.x's `optimum.pipelines`, or the
    optimum-onnx package's `optimum.onnxruntime.pipeline`."""
    try:
        from optimum.pipelines import pipeline

        return lambda *args, **kwargs: pipeline(*args, accelerator=OPTIMUM_ACCELERATOR, **kwargs)
    except ImportError:
        pass
    try:
        from optimum.onnxruntime import pipeline

        return pipeline
    except ImportError as exc:
        raise ModelLoadError("optimum_model: true needs optimum with ONNX Runtime: "
                             f"pip install 'optimum[onnxruntime]' ({exc})") from None


def _optimum_tasks() -> Optional[Any]:
    for module, name in (("optimum.pipelines", "ORT_SUPPORTED_TASKS"), ("optimum.pipelines", "SUPPORTED_TASKS")):
        try:
            return getattr(__import__(module, fromlist=[name]), name)
        except (ImportError, AttributeError):
            continue
    return None  # optimum-onnx: its pipeline checks the task itself


def check_task(hf_settings: HuggingFaceSettings) -> None:
    """MLServer's check: the task (without its suffix) must be one of transformers' (and optimum's) tasks."""
    supported = _transformers().SUPPORTED_TASKS
    if hf_settings.task not in supported:
        raise InvalidTransformersTask(hf_settings.task, supported.keys())
    if hf_settings.optimum_model:
        optimum_tasks = _optimum_tasks() if _has_optimum() else None
        if optimum_tasks is not None and hf_settings.task not in optimum_tasks:
            raise InvalidOptimumTask(hf_settings.task, optimum_tasks.keys())


def _has_optimum() -> bool:
    import importlib.util

    return importlib.util.find_spec("optimum") is not None


def pipeline_device(hf_settings: HuggingFaceSettings, model_device: Optional[str]) -> Any:
    """What the pipeline is given: MLServer's `device` extra as it is (-1, an ordinal, "cuda:1", "mps"), else
    gpuserve's model-level device (auto: CUDA when usable)."""
    if hf_settings.device is not None:
        return hf_settings.device
    from gpuserve.engine.device import choose_device

    return choose_device(model_device)


def device_name(device: Any) -> str:
    """The device as gpuserve says it (metadata, log): cpu, cuda:N, mps."""
    if isinstance(device, int) or (isinstance(device, str) and device.lstrip("-").isdigit()):
        ordinal = int(device)
        return "cpu" if ordinal < 0 else f"cuda:{ordinal}"
    return "cuda:0" if device == "cuda" else str(device)


def _set_threads(hf_settings: HuggingFaceSettings) -> None:
    if hf_settings.framework == "tf":
        try:
            import tensorflow as tf
        except ImportError as exc:
            raise ModelLoadError(f"framework 'tf' needs TensorFlow: pip install tensorflow ({exc})") from None
        if hf_settings.inter_op_threads is not None:
            tf.config.threading.set_inter_op_parallelism_threads(hf_settings.inter_op_threads)
        if hf_settings.intra_op_threads is not None:
            tf.config.threading.set_intra_op_parallelism_threads(hf_settings.intra_op_threads)
    elif hf_settings.framework == "pt":
        import torch

        if hf_settings.inter_op_threads is not None:
            try:
                torch.set_num_interop_threads(hf_settings.inter_op_threads)
            except RuntimeError as exc:  # once per process, before any parallel work (one process, many models)
                logger.warning("inter_op_threads %d not applied: %s", hf_settings.inter_op_threads, exc)
        if hf_settings.intra_op_threads is not None:
            torch.set_num_threads(hf_settings.intra_op_threads)


def load_pipeline_from_settings(hf_settings: HuggingFaceSettings, settings: Any, device: Any = None) -> Any:
    """The pipeline for a model's settings (`device`: what pipeline_device chose; None: the settings')."""
    check_task(hf_settings)
    build = _optimum_pipeline() if hf_settings.optimum_model else _transformers().pipeline
    max_batch_size = settings.max_batch_size or 0
    model = hf_settings.pretrained_model or settings.parameters.uri
    tokenizer = hf_settings.pretrained_tokenizer or hf_settings.pretrained_model
    _set_threads(hf_settings)
    if device is None:
        device = pipeline_device(hf_settings, getattr(settings, "device", None))
    kwargs = dict(model=model, model_kwargs=hf_settings.model_kwargs, tokenizer=tokenizer, device=device,
                  batch_size=max_batch_size or 1)
    if hf_settings.framework is not None:  # transformers 5 has no `framework`
        kwargs["framework"] = hf_settings.framework
    with _LOADING:
        hf_pipeline = build(hf_settings.task_name, **kwargs)
    if max_batch_size > 1:
        _pad_for_batches(hf_pipeline)
    return hf_pipeline


def _pad_for_batches(hf_pipeline: Any) -> None:
    tokenizer = getattr(hf_pipeline, "tokenizer", None)
    if tokenizer is None:
        return
    config = getattr(getattr(hf_pipeline, "model", None), "config", None)
    if getattr(hf_pipeline, "task", "") == "text-generation" and not getattr(config, "is_encoder_decoder", False):
        # A decoder-only model continues each prompt from its last position: a batch's shorter prompts padded
        # on the right would continue from padding (transformers warns so). MLServer leaves the side as is.
        tokenizer.padding_side = "left"
    if tokenizer.pad_token_id:  # MLServer's test: a pad id of 0 counts as none
        return
    eos_token_id = getattr(hf_pipeline.model.config, "eos_token_id", None)
    if eos_token_id:
        tokenizer.pad_token_id = eos_token_id
    else:
        logger.warning("Model has neither pad_token or eos_token, setting batch size to 1")
        hf_pipeline._batch_size = 1


__all__ = ["load_pipeline_from_settings", "check_task", "pipeline_device", "device_name", "OPTIMUM_ACCELERATOR"]
