"""`mlserver_huggingface.codecs`: the content types a HuggingFace model's requests and answers use.

As MLServer 1.7.1's runtime: `HuggingfaceRequestCodec` decodes every input by its own content type (else the
request's, else `str`), one pipeline argument per input name; the answer is always one output `output`,
`hg_jsonlist`, each element the JSON of one pipeline result (`json.dumps` with its default separators, as
MLServer writes it, so answers compare byte for byte). Registered with gpuserve's MLServer codec registry
when this module is imported, as MLServer's are (`hg_json`, `hg_jsonlist`, `hg_conversation`, `pillow_image`,
`nplist`, `raw`; request codec `hf`).

PIL and transformers' `Conversation` (transformers < 4.42 only) are imported on first use: without them an
image or a conversation stays the JSON value the client sent.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any, Dict, List, Optional, Type, Union

import numpy as np

from gpuserve.mlserver.codecs.base import (
    InputCodec,
    RequestCodec,
    find_input_codec,
    find_input_codec_by_payload,
    register_input_codec,
    register_request_codec,
)
from gpuserve.mlserver.codecs.content_types import _save_decoded, get_decoded_or_raw, has_decoded
from gpuserve.mlserver.codecs.json import JSONEncoderWithArray
from gpuserve.mlserver.codecs.lists import as_list, is_list_of
from gpuserve.mlserver.codecs.numpy import NumpyCodec
from gpuserve.mlserver.codecs.string import StringCodec
from gpuserve.mlserver.types import InferenceRequest, InferenceResponse, Parameters, RequestInput, ResponseOutput

IMAGE_PREFIX = "data:image/"
DEFAULT_IMAGE_FORMAT = "PNG"
CONVERSATION_KEYS = {"uuid", "past_user_inputs", "generated_responses", "new_user_input"}


def _pil():
    """PIL.Image, or None where Pillow is not installed."""
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


def _conversation_class():
    """transformers' Conversation (removed in transformers 4.42), or None."""
    try:
        from transformers.pipelines import Conversation
    except ImportError:
        return None
    return Conversation


def _data(tensor: Any) -> List[Any]:
    data = tensor.data
    return list(as_list(getattr(data, "root", data)))


class HuggingfaceJSONEncoder(JSONEncoderWithArray):
    """Arrays as lists, images as `data:image/<format>;base64,...`, conversations as their four fields."""

    def default(self, obj):
        image = _pil()
        if image is not None and isinstance(obj, image.Image):
            if not obj.format:
                obj.format = DEFAULT_IMAGE_FORMAT
            buf = io.BytesIO()
            obj.save(buf, format=obj.format)
            return f"{IMAGE_PREFIX}{obj.format.lower()};base64,{base64.b64encode(buf.getvalue()).decode()}"
        conversation = _conversation_class()
        if conversation is not None and isinstance(obj, conversation):
            return {"uuid": str(obj.uuid), "past_user_inputs": obj.past_user_inputs,
                    "generated_responses": obj.generated_responses, "new_user_input": obj.new_user_input}
        return super().default(obj)


def json_encode(payload: Any, use_bytes: bool = False) -> Union[str, bytes]:
    text = json.dumps(payload, cls=HuggingfaceJSONEncoder)
    return text.encode() if use_bytes else text


def json_decode(payload: Union[str, bytes]) -> Any:
    return Convertor.do(json.loads(payload))


