"""`mlserver_huggingface.metadata`: the inputs and outputs a task adds to a model's metadata (MLServer 1.7.1's
table; informative only: requests decode by their own content types, gpuserve.huggingface.codecs)."""

from __future__ import annotations

from typing import Dict, List

from gpuserve.mlserver.types import MetadataTensor


def _t(name: str, content_type: str, datatype: str = "BYTES") -> MetadataTensor:
    return MetadataTensor(name=name, shape=[-1], datatype=datatype, parameters=dict(content_type=content_type))


def _media(name: str, third: str = "nplist") -> List[MetadataTensor]:
    """A file path, the file's bytes in base64, or (audio) a float array / (images) a PIL image."""
    last = _t(name, "nplist", "FP32") if third == "nplist" else _t(name, "pillow_image")
    return [_t(name, "str"), _t(name, "base64"), last]


_ARGS = [_t("args", "str")]
_ARRAY = [_t("array_inputs", "str")]
_JSON_OUT = [_t("output_*", "hg_json")]

METADATA: Dict[str, Dict[str, List[MetadataTensor]]] = {
    "audio-classification": dict(inputs=_media("inputs"), outputs=_JSON_OUT),
    "automatic-speech-recognition": dict(inputs=_media("inputs"), outputs=_JSON_OUT),
    "feature-extraction": dict(inputs=_ARGS, outputs=[_t("outputs", "pd", "FP64")]),
    "text-classification": dict(inputs=_ARGS, outputs=[_t("outputs", "hg_json")]),
    "token-classification": dict(inputs=_ARGS, outputs=[]),
    "question-answering": dict(inputs=[_t("context", "str"), _t("question", "str")], outputs=[]),
    "table-question-answering": dict(inputs=[_t("array_inputs", "hg_jsonlist")], outputs=[]),
    "visual-question-answering": dict(inputs=[_t("array_inputs", "hg_jsonlist")], outputs=[]),
    "fill-mask": dict(inputs=_ARRAY, outputs=[]),
    "summarization": dict(inputs=_ARRAY, outputs=[]),
    "translation": dict(inputs=_ARRAY, outputs=[]),
    "text2text-generation": dict(inputs=_ARRAY, outputs=[]),
    "text-generation": dict(inputs=_ARRAY, outputs=[]),
    "zero-shot-classification": dict(inputs=_ARRAY + [_t("candidate_labels", "str")], outputs=[]),
    "zero-shot-image-classification": dict(inputs=_media("array_inputs") + [_t("candidate_labels", "str")],
                                           outputs=[]),
    "conversational": dict(inputs=[_t("array_inputs", "hg_conversation", "FP32")], outputs=[]),
    "image-classification": dict(inputs=_media("inputs", "pillow_image"), outputs=[]),
    "image-segmentation": dict(inputs=_media("inputs", "pillow_image"), outputs=[]),
    "object-detection": dict(inputs=_media("inputs", "pillow_image"), outputs=[]),
}

__all__ = ["METADATA"]
