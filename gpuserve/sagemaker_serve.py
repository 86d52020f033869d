"""`serve`, the command SageMaker runs in a serving container (`docker run IMAGE serve`): gpuserve started the way
Triton's SageMaker image starts tritonserver, from the container's SAGEMAKER_* environment, so an endpoint
configured for Triton's image keeps its configuration.

Single-model endpoints serve /opt/ml/model, loading SAGEMAKER_TRITON_DEFAULT_MODEL_NAME (else the folder's
only model); multi-model endpoints (SAGEMAKER_MULTI_MODEL=true) start empty and load what SageMaker asks for
through /models. The image runs this file as `serve` (Dockerfile.cuda); `python -m gpuserve.sagemaker_serve`
is the same. Errors in the environment stop it before the server starts, in the words of Triton's script
(which deployment checks grep).
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]  # run by its path (the image's `serve`): the package's modules are no top-level modules

from pathlib import Path  # noqa: E402
from typing import Dict, List, Mapping, Optional, Tuple  # noqa: E402

SINGLE_MODEL_REPOSITORY = "/opt/ml/model/"
MULTI_MODEL_REPOSITORY = "/tmp/sagemaker"  # empty: SageMaker's models are registered one by one
INFERENCE_TYPES = ("infer", "generate", "generate_stream")

# environment variable -> the flag it sets (as given), where the variable is set
PASSED = {"SAGEMAKER_BIND_TO_PORT": "--sagemaker-port", "SAGEMAKER_SAFE_PORT_RANGE": "--sagemaker-safe-port-range",
          "SAGEMAKER_TRITON_METRICS_PORT": "--metrics-port", "SAGEMAKER_TRITON_GRPC_PORT": "--grpc-port",
          "SAGEMAKER_TRITON_BUFFER_MANAGER_THREAD_COUNT": "--buffer-manager-thread-count",
          "SAGEMAKER_TRITON_THREAD_COUNT": "--sagemaker-thread-count",
          "SAGEMAKER_TRITON_LOG_INFO": "--log-info", "SAGEMAKER_TRITON_LOG_WARNING": "--log-warning",
          "SAGEMAKER_TRITON_LOG_ERROR": "--log-error"}
# environment variable -> (flag, its value when the variable is not set)
DEFAULTED = {"SAGEMAKER_TRITON_DISABLE_MODEL_NAMESPACING": ("--model-namespacing", "true"),
             "SAGEMAKER_TRITON_ALLOW_GRPC": ("--allow-grpc", "false"),
             "SAGEMAKER_TRITON_ALLOW_METRICS": ("--allow-metrics", "false"),
             "SAGEMAKER_TRITON_LOG_VERBOSE": ("--log-verbose", "true")}


class ServeError(Exception):
    """The environment cannot start an endpoint; the message is printed as is."""


def arguments(env: Mapping[str, str], single_model_repository: str = SINGLE_MODEL_REPOSITORY,
              multi_model_repository: str = MULTI_MODEL_REPOSITORY) -> Tuple[List[str], Dict[str, str]]:
    """(`gpuserve start` arguments for the environment `env`, the environment variables the server then
    reads that the script sets itself)."""
    multi = env.get("SAGEMAKER_MULTI_MODEL") == "true"
    repository = multi_model_repository if multi else single_model_repository
    ping = env.get("SAGEMAKER_TRITON_OVERRIDE_PING_MODE") or ("live" if multi else "ready")
    if multi:
        Path(repository).mkdir(parents=True, exist_ok=True)
        print(f'Triton is running in SageMaker MME mode. Using Triton ping mode: "{ping}"', flush=True)
    args = ["start", "--allow-sagemaker=true", "--allow-http=false", "--model-control-mode=explicit",
            f"--model-repository={repository}"]
    for name, (flag, default) in DEFAULTED.items():
        args.append(f"{flag}={env.get(name) or default}")
    args += [f"{flag}={env[name]}" for name, flag in PASSED.items() if env.get(name)]
    for key, default in (("SHM_DEFAULT_BYTE_SIZE", 16 * 1024 * 1024), ("SHM_GROWTH_BYTE_SIZE", 1024 * 1024)):
        size = env.get(f"SAGEMAKER_TRITON_{key}") or default
        args.append(f"--backend-config=python,{key.lower().replace('_', '-')}={size}")
    if env.get("SAGEMAKER_TRITON_ADDITIONAL_ARGS"):
        args += env["SAGEMAKER_TRITON_ADDITIONAL_ARGS"].split()
    if not multi and (Path(repository) / "config.pbtxt").is_file():
        raise ServeError("ERROR: Incorrect directory structure.\n"
                         "       Model directory needs to contain the top level folder")
    kind = env.get("SAGEMAKER_TRITON_INFERENCE_TYPE")
    if kind and kind not in INFERENCE_TYPES:
        raise ServeError(f"ERROR: Invalid SAGEMAKER_TRITON_INFERENCE_TYPE '{kind}'\n"
                         "       Must be one of: infer, generate, generate_stream")
    if not multi:
        args.append(f"--load-model={default_model(env, Path(repository))}")
    return args, {"SAGEMAKER_TRITON_PING_MODE": ping}


def default_model(env: Mapping[str, str], repository: Path) -> str:
    name = env.get("SAGEMAKER_TRITON_DEFAULT_MODEL_NAME")
    if name:
        if not (repository / name).is_dir():
            raise ServeError(f"ERROR: Directory with provided SAGEMAKER_TRITON_DEFAULT_MODEL_NAME {name} does not "
                             "exist")
        return name
    folders = sorted(p.name for p in repository.iterdir() if p.is_dir()) if repository.is_dir() else []
    if not folders:
        raise ServeError("ERROR: No model found in model repository")
    if len(folders) > 1:
        raise ServeError("ERROR: More than 1 model directory found in model repository.\n"
                         "       Either provide a single directory or set SAGEMAKER_TRITON_DEFAULT_MODEL_NAME to "
                         "run the ensemble backend.\n"
                         f"       Directories found in model repository: {' '.join(folders)}")
    print("WARNING: No SAGEMAKER_TRITON_DEFAULT_MODEL_NAME provided.\n"
          f"         Starting with the only existing model directory {folders[0]}", flush=True)
    return folders[0]


def main(argv: Optional[List[str]] = None) -> int:
    env: Dict[str, str] = dict(os.environ)
    try:
        args, more = arguments(env)
    except ServeError as exc:
        print(exc, flush=True)
        return 1
    os.environ.update(more)
    if "SAGEMAKER_TRITON_DEFAULT_MODEL_NAME" not in os.environ and env.get("SAGEMAKER_MULTI_MODEL") != "true":
        os.environ["SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"] = args[-1].split("=", 1)[1]
    from gpuserve.cli import main as gpuserve

    return gpuserve(args + list(argv or []))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
