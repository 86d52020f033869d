"""The workers of `gpuserve start --workers N` answer each other on Unix sockets, so that one worker a client
reaches can answer for all of them.

The kernel spreads client connections over the workers, and each keeps its own models, statistics and
settings. Without this, statistics and metrics counted one worker's share, and a model loaded or unloaded,
a trace or log setting changed or a CUDA shared-memory region registered through one connection reached
one worker only. Now the worker asked gathers the others' statistics and metrics (summed in
gpuserve/peer_merge.py) and tells them what it changed, answering the client once every worker has done
the same (a worker that fails says so, named; a CUDA region is then dropped everywhere).

Each worker listens on `<folder>/<index>.sock` in a folder the parent makes (server/workers.py); a message
is a 4-byte length and a JSON object, `{"op": ..., "args": {...}}`, answered `{"ok": result}` or
`{"error": text, "http": status, "grpc": code}`. One connection a question: they are rare (a scrape, a
statistics read, a load), and a worker that died or has not yet started is simply not there.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import struct
from typing import Any, Awaitable, Callable, Dict, List, Optional

from gpuserve.errors import GpuserveError, status_of

logger = logging.getLogger("gpuserve")

ENV = "GPUSERVE_WORKER_PEERS"  # "<folder>:<count>", set by server/workers.py for each worker
INDEX_ENV = "GPUSERVE_WORKER_INDEX"
HEADER = struct.Struct(">I")
MAX_MESSAGE = 1 << 30
BYTES_KEY = "$bytes"
ASK_TIMEOUT_S = 30.0  # statistics, metrics, settings

Handler = Callable[[Dict[str, Any]], Awaitable[Any]]


class PeerError(GpuserveError):
    """What another worker answered when told to do what this one did; its status is kept."""

    def __init__(self, reason: str, http: int = 500, grpc: str = "INTERNAL"):
        super().__init__(reason)
        self.http, self.grpc = http, grpc


class Peers:
    def __init__(self, folder: str, index: int, count: int):
        self.folder, self.index, self.count = folder, index, count
        self._server: Optional[asyncio.AbstractServer] = None
        self._handlers: Dict[str, Handler] = {}
        self._all_started = False

    @classmethod
    def from_environment(cls) -> Optional["Peers"]:
        value, index = os.environ.get(ENV), os.environ.get(INDEX_ENV)
        if not value or index is None:
            return None
        folder, _, count = value.rpartition(":")
        if not folder or not os.path.isdir(folder):
            return None
        return cls(folder, int(index), int(count))

    def path(self, index: int) -> str:
        return os.path.join(self.folder, f"{index}.sock")

    # start-up: the server is ready once every worker is --------------------------------------
    def mark_started(self) -> None:
        """This worker finished its start-up loads (a file beside its socket says so to the others)."""
        with open(os.path.join(self.folder, f"{self.index}.started"), "w"):
            pass

    def all_started(self) -> bool:
        """Whether every worker finished its start-up loads: a client that waited for the server's readiness
        must not meet a worker still loading (it would answer that the model is not ready). Stays true once
        seen (a worker that dies later does not make the others unready)."""
        if not self._all_started:
            self._all_started = all(os.path.exists(os.path.join(self.folder, f"{i}.started"))
                                    for i in range(self.count))
        return self._all_started

    async def start(self, handlers: Dict[str, Handler]) -> None:
        self._handlers = handlers
        path = self.path(self.index)
        if os.path.exists(path):
            os.unlink(path)
        self._server = await asyncio.start_unix_server(self._serve, path=path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        try:
            os.unlink(self.path(self.index))
        except OSError:
            pass

    # answering ----------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            message = await _read(reader)
            handler = self._handlers.get(message.get("op"))
            if handler is None:
                answer = {"error": f"unknown request {message.get('op')!r} between workers", "http": 400,
                          "grpc": "INVALID_ARGUMENT"}
            else:
                try:
                    answer = {"ok": await handler(message.get("args") or {})}
                except Exception as exc:  # noqa: BLE001 - said to the asking worker, which answers its client
                    http, grpc = status_of(exc)
                    answer = {"error": str(exc) or type(exc).__name__, "http": http, "grpc": grpc}
            _write(writer, answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    # asking -------------------------------------------------------------------------------------
    async def _ask_one(self, index: int, op: str, args: Dict[str, Any], timeout: float) -> Dict[str, Any]:
        async def exchange():
            reader, writer = await asyncio.open_unix_connection(self.path(index))
            try:
                _write(writer, {"op": op, "args": args})
                await writer.drain()
                return await _read(reader)
            finally:
                writer.close()

        return await asyncio.wait_for(exchange(), timeout)

    def _others(self) -> List[int]:
        return [i for i in range(self.count) if i != self.index]

    async def gather(self, op: str, args: Dict[str, Any], timeout: float = ASK_TIMEOUT_S) -> List[Any]:
        """Every other worker's answer to a question; one that is gone, not yet listening or failing is left
        out (logged): what the others counted is still worth answering."""
        others = self._others()
        answers = await asyncio.gather(*(self._ask_one(i, op, args, timeout) for i in others),
                                       return_exceptions=True)
        results = []
        for index, answer in zip(others, answers):
            if isinstance(answer, BaseException):
                logger.warning("worker %d did not answer %s: %s", index, op, answer or type(answer).__name__)
            elif "error" in answer:
                logger.warning("worker %d could not answer %s: %s", index, op, answer["error"])
            else:
                results.append(answer["ok"])
        return results

    async def tell(self, op: str, args: Dict[str, Any], timeout: float = ASK_TIMEOUT_S) -> None:
        """Have every other worker do what this one did; the first failure is raised, naming the worker,
        after all have answered (none is left half done behind the client's back)."""
        others = self._others()
        answers = await asyncio.gather(*(self._ask_one(i, op, args, timeout) for i in others),
                                       return_exceptions=True)
        for index, answer in zip(others, answers):
            if isinstance(answer, BaseException):
                if isinstance(answer, (FileNotFoundError, ConnectionRefusedError)):
                    logger.warning("worker %d is not listening; it did not take %s", index, op)
                    continue
                raise PeerError(f"worker {index} did not answer ({op}): {answer or type(answer).__name__}")
            if "error" in answer:
                raise PeerError(f"worker {index}: {answer['error']}", answer.get("http", 500),
                                answer.get("grpc", "INTERNAL"))


def _write(writer: asyncio.StreamWriter, message: Dict[str, Any]) -> None:
    body = json.dumps(message, separators=(",", ":"), default=_bytes_out).encode()
    writer.write(HEADER.pack(len(body)) + body)


async def _read(reader: asyncio.StreamReader) -> Dict[str, Any]:
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    if size > MAX_MESSAGE:
        raise ValueError(f"a message of {size} bytes between workers")
    message = json.loads(await reader.readexactly(size), object_hook=_bytes_in)
    if not isinstance(message, dict):
        raise ValueError("a message between workers is a JSON object")
    return message


def _bytes_out(value):
    """Bytes (a load's model files) travel as base64 in an object of their own."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {BYTES_KEY: base64.b64encode(bytes(value)).decode()}
    raise TypeError(f"{type(value).__name__} cannot go to another worker")


def _bytes_in(obj: Dict[str, Any]):
    if len(obj) == 1 and BYTES_KEY in obj:
        return base64.b64decode(obj[BYTES_KEY])
    return obj


def handlers(plane, exposition) -> Dict[str, Handler]:
    """What a worker does when another asks: its own part only (nothing is passed on again)."""
    settings = plane.runtime_settings

    async def statistics(args):
        return plane.statistics(args.get("name"), args.get("version"), args.get("unversioned", "1"))

    async def metrics(args):
        return exposition.render().decode()

    async def load(args):
        await plane.load_model(args["name"], args.get("config"), args.get("files"), everywhere=False)

    async def unload(args):
        await plane.unload_model(args["name"], bool(args.get("unload_dependents")), everywhere=False)

    async def trace(args):
        settings.update_trace(args.get("updates") or {}, args.get("model"))

    async def trace_clear(args):
        settings.clear_model_trace(args["model"])

    async def log(args):
        settings.update_log(args.get("updates") or {})

    async def cuda_register(args):
        plane.shared_memory.cuda_register(args["name"], args["raw_handle"], args["device_id"], args["byte_size"])

    async def cuda_unregister(args):
        plane.shared_memory.cuda_unregister(args.get("name"))

    async def torchserve(args):  # TorchServe's management writes (server/torchserve_manage.py)
        from gpuserve.server import torchserve_manage

        await torchserve_manage.apply(plane, args)

    async def tfserving_reload(args):  # TFServing's HandleReloadConfigRequest (server/tfserving_reload.py)
        from gpuserve.server.tfserving_reload import reload_config

        await reload_config(plane, args["configs"], everywhere=False)

    return {"statistics": statistics, "metrics": metrics, "load": load, "unload": unload, "trace": trace,
            "trace_clear": trace_clear, "log": log, "cuda_register": cuda_register,
            "cuda_unregister": cuda_unregister, "torchserve": torchserve, "tfserving_reload": tfserving_reload}
