"""Triton's response cache: a request answered before is answered again from memory, without the model.

A model opts in (`response_cache { enable: true }` in config.pbtxt, `"response_cache": true` in
model-settings.json) and the server bounds the cache's size (`--cache-config local,size=BYTES`, or
`response_cache_bytes` in settings.json; 128 MiB by default, taken only as entries arrive: gpuserve's
launch line carries no cache flag, and a Triton user who enabled the cache in a model's config expects
it used). Triton's rules (docs/user_guide/response_cache.md) decide what is cached: the key hashes the
model's name and version and every input's name, datatype, shape and data; only host inputs are hashed,
only successful responses whose outputs are all host arrays are kept, and decoupled and sequence models
never use it (an ensemble's own requests do, as since Triton 24.08: its whole answer is kept, its steps are
not run again; its steps may enable the cache for themselves too). Two differences, each so that a hit
can never answer another question: the requested outputs (with their class_count) and the request's own
parameters (a custom model may read them) are part of the key, and the digest is 128-bit BLAKE2b rather
than 64 bits. As in Triton, headers are not part of it: a model whose answer depends on them should not enable the cache. Entries are
dropped least recently used first. Cached arrays are private read-only copies: a response handed out may be
changed by whoever holds it without reaching the cache.

Load generators (hey, vegeta, perf_analyzer) send one body over and over, and there a hit's cost is the
transport's: parsing the request, hashing its tensors, encoding the response. So an entry also keeps
what each request form was answered with on the wire (an HTTP body and headers, a serialized gRPC
ModelInferResponse) under a digest of that request's exact bytes (HTTP: route, binary-header length and
body; gRPC: the ModelInfer message); the same bytes again get the same answer, after checking that the
entry still stands and the model the request names now is the one that made it. Our HTTP server and
native gRPC transport answer such a hit in their read callbacks, before any task. Requests naming shared
memory never take that path (a region's contents may change under the same body).
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import re
import struct
import time
from typing import List, Optional, Tuple

import numpy as np

from gpuserve.types import InferOutput, InferRequest, InferResponse

DEFAULT_BYTES = 128 * 1024 * 1024
ALREADY_KEPT = "already kept"  # insert(): the key was kept by another request since this one's lookup
_ENTRY_OVERHEAD = 256  # bytes counted per entry and per output beside the arrays themselves
# Parameters that only say how a request travels or is scheduled, never what it computes.
_TRANSPORT_PARAMETERS = frozenset({"binary_data_output", "priority", "timeout", "triton_enable_empty_final_response",
                                   "headers"})
_SEQUENCE_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end")
_OUTPUT_TRANSPORT = frozenset({"binary_data", "shared_memory_region", "shared_memory_byte_size",
                               "shared_memory_offset"})


def enabled_for(model, mlserver_cache: bool = False) -> bool:
    """The model asked for the cache, and its answers may be cached (Triton's limitations). MLServer's
    form: the server's `cache_enabled` and the model's own `cache_enabled` (it is off by default there)."""
    settings = getattr(model, "settings", None)
    if not getattr(settings, "response_cache", False) and not (
            mlserver_cache and (getattr(settings, "model_extra", None) or {}).get("cache_enabled") is True):
        return False
    return not getattr(model, "decoupled", False) and getattr(model, "sequences", None) is None


class _Entry:
    __slots__ = ("size", "model_name", "model_version", "parameters", "outputs", "generation", "encoded")

    def __init__(self, size, model_name, model_version, parameters, outputs, generation):
        self.size, self.model_name, self.model_version = size, model_name, model_version
        self.parameters, self.outputs, self.generation = parameters, outputs, generation
        self.encoded: dict = {}  # request-bytes digest -> what the transport answered that request form with


class ResponseCache:
    def __init__(self, max_bytes: int = DEFAULT_BYTES, max_entries: int = 0, mlserver: bool = False):
        self.max_bytes = max(int(max_bytes), 0)
        self.max_entries = max(int(max_entries), 0)  # MLServer's cache_size; 0: bounded by bytes alone
        self.mlserver = mlserver  # MLServer's settings.json cache_enabled: models with cache_enabled use it
        self.bytes = 0
        self.evictions = 0  # entries dropped to make room
        # Triton's local cache gauges: lookups that found an entry or not, time spent looking and keeping
        self.hits = self.misses = self.lookup_ns = self.insertion_ns = 0
        self._entries: "collections.OrderedDict[bytes, _Entry]" = collections.OrderedDict()
        # request-bytes digest -> (key of the entry holding its answer, model name and version it asked for)
        self._by_bytes: dict = {}
        # model name -> how many request forms naming it have kept answers: requests to other models are
        # never hashed (a large body for a model without the cache costs nothing here)
        self._byte_names: "collections.Counter[str]" = collections.Counter()

    def __len__(self) -> int:
        return len(self._entries)

    def key(self, model, request: InferRequest) -> Optional[bytes]:
        """The request's digest, or None when it must not be cached (device or undecodable inputs, a
        sequence request). Each tensor's bytes go in as they are; the text hashed last names every
        tensor with its byte count, so the digest reads back unambiguously."""
        if self.max_bytes <= 0:
            return None
        parameters = request.parameters
        if parameters and any(parameters.get(name) for name in _SEQUENCE_PARAMETERS):
            return None
        inputs = request.inputs
        if len(inputs) > 1:
            inputs = sorted(inputs, key=_name)
        version = getattr(model, "version", None)
        parts = [model.name, "" if version is None else str(version), str(_generation(model))]
        digest = hashlib.blake2b(digest_size=16)
        for tensor in inputs:
            try:
                array = tensor.as_numpy()
            except Exception:  # malformed data: the model's own path says what is wrong with it
                return None
            if not isinstance(array, np.ndarray):
                return None  # on a device (Triton hashes host tensors only)
            size = _hash_array(digest, array)
            if size is None:
                return None
            parts.append(f"{tensor.name}\x00{tensor.datatype}\x00{tensor.shape}\x00{array.dtype.str}\x00{size}")
        outputs = request.request_outputs
        own = {k: v for k, v in parameters.items() if k not in _TRANSPORT_PARAMETERS} if parameters else None
        if own or outputs:
            wanted = [(o.name, {k: v for k, v in (o.parameters or {}).items() if k not in _OUTPUT_TRANSPORT})
                      for o in outputs or ()]
            parts.append(json.dumps([own or {}, wanted], sort_keys=True, default=repr))
        _text(digest, "\x01".join(parts))
        return digest.digest()

    def get(self, key: bytes, request: InferRequest) -> Optional[InferResponse]:
        """A fresh response (this request's id) from the entry, or None."""
        started = time.perf_counter_ns()
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            self.lookup_ns += time.perf_counter_ns() - started
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        self.lookup_ns += time.perf_counter_ns() - started
        return InferResponse(request.id, entry.model_name,
                             [InferOutput(name, shape, datatype, array, dict(params))
                              for name, shape, datatype, array, params in entry.outputs],
                             model_version=entry.model_version, parameters=dict(entry.parameters))

    def put(self, key: bytes, response: InferResponse, model=None) -> bool:
        """Keep a copy of a successful response; False when it cannot be cached or is larger than the cache."""
        return self.insert(key, response, model) is None

    def insert(self, key: bytes, response: InferResponse, model=None) -> Optional[str]:
        """As put; None when kept, else why not: ALREADY_KEPT when another request with this key was kept
        since the lookup (Triton's ALREADY_EXISTS, which is neither a hit nor a miss), else the error Triton's
        local cache logs."""
        if key in self._entries:
            return ALREADY_KEPT
        started = time.perf_counter_ns()
        try:
            return self._insert(key, response, model)
        finally:
            self.insertion_ns += time.perf_counter_ns() - started

    def _insert(self, key: bytes, response: InferResponse, model) -> Optional[str]:
        outputs: List[tuple] = []
        size = _ENTRY_OVERHEAD
        for output in response.outputs:
            try:
                array = output.as_numpy()
            except Exception:
                return f"output '{output.name}' could not be read"
            if not isinstance(array, np.ndarray):
                return f"output '{output.name}' is not in CPU memory"  # on a device: as Triton, not cached
            kept = np.array(array, copy=True)
            kept.flags.writeable = False
            size += _nbytes(kept) + _ENTRY_OVERHEAD
            params = {k: v for k, v in (output.parameters or {}).items() if k not in _OUTPUT_TRANSPORT}
            outputs.append((output.name, list(output.shape), output.datatype, kept, params))
        if size > self.max_bytes:
            return f"Requested byte_size: {size} is greater than total cache size: {self.max_bytes}"
        self._make_room(size)
        self._entries[key] = _Entry(size, response.model_name, response.model_version,
                                    dict(response.parameters or {}), tuple(outputs),
                                    _generation(model) if model is not None else 0)
        self.bytes += size
        return None

    # the same request bytes, answered with the same bytes ----------------------------------------------
    @staticmethod
    def bytes_key(form: str, body: bytes) -> Optional[bytes]:
        """A digest of one inference request's exact form (`form`: its route and framing, e.g. the HTTP
        path and binary-header length), or None when its bytes alone cannot stand for it: it names
        shared memory, whose contents may change under the same body."""
        if isinstance(body, memoryview):  # a large gRPC message read in place: `in` would compare items
            body = body.cast("B")
            if re.search(b"shared_memory_region", body):
                return None
        elif b"shared_memory_region" in body:
            return None
        digest = hashlib.blake2b(digest_size=16)
        _text(digest, form)
        digest.update(body)
        return digest.digest()

    def answers_bytes_for(self, name: str) -> bool:
        """Whether any request form naming this model has a kept answer (worth hashing a request for)."""
        return name in self._byte_names

    def answers_bytes(self) -> bool:
        """Whether any model has a kept answer (else a request's model name need not even be read)."""
        return bool(self._byte_names)

    def asked_for(self, request_key: bytes) -> Optional[Tuple[str, Optional[str]]]:
        """The model name and version (None: the default) requests of these bytes name, if answered before."""
        found = self._by_bytes.get(request_key)
        return (found[1], found[2]) if found is not None else None

    def encoded(self, request_key: bytes, model) -> Optional[tuple]:
        """The answer kept for these exact request bytes, while the entry it came from still stands and
        `model` (what the request names now) is the one that made it; else None."""
        found = self._by_bytes.get(request_key)
        if found is None:
            return None
        key = found[0]
        entry = self._entries.get(key)
        if entry is None:
            self._forget(request_key)
            return None
        if entry.generation != _generation(model):  # made by a model since replaced: stale
            self._drop(key)
            return None
        answer = entry.encoded.get(request_key)
        if answer is not None:  # a hit (without one, the request goes on to a lookup that counts itself)
            self._entries.move_to_end(key)
            self.hits += 1
        return answer

    def put_encoded(self, request_key: bytes, key: bytes, answer, name: str, version: Optional[str],
                    size: int) -> None:
        """Keep what one request form was answered with (`size` bytes of it), beside the entry it came
        from; `name` and `version` are what the request asked for."""
        entry = self._entries.get(key)
        if entry is None or request_key in entry.encoded:
            return
        size += _ENTRY_OVERHEAD
        if entry.size + size > self.max_bytes:
            return
        entry.size += size
        self.bytes += size
        entry.encoded[request_key] = answer
        self._by_bytes[request_key] = (key, name, version)
        self._byte_names[name] += 1
        self._entries.move_to_end(key)
        self._make_room(0, keep=key)

    # eviction -------------------------------------------------------------------------------------------
    def _make_room(self, size: int, keep: Optional[bytes] = None) -> None:
        while self._entries and (self.bytes + size > self.max_bytes
                                 or (self.max_entries and size and len(self._entries) >= self.max_entries)):
            oldest = next(iter(self._entries))
            if oldest == keep:
                break
            self._drop(oldest)
            self.evictions += 1

    def _drop(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self.bytes -= entry.size
        for request_key in entry.encoded:
            self._forget(request_key)

    def _forget(self, request_key: bytes) -> None:
        found = self._by_bytes.pop(request_key, None)
        if found is not None:
            name = found[1]
            self._byte_names[name] -= 1
            if self._byte_names[name] <= 0:
                del self._byte_names[name]

    def clear_model(self, name: str) -> None:
        """Forget a model's entries (it was loaded again: its answers may have changed)."""
        for key in [k for k, entry in self._entries.items() if entry.model_name == name]:
            self._drop(key)


_generations = itertools.count(1)


def _name(tensor) -> str:
    return tensor.name


def _generation(model):
    """A number of this model object's own: a model loaded again (same name and version, maybe another
    file) never meets its predecessor's answers. Not id(): CPython reuses a freed object's address. An
    ensemble's also names its steps' models as they are now: a step loaded again makes its answers stale."""
    steps = getattr(model, "steps", None) if getattr(model, "platform", "") == "ensemble" else None
    registry = getattr(model, "registry", None)
    if steps and registry is not None:
        return (_own_generation(model),
                tuple(_generation(registry.get_model(step.model, step.version)) for step in steps))
    return _own_generation(model)


def _own_generation(model) -> int:
    number = getattr(model, "_response_cache_generation", None)
    if number is None:
        number = next(_generations)
        try:
            model._response_cache_generation = number
        except AttributeError:  # a model class with __slots__: name and version alone, as Triton
            return 0
    return number


def _text(digest, text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    digest.update(struct.pack("<Q", len(data)))
    digest.update(data)


def _hash_array(digest, array: np.ndarray) -> Optional[int]:
    """Feed the array's data to `digest`; the number of bytes fed (BYTES: each element length-prefixed),
    or None for an object array holding something other than bytes or text."""
    if array.dtype.hasobject:
        fed = 0
        for item in array.ravel():
            if isinstance(item, str):
                item = item.encode("utf-8", "surrogatepass")
            elif not isinstance(item, (bytes, bytearray)):
                return None
            digest.update(struct.pack("<Q", len(item)))
            digest.update(item)
            fed += 8 + len(item)
        return fed
    digest.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    return array.nbytes


def _nbytes(array: np.ndarray) -> int:
    if array.dtype.hasobject:
        return array.size * 8 + sum(len(item) for item in array.ravel() if isinstance(item, (bytes, str)))
    return array.nbytes


def parse_cache_config(values: List[str], byte_size: Optional[int] = None) -> Optional[int]:
    """Triton's `--cache-config NAME,KEY=VALUE` (repeatable; settings of one cache name add up) or its older
    `--response-cache-byte-size` (`byte_size`): the local cache's size in bytes, None when neither is given.
    Refused as Triton refuses them: both flags at once, two cache names, a cache other than local (no
    Redis here), a local cache without a size."""
    if byte_size is not None and values:
        raise ValueError("Error: Incompatible flags --response-cache-byte-size and --cache-config both provided. "
                         "Please provide one or the other.")
    if byte_size is not None:
        return max(int(byte_size), 0)
    caches: dict = {}
    for value in values or ():
        kind, comma, rest = value.partition(",")
        key, equals, number = rest.partition("=")
        if not comma or not equals or not kind.strip() or not key.strip():
            raise ValueError(f"--cache-config: expected NAME,SETTING=VALUE such as local,size=BYTES (got '{value}')")
        caches.setdefault(kind.strip(), {})[key.strip()] = number.strip()
    if len(caches) > 1:
        raise ValueError("found multiple cache configurations, but only a single cache is currently supported")
    if not caches:
        return None
    kind, config = next(iter(caches.items()))
    if kind != "local":
        raise ValueError(f"--cache-config: only the 'local' cache is served (got '{kind}')")
    size = config.get("size", "")
    if not size.isdigit():
        raise ValueError("--cache-config: Failed to initialize LocalCache: config didn't contain a valid 'size' field "
                         f"(expected local,size=BYTES, got '{','.join(values)}')")
    return int(size)
