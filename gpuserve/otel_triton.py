"""Triton 2.51's OpenTelemetry spans from one finished request trace (gpuserve/tracing.py's Trace tree).

The shape was read off what tritonserver 2.51 posts to a collector (every span of kind SERVER, no status):
- `InferRequest`: the front end's span, the root (or a child of the caller's span from a W3C traceparent,
  in the caller's trace). Events HTTP_RECV_START/END or GRPC_WAITREAD_START/END (before the span starts),
  INFER_RESPONSE_COMPLETE, HTTP_SEND_START/END or GRPC_SEND_START/END. No attributes.
- one span per model request, named after the model, child of `InferRequest` (an ensemble step's or a BLS
  request's: child of its parent model's span). From REQUEST_START to REQUEST_END, events REQUEST_START,
  QUEUE_START, REQUEST_END; attributes triton.model_name (string), triton.model_version, triton.trace_id,
  triton.trace_parent_id (ints; 0 for a top-level request) and triton.request_id (only when given).
- `compute`: child of the model's span, from COMPUTE_START to COMPUTE_END with the four COMPUTE_* events
  (none for an ensemble, which computes nothing itself).
Times are the system clock (as Triton's spans; its trace files use the steady clock): the monotonic points
in time are shifted by the clocks' difference when the spans are made.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List

from gpuserve.otlp import SERVER, attribute, span_id, trace_id

SCOPE = {"name": "triton-server"}
DEFAULT_SERVICE = "triton-inference-server"
_MODEL_EVENTS = {"REQUEST_START", "QUEUE_START", "REQUEST_END"}
_RECEIVED = ("HTTP_RECV_END", "GRPC_WAITREAD_END")


def _event(name: str, ns: int) -> Dict[str, Any]:
    return {"name": name, "timeUnixNano": str(ns)}


def _span(trace: str, span: str, parent: str, name: str, start: int, end: int, events: List[tuple],
          attributes: List[Dict[str, Any]] = ()) -> Dict[str, Any]:
    out = {"traceId": trace, "spanId": span, "name": name, "kind": SERVER, "startTimeUnixNano": str(start),
           "endTimeUnixNano": str(max(start, end)), "events": [_event(n, t) for n, t in events]}
    if parent:
        out["parentSpanId"] = parent
    if attributes:
        out["attributes"] = list(attributes)
    return out


def spans_of(root: Any) -> List[Dict[str, Any]]:
    """Every span of a finished root trace and of the traces under it (ensemble steps, BLS requests)."""
    shift = time.time_ns() - time.monotonic_ns()
    traced = [root] + [child for child in root.children if child.started]
    ids = {id(t): span_id() for t in traced}
    trace, caller = root.context if root.context is not None else (trace_id(), "")
    front = span_id()
    spans = []
    # the front end's span: its own points in time, from when the request was read to its last answer
    own = [(name, ns + shift) for name, ns in root.events if name not in _MODEL_EVENTS
           and not name.startswith("COMPUTE_")]
    every = [ns + shift for _, ns in root.events]
    received = [ns for name, ns in own if name in _RECEIVED]
    start = received[0] if received else min(every)
    spans.append(_span(trace, front, caller, "InferRequest", start, max(every), own))
    for item in traced:
        spans.extend(_model_spans(item, trace, ids[id(item)],
                                  front if item is root else ids.get(id(item.parent), front), shift))
    return spans


def _model_spans(item: Any, trace: str, span: str, parent: str, shift: int) -> List[Dict[str, Any]]:
    events = [(name, ns + shift) for name, ns in item.events]
    model = [(name, ns) for name, ns in events if name in _MODEL_EVENTS]
    stamps = [ns for _, ns in events]
    start = next((ns for name, ns in model if name == "REQUEST_START"), min(stamps))
    end = next((ns for name, ns in model if name == "REQUEST_END"), max(stamps))
    attributes = [attribute("triton.model_name", item.model_name or ""),
                  attribute("triton.model_version", item.model_version),
                  attribute("triton.trace_id", item.id),
                  attribute("triton.trace_parent_id", item.parent.id if item.parent is not None else 0)]
    if item.request_id:
        attributes.append(attribute("triton.request_id", item.request_id))
    out = [_span(trace, span, parent, item.model_name or "", start, end, model, attributes)]
    compute: List[tuple] = []
    for name, ns in events:
        if name == "COMPUTE_START" and compute:  # one span per execute that ran this request
            out.append(_compute(trace, span, compute))
            compute = []
        if name.startswith("COMPUTE_"):
            compute.append((name, ns))
    if compute:
        out.append(_compute(trace, span, compute))
    return out


def _compute(trace: str, parent: str, events: List[tuple]) -> Dict[str, Any]:
    return _span(trace, span_id(), parent, "compute", events[0][1], events[-1][1], events)
