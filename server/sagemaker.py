"""Triton's SageMaker endpoint (`--allow-sagemaker=true`, `--sagemaker-port`), so a Triton SageMaker container
keeps working with this image: the container's environment and SageMaker's contract are read as tritonserver
reads them.

- `GET /ping`: 200 while the server is ready (SAGEMAKER_TRITON_PING_MODE=live: while it is live), else 400.
- `POST /invocations`: the model SAGEMAKER_TRITON_DEFAULT_MODEL_NAME, as `infer`, `generate` or
  `generate_stream` (SAGEMAKER_TRITON_INFERENCE_TYPE). A binary request says its JSON header's size in
  `Content-Type: application/vnd.sagemaker-triton.binary+json;json-header-size=N`; a binary answer too.
- Multi-model endpoints: `POST /models {"model_name", "url"}` registers the folder SageMaker unpacked under
  /opt/ml/models/<hash>/model and loads it (its ensemble, where it holds several models) under the name in
  the X-Amzn-SageMaker-Target-Model header, else `model_name`; `GET /models[/<name>]` lists them,
  `POST /models/<name>/invoke` infers, `DELETE /models/<name>` unloads it and its steps.

--http-restricted-api applies: model-repository to /models, inference to the inference routes, health to
/ping. Errors answer in Triton's JSON `{"error": ...}`; routes SageMaker does not have answer 400.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Dict, Optional

import orjson

from gpuserve.errors import GpuserveError, InvalidInput, InvalidSettings
from gpuserve.server.cloud import answer, error, forward, header_of, model_path, read_all

logger = logging.getLogger("gpuserve.sagemaker")
MIME = "application/vnd.sagemaker-triton.binary+json;json-header-size="
UNSPECIFIED = "unspecified_SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"
TARGET = "X-Amzn-SageMaker-Target-Model"
VERBS = {"infer": "infer", "generate": "generate", "generate_stream": "generate_stream"}
# errors SageMaker is told apart as out of memory (507), so it can make room and retry elsewhere
OOM = ("CUDA out of memory", "CUDA_OUT_OF_MEMORY", "Out of memory", "Out Of Memory", "out of memory",
       "MemoryError", "OutOfMemory", "OOM", "Failed to allocate memory", "failed to allocate memory",
       "No space left on device")


class SageMakerApp:
    def __init__(self, plane, inner, guard, settings):
        self.plane = plane
        self.inner = inner  # the main REST routes, behind --http-restricted-api
        self.guard = guard
        self.root = Path(settings.sagemaker_models_root)
        self.ping_mode = os.environ.get("SAGEMAKER_TRITON_PING_MODE", "ready")
        self.model = os.environ.get("SAGEMAKER_TRITON_DEFAULT_MODEL_NAME", UNSPECIFIED)
        kind = os.environ.get("SAGEMAKER_TRITON_INFERENCE_TYPE", "infer")
        if kind not in VERBS:
            raise InvalidSettings(f"Invalid SAGEMAKER_TRITON_INFERENCE_TYPE '{kind}': must be one of: infer, "
                               "generate, generate_stream")
        self.verb = VERBS[kind]
        self.loaded: Dict[str, str] = {}  # model name SageMaker gave -> the folder registered for it
        self.targets: Dict[str, str] = {}  # that name -> the name the model is served under
        self.lock = threading.Lock()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        try:
            if path == "/ping":
                return await self.ping(scope, send)
            if path == "/invocations":
                return await forward(self.inner, scope, receive, send, method,
                                     model_path(self.model, verb=self.verb), MIME if self.verb == "infer" else None)
            found = re.fullmatch(r"/models/?([^/]+)?(/invoke)?", path)
            if found:
                return await self.models(scope, receive, send, method, found.group(1) or "", bool(found.group(2)))
        except GpuserveError as exc:
            return await error(send, exc.http, str(exc))
        logger.debug("SageMaker error: %s %s - 400", method, path)
        await answer(send, 400)

    def refused(self, scope, method: str, path: str) -> Optional[bytes]:
        return self.guard.refusal(method, path, header_of(scope)) if self.guard is not None else None

    async def ping(self, scope, send) -> None:
        refusal = self.refused(scope, "GET", "/v2/health/ready")
        if refusal is not None:
            return await answer(send, 403, refusal)
        if scope["method"] != "GET":
            return await error(send, 405, "Method Not Allowed")
        ok = self.plane.live() if self.ping_mode == "live" else self.plane.ready()
        await answer(send, 200 if ok else 400)

    async def models(self, scope, receive, send, method: str, name: str, invoke: bool) -> None:
        if method == "POST" and invoke:
            with self.lock:
                known = name in self.loaded
            if not known:
                return await answer(send, 404)
            target = header_of(scope)(TARGET) or self.targets.get(name, name)
            logger.info("Invoking SageMaker TargetModel: %s", target)
            return await forward(self.inner, scope, receive, send, "POST", model_path(target), MIME)
        if method not in ("GET", "POST", "DELETE") or invoke:
            return await answer(send, 400)
        refusal = self.refused(scope, "POST", "/v2/repository/index")
        if refusal is not None:
            return await answer(send, 403, refusal)
        if method == "GET":
            return await (self.describe(send, name) if name else self.listing(send))
        if method == "DELETE":
            return await self.unload(scope, send, name)
        if name:
            return await answer(send, 400)
        await self.load(scope, receive, send)

    async def listing(self, send) -> None:
        with self.lock:
            pairs = list(self.loaded.items())
        models = [{"modelName": name, "modelUrl": url} for name, url in pairs
                  if self.plane.model_ready(self.targets.get(name, name))]
        await answer(send, 200, orjson.dumps({"models": models}))

    async def describe(self, send, name: str) -> None:
        with self.lock:
            url = self.loaded.get(name)
        if url is None:
            return await answer(send, 404)
        await answer(send, 200, orjson.dumps({"modelName": name, "modelUrl": url}))

    async def load(self, scope, receive, send) -> None:
        body = await read_all(receive)
        try:
            request = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError as exc:  # RapidJSON's words, which Triton answers with
            return await error(send, 400, f"failed to parse the request JSON buffer: Invalid value. at {exc.pos}")
        if not isinstance(request, dict) or not isinstance(request.get("model_name", ""), str) \
                or not isinstance(request.get("url", ""), str):
            return await error(send, 400, "'model_name' and 'url' must be strings")
        name, url = request.get("model_name", ""), request.get("url", "")
        target = header_of(scope)(TARGET) or name
        logger.info("Loading SageMaker TargetModel: %s", target)
        disk = getattr(self.plane.repository, "disk", None)
        if disk is None:
            return await error(send, 400, "this server has no model repository to register models with")
        try:
            folder, names = self.layout(url, target)
        except InvalidInput as exc:
            return await error(send, 400, str(exc))
        with self.lock:
            if name in self.loaded:
                return await error(send, 409, f"model '{name}' is already loaded")
            try:
                disk.register_repository(folder, names)
            except GpuserveError as exc:
                return await error(send, exc.http, str(exc))
            self.loaded[name], self.targets[name] = str(folder), target
        try:
            await self.plane.load_model(target)
        except Exception as exc:  # the folder goes again, so a corrected upload can be loaded
            with self.lock:
                self.loaded.pop(name, None)
                self.targets.pop(name, None)
                disk.unregister_repository(folder)
            message = str(exc) or type(exc).__name__
            return await error(send, 507 if any(word in message for word in OOM) else 400, message)
        await answer(send, 200)

    def layout(self, url: str, target: str):
        """(the folder to register, {its subfolder: the name to serve it under}) for SageMaker's `url`,
        /opt/ml/models/<hash>/model[/<subfolder>]: a model whose config.pbtxt is in `url` itself, or a
        repository of models of which the ensemble (else the only one) is the one served as `target`."""
        given = Path(os.path.normpath(os.path.abspath(url or ".")))
        if any(str(given).startswith(p) for p in ("/dev/", "/proc/", "/sys/")):
            raise InvalidInput(f"Invalid URL: {url}. \"url\" property value cannot start with /dev/, /proc/, or "
                               "/sys/.")
        try:
            parts = given.relative_to(os.path.normpath(os.path.abspath(self.root))).parts
        except ValueError:
            parts = ()
        if not (2 <= len(parts) <= 3 and parts[1] == "model"
                and all(re.fullmatch(r"[0-9A-Za-z._]+", p) for p in parts[:1] + parts[2:])):
            raise InvalidInput(f"Invalid \"url\" '{url}': expected a path of the form "
                               f"{self.root}/<hash>/model[/<subdir>]")
        if not given.is_dir():
            raise InvalidInput(f"Invalid \"url\" '{url}': no such folder")
        if (given / "config.pbtxt").is_file():
            return given.parent, {given.name: target}
        chosen = None
        for sub in sorted(p for p in given.iterdir() if p.is_dir()):
            config = sub / "config.pbtxt"
            text = config.read_text(errors="replace") if config.is_file() else ""
            if re.search(r'platform:\s*"ensemble"', text):
                chosen = sub
                break
            chosen = sub
        if chosen is None:
            raise InvalidInput(f"Invalid \"url\" '{url}': it holds no model folder")
        return given, {chosen.name: target}

    async def unload(self, scope, send, name: str) -> None:
        with self.lock:
            folder = self.loaded.get(name)
        if folder is None:
            return await answer(send, 404)
        target = header_of(scope)(TARGET) or self.targets.get(name, name)
        logger.info("Unloading SageMaker TargetModel: %s", target)
        try:
            await self.plane.unload_model(target, unload_dependents=True)
        except GpuserveError as exc:
            return await error(send, 400, str(exc))
        with self.lock:
            self.loaded.pop(name, None)
            self.targets.pop(name, None)
        disk = self.plane.repository.disk
        try:
            disk.unregister_repository(folder)
        except GpuserveError as exc:
            return await error(send, 400, str(exc))
        await answer(send, 200)
