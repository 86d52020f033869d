"""`@decode_args`: MLServer's simplified interface, where `predict`'s signature says how to decode.

    @decode_args
    async def predict(self, questions: List[str], context: List[str]) -> np.ndarray: ...

Each request input goes to the argument of the same name, decoded by the codec of its annotation
(`np.ndarray`, `List[str]`, `List[bytes]`, `List[datetime]`, `pd.DataFrame`, or any registered
codec's `TypeHint`). Inputs no argument names are handed, as one request, to the argument whose
annotation is a request codec's (e.g. a DataFrame of the remaining columns). The return value is
encoded by the return annotation: an input codec gives one output named `output-0`, a tuple gives
`output-0`, `output-1`, ..., and a request codec gives its own outputs (a DataFrame's columns).

The codecs are chosen once, when the class is defined, so a misspelt annotation fails at import
rather than on the first request. A sync `predict` runs in a worker thread.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import typing
from typing import Any, Callable, Dict, List, Optional, Tuple

from gpuserve.hooks import off_loop
from gpuserve.mlserver.codecs.base import (
    InputCodec,
    RequestCodec,
    find_input_codec_by_payload,
    find_input_codec_by_type_hint,
    find_request_codec_by_payload,
    find_request_codec_by_type_hint,
)
from gpuserve.mlserver.codecs.errors import CodecNotFound, InputsMissing, InputsNotFound, OutputNotFound
from gpuserve.mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


def _is(codec: Any, base: type) -> bool:
    return (isinstance(codec, type) and issubclass(codec, base)) or isinstance(codec, base)


def _unwrap_optional(hint: Any) -> Any:
    if typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _output_hints(hint: Any) -> List[Any]:
    if hint is None or hint is type(None):
        return []
    if typing.get_origin(hint) in (tuple, Tuple):
        return [a for a in typing.get_args(hint) if a is not Ellipsis]
    return [hint]


def _find_codec(name: Optional[str], hint: Any, is_input: bool) -> Any:
    codec = find_input_codec_by_type_hint(hint) or find_request_codec_by_type_hint(hint)
    if codec is None:
        raise CodecNotFound(name=name, payload_type=str(hint), is_input=is_input)
    return codec


class SignatureCodec(RequestCodec):
    """Decodes a request into `predict`'s keyword arguments and encodes what it returns."""

    def __init__(self, predict: Callable):
        hints = typing.get_type_hints(predict)
        returned = hints.pop("return", None)
        signature = inspect.signature(predict)
        self._input_codecs: Dict[str, Any] = {}
        self._required: List[str] = []
        for position, (name, parameter) in enumerate(signature.parameters.items()):
            if position == 0 or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue  # self, *args, **kwargs
            if name not in hints:
                continue
            self._input_codecs[name] = _find_codec(name, _unwrap_optional(hints[name]), is_input=True)
            if parameter.default is parameter.empty:
                self._required.append(name)
        self._output_hints = _output_hints(returned)
        self._output_codecs = [_find_codec(None, _unwrap_optional(h), is_input=False) for h in self._output_hints]
        self._request_argument = next(
            ((n, c) for n, c in self._input_codecs.items() if _is(c, RequestCodec) and not _is(c, InputCodec)),
            None)

    def decode_request(self, request: InferenceRequest) -> Dict[str, Any]:  # type: ignore[override]
        arguments: Dict[str, Any] = {}
        others = []
        for request_input in request.inputs:
            codec = self._input_codecs.get(request_input.name)
            if codec is None or not _is(codec, InputCodec):
                others.append(request_input)
                continue
            arguments[request_input.name] = codec.decode_input(request_input)
        if others:
            if self._request_argument is None:
                raise InputsNotFound(others, self._input_codecs)
            name, codec = self._request_argument
            arguments[name] = codec.decode_request(InferenceRequest(inputs=others))
        missing = [n for n in self._required if n not in arguments]
        if missing:
            raise InputsMissing(missing, [i.name for i in request.inputs])
        return arguments

    def encode_response(self, model_name: str, payload: Any,  # type: ignore[override]
                        model_version: Optional[str] = None, **kwargs) -> InferenceResponse:
        values = list(payload) if isinstance(payload, tuple) else [payload]
        outputs: List[ResponseOutput] = []
        for index, value in enumerate(values):
            outputs += self._encode(index, value)
        return InferenceResponse(model_name=model_name, model_version=model_version, outputs=outputs)

    def _encode(self, index: int, value: Any) -> List[ResponseOutput]:
        if index < len(self._output_codecs):
            codec = self._output_codecs[index]
            if not codec.can_encode(value):
                raise OutputNotFound(index, type(value), self._output_hints)
        elif not self._output_hints:  # no annotation: the value's own type decides
            codec = find_input_codec_by_payload(value) or find_request_codec_by_payload(value)
            if codec is None:
                raise OutputNotFound(index, type(value), self._output_hints)
        else:
            raise OutputNotFound(index, type(value), self._output_hints)
        if _is(codec, InputCodec):
            return [codec.encode_output(name=f"output-{index}", payload=value)]
        return list(codec.encode_response(model_name="", payload=value).outputs)


def decode_args(predict: Callable) -> Callable:
    """Decorate `MLModel.predict(self, <named, annotated inputs>) -> <annotated output>`."""
    codec = SignatureCodec(predict)
    is_async = inspect.iscoroutinefunction(predict)

    async def _predict(self, payload: InferenceRequest) -> InferenceResponse:
        arguments = codec.decode_request(payload)
        if is_async:
            result = await predict(self, **arguments)
        else:
            context = contextvars.copy_context()
            call = functools.partial(context.run, predict, self, **arguments)
            result = await off_loop(None, call)
        return codec.encode_response(self.name, result, self.version)

    functools.update_wrapper(_predict, predict)
    del _predict.__wrapped__  # the wrapper takes a request, whatever `predict` declared
    _predict.__signature_codec__ = codec  # type: ignore[attr-defined]
    return _predict


__all__ = ["decode_args", "SignatureCodec"]
