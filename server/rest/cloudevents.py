"""CloudEvents on KServe's V1 `:predict` / `:explain`, as KServe's data plane reads and writes them: a binary
event (ce-specversion, ce-source, ce-type and ce-id headers) or a structured one (a JSON body carrying the
attributes and `data`) hands the model its `data`; the answer is an event of the same mode, typed
`io.kserve.inference.response` from `io.kserve.inference.<model>` (CE_TYPE / CE_SOURCE / CE_MERGE as KServe)."""

from __future__ import annotations

import base64
import os
import uuid
from datetime import datetime, timezone
from typing import Any, Dict, Optional, Tuple

import orjson

from gpuserve.errors import InvalidInput

BINARY_HEADERS = ("ce-specversion", "ce-source", "ce-type", "ce-id")
STRUCTURED_KEYS = ("time", "type", "source", "id", "specversion", "data")
JSON_TYPES = ("application/json", "application/cloudevents+json")
SPEC_VERSIONS = ("1.0", "0.3")


class Event:
    """What the request said: binary or structured, and its attributes (for CE_MERGE)."""

    def __init__(self, binary: bool, attributes: Dict[str, Any], answer_as_event: bool):
        self.binary, self.attributes, self.answer_as_event = binary, attributes, answer_as_event


def read(payload: Any, body: bytes, headers: Dict[str, str]) -> Tuple[Any, Optional[Event]]:
    """The payload the model gets and the event it came in, if any (`payload` is the body as V1 parsed it)."""
    if all(h in headers for h in BINARY_HEADERS):
        _check_specversion(headers["ce-specversion"])
        attributes = {k[3:]: v for k, v in headers.items() if k.startswith("ce-")}
        data: Any = body
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            if headers.get("content-type", "").split(";")[0].strip() in JSON_TYPES:
                raise InvalidInput(f"Failed to decode or parse binary json cloudevent: {exc}") from None
        return data, Event(True, attributes, True)
    if isinstance(payload, dict) and all(k in payload for k in STRUCTURED_KEYS):
        _check_specversion(payload["specversion"])
        attributes = {k: v for k, v in payload.items() if k != "data"}
        structured = headers.get("content-type", "").split(";")[0].strip() == "application/cloudevents+json"
        return payload["data"], Event(False, attributes, structured)
    return payload, None


def _check_specversion(version: Any) -> None:
    """The CloudEvents versions there are; KServe's SDK refuses others in these words (a 400)."""
    if version not in SPEC_VERSIONS:
        raise InvalidInput(f"Cloud Event Exceptions: Found invalid specversion {version}")


def write(model_name: str, response: Any, event: Event) -> Tuple[bytes, Dict[str, str]]:
    """The answer as an event of the request's mode: (body, headers)."""
    attributes: Dict[str, Any] = {}
    if os.getenv("CE_MERGE", "false").lower() == "true":
        attributes = {k: v for k, v in event.attributes.items() if k not in ("id", "time", "datacontenttype")
                      or (k == "datacontenttype" and not event.binary)}
    attributes.update(specversion=attributes.get("specversion", "1.0"), id=str(uuid.uuid4()),
                      time=datetime.now(timezone.utc).isoformat(),
                      type=os.getenv("CE_TYPE", "io.kserve.inference.response"),
                      source=os.getenv("CE_SOURCE", f"io.kserve.inference.{model_name}"))
    if event.binary:
        body = bytes(response) if isinstance(response, (bytes, bytearray)) else _json(response)
        headers = {f"ce-{k}": str(v) for k, v in attributes.items()}
        headers["content-type"] = "application/json"
        return body, headers
    envelope = dict(attributes)
    if isinstance(response, (bytes, bytearray)):
        envelope["data_base64"] = base64.b64encode(response).decode()
    else:
        envelope["data"] = response
    return _json(envelope), {"content-type": "application/cloudevents+json"}


def _json(value: Any) -> bytes:
    """As the plain V1 answer writes it (NumPy arrays and scalars taken, NaN as null): the event's
    answer is the same answer."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