class Convertor:
    """A decoded JSON value with MLServer's conversions: a dict holding exactly a conversation's fields
    becomes a Conversation, a string `data:image/...;base64,...` inside a dict becomes a PIL image."""

    @classmethod
    def do(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            return cls.convert_dict(raw)
        if isinstance(raw, list):
            return cls.convert_list(raw)
        return raw

    @classmethod
    def convert_conversation(cls, d: Dict[str, Any]) -> Any:
        conversation = _conversation_class()
        if conversation is None or set(d) != CONVERSATION_KEYS:
            return None
        return conversation(text=d["new_user_input"], conversation_id=d["uuid"],
                            past_user_inputs=d["past_user_inputs"], generated_responses=d["generated_responses"])

    @classmethod
    def convert_dict(cls, d: Dict[str, Any]) -> Any:
        whole = cls.convert_conversation(d)
        if whole is not None:
            return whole
        out: Dict[str, Any] = {}
        for key, value in d.items():
            if isinstance(value, dict):
                conversation = _conversation_class()
                if conversation is not None and set(value) == CONVERSATION_KEYS:
                    out[key] = conversation(text=value["new_user_input"])  # as MLServer: the new input only
                else:
                    out[key] = cls.convert_dict(value)
            elif isinstance(value, list):
                out[key] = cls.convert_list(value)
            elif isinstance(value, str) and value.startswith(IMAGE_PREFIX) and _pil() is not None:
                out[key] = _pil().open(io.BytesIO(base64.b64decode(value.split(",")[1])))
            else:
                out[key] = value
        return out

    @classmethod
    def convert_list(cls, items: List[Any]) -> List[Any]:
        return [cls.convert_list(el) if isinstance(el, list) else cls.convert_dict(el) if isinstance(el, dict)
                else el for el in items]


def _bytes_output(codec: Type[InputCodec], name: str, encoded: List[Any], shape: List[int]) -> ResponseOutput:
    return ResponseOutput(name=name, parameters=Parameters(content_type=codec.ContentType), datatype="BYTES",
                          shape=shape, data=encoded)


def _as_input(codec: Type[InputCodec], output: ResponseOutput) -> RequestInput:
    return RequestInput(name=output.name, parameters=Parameters(content_type=codec.ContentType),
                        datatype=output.datatype, shape=output.shape, data=output.data)


@register_input_codec
class PILImageCodec(InputCodec):
    """`pillow_image`: each element a base64-encoded image file."""

    ContentType = "pillow_image"
    TypeHint = List[bytes]

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        image = _pil()
        return image is not None and is_list_of(payload, image.Image)

    @classmethod
    def encode_output(cls, name: str, payload: List[Any], use_bytes: bool = True, **kwargs) -> ResponseOutput:
        def encode(img):
            buf = io.BytesIO()
            img.save(buf, format=img.format)
            encoded = base64.b64encode(buf.getvalue())
            return encoded if use_bytes else encoded.decode()

        return _bytes_output(cls, name, [encode(img) for img in payload], [len(payload), 1])

    @classmethod
    def decode_output(cls, response_output: ResponseOutput) -> List[Any]:
        image = _pil()
        if image is None:
            raise ImportError("decoding 'pillow_image' needs Pillow: pip install pillow")
        out = []
        for item in _data(response_output):
            text = item.decode() if isinstance(item, bytes) else item
            out.append(image.open(io.BytesIO(base64.b64decode(text))))
        return out

    @classmethod
    def encode_input(cls, name: str, payload: List[Any], use_bytes: bool = True, **kwargs) -> RequestInput:
        return _as_input(cls, cls.encode_output(name, payload, use_bytes))

    @classmethod
    def decode_input(cls, request_input: RequestInput) -> List[Any]:
        return cls.decode_output(request_input)  # type: ignore[arg-type]


@register_input_codec
class HuggingfaceSingleJSONCodec(InputCodec):
    """`hg_json`: one JSON object in the tensor's first element."""

    ContentType = "hg_json"

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return isinstance(payload, dict)

    @classmethod
    def encode_output(cls, name: str, payload: Dict[Any, Any], use_bytes: bool = True, **kwargs) -> ResponseOutput:
        return _bytes_output(cls, name, [json_encode(payload, use_bytes)], [1])

    @classmethod
    def decode_output(cls, response_output: ResponseOutput) -> Any:
        return json_decode(_data(response_output)[0])

    @classmethod
    def encode_input(cls, name: str, payload: Dict[Any, Any], use_bytes: bool = True, **kwargs) -> RequestInput:
        return _as_input(cls, cls.encode_output(name, payload, use_bytes))

    @classmethod
    def decode_input(cls, request_input: RequestInput) -> Any:
        return json_decode(_data(request_input)[0])


@register_input_codec
class HuggingfaceListJSONCodec(InputCodec):
    """`hg_jsonlist`: each element one JSON value (what every answer of this runtime is)."""

    ContentType = "hg_jsonlist"

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return is_list_of(payload, dict)

    @classmethod
    def encode_output(cls, name: str, payload: List[Any], use_bytes: bool = True, **kwargs) -> ResponseOutput:
        return _bytes_output(cls, name, [json_encode(item, use_bytes) for item in payload], [len(payload), 1])

    @classmethod
    def decode_output(cls, response_output: ResponseOutput) -> List[Any]:
        return [json_decode(item) for item in _data(response_output)]

    @classmethod
    def encode_input(cls, name: str, payload: List[Any], use_bytes: bool = True, **kwargs) -> RequestInput:
        return _as_input(cls, cls.encode_output(name, payload, use_bytes))

    @classmethod
    def decode_input(cls, request_input: RequestInput) -> List[Any]:
        return [json_decode(item) for item in _data(request_input)]


@register_input_codec
class HuggingfaceConversationCodec(HuggingfaceListJSONCodec):
    """`hg_conversation`: each element a conversation's JSON (transformers < 4.42 has the Conversation type;
    with later ones each element stays the JSON value). Encoded and decoded as `hg_jsonlist` is."""

    ContentType = "hg_conversation"

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        conversation = _conversation_class()
        return conversation is not None and is_list_of(payload, conversation)


@register_input_codec
class NumpyListCodec(InputCodec):
    """`nplist`: a tensor as the list of its rows (NumPy arrays), e.g. audio samples."""

    ContentType = "nplist"

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return is_list_of(payload, np.ndarray) and len({matrix.shape for matrix in payload}) == 1

    @classmethod
    def encode_output(cls, name: str, payload: List[np.ndarray], **kwargs) -> ResponseOutput:
        output = NumpyCodec.encode_output(name, np.array(payload))
        output.parameters = Parameters(content_type=cls.ContentType)
        return output

    @classmethod
    def decode_output(cls, response_output: ResponseOutput) -> List[np.ndarray]:
        return cls.decode_input(response_output)  # type: ignore[arg-type]

    @classmethod
    def encode_input(cls, name: str, payload: List[np.ndarray], **kwargs) -> RequestInput:
        output = cls.encode_output(name, payload)
        return RequestInput(name=output.name, datatype=output.datatype, shape=output.shape, data=output.data,
                            parameters=Parameters(content_type=cls.ContentType))

    @classmethod
    def decode_input(cls, request_input: RequestInput) -> List[np.ndarray]:
        array = NumpyCodec.decode_input(request_input)
        return list(np.asarray(array).reshape(request_input.shape))


@register_input_codec
class RawCodec(InputCodec):
    """`raw`: one Python scalar (a number or a string), e.g. a pipeline keyword like `max_new_tokens`."""

    ContentType = "raw"

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return isinstance(payload, (int, str, float))

    @classmethod
    def encode_output(cls, name: str, payload: Union[int, str, float], **kwargs) -> ResponseOutput:
        return ResponseOutput(name=name, datatype="BYTES", shape=[1], data=[payload],
                              parameters=Parameters(content_type=cls.ContentType))

    @classmethod
    def decode_output(cls, response_output: ResponseOutput) -> Any:
        return cls.decode_input(response_output)  # type: ignore[arg-type]

    @classmethod
    def encode_input(cls, name: str, payload: Union[int, str, float], **kwargs) -> RequestInput:
        output = cls.encode_output(name, payload)
        return RequestInput(name=output.name, datatype=output.datatype, shape=output.shape, data=output.data,
                            parameters=output.parameters)

    @classmethod
    def decode_input(cls, request_input: RequestInput) -> Any:
        return _data(request_input)[0]


def set_content_type(input_v: RequestInput, content_type: str) -> None:
    if input_v.parameters is None:
        input_v.parameters = Parameters(content_type=content_type)
    elif not input_v.parameters.content_type:
        input_v.parameters.content_type = content_type


class MultiInputRequestCodec(RequestCodec):
    """A request as a dict of its inputs by name (each decoded by its own codec); an answer as one
    `hg_jsonlist` output."""

    DefaultCodec: Any = StringCodec
    InputCodecsWithPriority: List[Any] = []
    ContentType = ""

    @classmethod
    def _find_encode_codecs(cls, payload: Dict[str, Any]) -> Dict[str, Any]:
        found: Dict[str, Any] = {}
        for field, value in payload.items():
            found[field] = next((codec for codec in cls.InputCodecsWithPriority if codec.can_encode(value)), None) \
                or find_input_codec_by_payload(value)
        return found

    @classmethod
    def _find_decode_codecs(cls, data: Union[InferenceRequest, InferenceResponse]) -> Dict[str, Any]:
        """Each tensor's codec: its own content type's, else the request's, else `str`."""
        default = None
        if data.parameters is not None and data.parameters.content_type:
            default = find_input_codec(data.parameters.content_type)
        default = default or cls.DefaultCodec
        tensors = data.inputs if isinstance(data, InferenceRequest) else data.outputs
        found: Dict[str, Any] = {}
        for tensor in tensors:
            content_type = tensor.parameters.content_type if tensor.parameters is not None else None
            found[tensor.name] = (find_input_codec(content_type) if content_type else None) or default
        return found

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        """A dict whose every value has a codec (a request), or any list (an answer)."""
        if isinstance(payload, dict):
            return all(cls._find_encode_codecs(payload).values())
        return isinstance(payload, list)

    @classmethod
    def encode_response(cls, model_name: str, payload: Any, model_version: Optional[str] = None,
                        **kwargs) -> InferenceResponse:
        if not isinstance(payload, list):
            payload = [payload]
        return InferenceResponse(model_name=model_name, model_version=model_version,
                                 outputs=[HuggingfaceListJSONCodec.encode_output("output", payload)])

    @classmethod
    def decode_response(cls, response: InferenceResponse) -> Union[List[Any], Dict[str, Any]]:
        """A dict by output name; a list (sorted by name) when every output is named `output_*`."""
        values = cls._decode_all(response, response.outputs, "decode_output")
        if all(name.startswith("output_") for name in values):
            return [values[key] for key in sorted(values)]
        return values

    @classmethod
    def encode_request(cls, payload: Dict[str, Any], **kwargs) -> InferenceRequest:
        codecs = cls._find_encode_codecs(payload)
        inputs = []
        for key, value in payload.items():
            codec = codecs[key]
            if codec is None:
                raise Exception(f"codec for key {key} value not found, value is {value}")
            request_input = codec.encode_input(key, value, **kwargs)
            set_content_type(request_input, codec.ContentType)
            inputs.append(request_input)
        return InferenceRequest(parameters=Parameters(content_type=cls.ContentType), inputs=inputs)

    @classmethod
    def decode_request(cls, request: InferenceRequest) -> Dict[str, Any]:
        return cls._decode_all(request, request.inputs, "decode_input")

    @classmethod
    def _decode_all(cls, whole: Any, tensors: List[Any], method: str) -> Dict[str, Any]:
        codecs = cls._find_decode_codecs(whole)
        values: Dict[str, Any] = {}
        for tensor in tensors:
            if not has_decoded(tensor):
                codec = codecs[tensor.name]
                if codec is not None:
                    _save_decoded(tensor, getattr(codec, method)(tensor))
            values[tensor.name] = get_decoded_or_raw(tensor)
        return values


@register_request_codec
class HuggingfaceRequestCodec(MultiInputRequestCodec):
    """`hf`: the runtime's request codec (MLServer's priority among its own codecs when encoding)."""

    InputCodecsWithPriority = [PILImageCodec, HuggingfaceSingleJSONCodec, HuggingfaceListJSONCodec,
                               HuggingfaceConversationCodec, NumpyListCodec, RawCodec]
    ContentType = "hf"
    DefaultCodec = StringCodec


class EqualUtil:
    """Comparisons MLServer's tests use: images by pixels, arrays by value, containers recursively."""

    @staticmethod
    def pil_equal(img1: Any, img2: Any) -> bool:
        from PIL import ImageChops

        return ImageChops.difference(img1, img2).getbbox() is None

    @staticmethod
    def _equal(a: Any, b: Any) -> bool:
        image = _pil()
        if isinstance(a, dict):
            return isinstance(b, dict) and EqualUtil.dict_equal(a, b)
        if isinstance(a, list):
            return isinstance(b, list) and EqualUtil.list_equal(a, b)
        if image is not None and isinstance(a, image.Image):
            return EqualUtil.pil_equal(a, b)
        if isinstance(a, np.ndarray):
            return bool(np.array_equal(a, b))
        return a == b

    @staticmethod
    def list_equal(list1: List[Any], list2: List[Any]) -> bool:
        return len(list1) == len(list2) and all(EqualUtil._equal(a, b) for a, b in zip(list1, list2))

    @staticmethod
    def dict_equal(dict1: Dict[Any, Any], dict2: Dict[Any, Any]) -> bool:
        image = _pil()
        if set(dict1) != set(dict2):
            return False
        # as MLServer's: images inside a dict are not compared
        return all(image is not None and isinstance(v, image.Image) or EqualUtil._equal(v, dict2[k])
                   for k, v in dict1.items())


__all__ = ["MultiInputRequestCodec", "HuggingfaceRequestCodec", "PILImageCodec", "HuggingfaceSingleJSONCodec",
           "HuggingfaceListJSONCodec", "HuggingfaceConversationCodec", "NumpyListCodec", "RawCodec", "EqualUtil",
           "HuggingfaceJSONEncoder", "json_encode", "json_decode", "Convertor"]
