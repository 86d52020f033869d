"""The one error table: every transport reads status codes from here and never maps errors itself.

Stdlib only, so any layer may import it. Names follow KServe's `kserve.errors` so user code that
raises `InvalidInput` or `ModelNotReady` keeps working with only the import changed.
"""

from __future__ import annotations

from typing import Iterator, Optional


class GpuserveError(Exception):
    """Base of every error with a defined status. `http` and `grpc` are read by the transports."""

    http = 500
    grpc = "INTERNAL"

    def __init__(self, reason: str = "", *, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.headers = headers or {}

    def __str__(self) -> str:
        return self.reason


class InvalidInput(GpuserveError, ValueError):
    """A ValueError, as KServe's: user code that catches ValueError catches it too."""

    http, grpc = 400, "INVALID_ARGUMENT"


class ModelNotFound(GpuserveError):
    http, grpc = 404, "NOT_FOUND"

    def __init__(self, model_name: str = "", version: str | None = None, reason: str | None = None):
        if reason is None:  # Triton's words: tritonclient's examples check that the message starts so
            reason = f"Request for unknown model: '{model_name}'" + (f" version {version}" if version else "") \
                + " is not found"
        super().__init__(reason)
        self.model_name = model_name


class ModelNotReady(GpuserveError, RuntimeError):
    http, grpc = 503, "UNAVAILABLE"

    def __init__(self, model_name: str = "", detail: str | None = None):
        reason = f"Model with name {model_name} is not ready."
        if detail:
            reason = f"{reason} {detail}"
        super().__init__(reason)
        self.model_name = model_name


class VersionNotReady(GpuserveError):
    """A version of a Triton-form model that is known and not loaded (Triton: UNAVAILABLE, HTTP 503)."""

    http, grpc = 503, "UNAVAILABLE"

    def __init__(self, model_name: str, version: str):
        super().__init__(f"Request for unknown model: '{model_name}' version {version} is not at ready state")
        self.model_name = model_name


class ServerNotReady(GpuserveError, RuntimeError):
    http, grpc = 503, "UNAVAILABLE"

    def __init__(self, detail: str | None = None):
        super().__init__("Server is not ready." + (f" {detail}" if detail else ""))


class ServerNotLive(GpuserveError, RuntimeError):
    http, grpc = 503, "UNAVAILABLE"

    def __init__(self, detail: str | None = None):
        super().__init__("Server is not live." + (f" {detail}" if detail else ""))


class NoModelReady(GpuserveError, RuntimeError):
    """`ModelServer.start(models)` with none of them ready (KServe's signature: the models themselves)."""

    http, grpc = 503, "UNAVAILABLE"

    def __init__(self, models: list = (), detail: str | None = None):
        self.models = list(models)
        self.detail = detail
        names = [getattr(model, "name", str(model)) for model in self.models]
        if len(names) == 1:
            reason = f"Model with name {names[0]} is not ready."
        else:
            reason = f"Models with names {', '.join(names)} are not ready."
        super().__init__(reason + (f" {detail}" if detail else ""))


class WorkersShouldBeLessThanMaxWorkersError(GpuserveError):
    http, grpc = 400, "INVALID_ARGUMENT"

    def __init__(self, max_workers: int | None = None):
        super().__init__(f"Workers cannot be greater than {max_workers}")


class QueueFull(GpuserveError):
    http, grpc = 503, "UNAVAILABLE"
    request_scoped = False  # a config.pbtxt model's: the data plane writes the request's id first, as Triton

    def __init__(self, reason: str = "queue is full", retry_after_s: int = 1):
        super().__init__(reason, headers={"Retry-After": str(retry_after_s)})


class RegionExists(GpuserveError):
    """A second shared-memory registration under one name (Triton: ALREADY_EXISTS, HTTP 400)."""

    http, grpc = 400, "ALREADY_EXISTS"


class RegionUnopenable(GpuserveError):
    """A shared-memory key the server cannot open (none by that name, or not a region): Triton 2.51 answers
    INTERNAL (HTTP 500), "Unable to open shared memory region: 'KEY'", and clients match that status."""

    http, grpc = 500, "INTERNAL"


class AlreadyExists(GpuserveError):
    """A model repository registered twice, or a name it would serve that another folder serves (Triton:
    ALREADY_EXISTS; SageMaker's multi-model load answers 409)."""

    http, grpc = 409, "ALREADY_EXISTS"


class RegionNotFound(GpuserveError):
    """Status of a shared-memory region that is not registered (Triton: NOT_FOUND)."""

    http, grpc = 404, "NOT_FOUND"


class DeadlineExceeded(GpuserveError):
    http, grpc = 504, "DEADLINE_EXCEEDED"


class QueueTimeout(GpuserveError):
    """A request that timed out in a Triton-form model's queue: Triton's status and words ("Request timeout
    expired", UNAVAILABLE, HTTP 503), which tritonclient users match; other models answer DeadlineExceeded."""

    http, grpc = 503, "UNAVAILABLE"


class RequestCancelled(GpuserveError):
    """A request Triton cancels on the server's side (a queued one whose sequence was cancelled); 400 as its
    HTTP endpoint answers CANCELLED."""

    http, grpc = 400, "CANCELLED"


class PayloadTooLarge(GpuserveError):
    http, grpc = 413, "RESOURCE_EXHAUSTED"


class UnsupportedProtocol(GpuserveError):
    http, grpc = 400, "UNIMPLEMENTED"


class Unimplemented(GpuserveError):
    http, grpc = 501, "UNIMPLEMENTED"


class ModelControlDisabled(GpuserveError):
    """A repository load/unload while the server manages its models itself (Triton's model control modes
    none and poll, MLServer's model_control_enabled=false): Triton answers these UNAVAILABLE (503)."""

    http, grpc = 503, "UNAVAILABLE"


class InferenceError(GpuserveError, RuntimeError):
    """KServe's signature; `status` (a string, e.g. "503") is shown before the reason, as KServe's, and
    does not change the answer's status (500 / INTERNAL), as in KServe."""

    http, grpc = 500, "INTERNAL"

    def __init__(self, reason: str = "", status: str | None = None, debug_details: str | None = None, *,
                 headers: dict[str, str] | None = None):
        super().__init__(reason, headers=headers)
        self.status = status
        self.debug_details = debug_details

    def __str__(self) -> str:
        return self.reason if self.status is None else f"[{self.status}] {self.reason}"


def escaped(exc: BaseException) -> InferenceError:
    """The 500 a request answers when model code raised a BaseException outside Exception (sys.exit(),
    KeyboardInterrupt, GeneratorExit, a CancelledError of its own) or a StopIteration on a thread. Let
    through, the first two stop the event loop, and the server with it; the others leave the request
    unanswered (asyncio cannot put a StopIteration into a future; a CancelledError reads as the client
    having gone)."""
    words = words_of(exc)
    return InferenceError(f"model code raised {type(exc).__name__}" + (f": {words}" if words else ""))


def words_of(exc: BaseException) -> str:
    """`str(exc)`, or "" where its `__str__` fails: an answer is written whatever a model's exception does."""
    try:
        return str(exc)
    except Exception:
        return ""


def cancelled_here(exc: BaseException) -> bool:
    """Whether `exc` is the cancellation of the running task (its client went away, the server stops), not a
    CancelledError some code raised by itself. Before Python 3.11 every CancelledError counts as one."""
    import asyncio

    if not isinstance(exc, asyncio.CancelledError):
        return False
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop: a thread's own CancelledError
        return False
    cancelling = getattr(task, "cancelling", None)
    return task is None or cancelling is None or cancelling() > 0


class ModelMissingError(GpuserveError):
    """A model folder or artefact named by settings does not exist: the server's fault, 500 as KServe."""

    http, grpc = 500, "INTERNAL"

    def __init__(self, path: str = ""):
        super().__init__(str(path))
        self.path = path


class ModelLoadError(GpuserveError):
    http, grpc = 500, "INTERNAL"


class InvalidSettings(GpuserveError):
    """Bad settings file or value: raised at start-up, reported by the CLI."""

    http, grpc = 400, "INVALID_ARGUMENT"


class RemotePredictorError(GpuserveError):
    """The remote predictor (transformer pattern) answered with an error; its status is kept."""

    grpc = "UNAVAILABLE"

    def __init__(self, reason: str, status: int = 502):
        super().__init__(reason)
        self.http = status


def status_of(exc: BaseException) -> tuple[int, str]:
    """HTTP status and gRPC code name for any exception; unknown ones are internal errors."""
    if isinstance(exc, GpuserveError):
        return exc.http, exc.grpc
    if isinstance(exc, NotImplementedError):
        return 501, "UNIMPLEMENTED"
    return 500, "INTERNAL"


def mark_user_error(exc: BaseException) -> None:
    """An exception a user's KServe hook raised outside the error table: REST says it as KServe's catch-all
    handler does, `"<type> : <message>"`, so clients matching KServe's bodies see the same text."""
    try:
        exc.gpuserve_user_error = True
    except AttributeError:  # an exception type with __slots__
        pass


def user_error_text(exc: BaseException) -> Optional[str]:
    if getattr(exc, "gpuserve_user_error", False) and not isinstance(exc, NotImplementedError):
        return f"{type(exc).__name__} : {words_of(exc)}"
    return None


def exception_chain(exc: Optional[BaseException]) -> Iterator[BaseException]:
    """`exc`, then what it was raised from or during, each once: where a framework's own error text hides
    under the one a caller wrapped it in."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__
