"""The `tensorflow_model_server` command: TensorFlow Serving's launch line runs as `gpuserve start`.

KServe's TensorFlow runtime starts `tensorflow_model_server --model_name=NAME --port=9000 --rest_api_port=8080
--model_base_path=/mnt/models`, and tensorflow/serving's image `--port=8500 --rest_api_port=8501 --model_name=...
--model_base_path=...`: with this command on the PATH those lines, and a `--model_config_file`, serve on gpuserve
unchanged. The flags map to gpuserve's:
- `--port` (gRPC, default 8500) and `--rest_api_port` (REST; TFServing's default 0 turns REST off, here it is
  served on a port the system picks, said in the log). gpuserve's metrics port keeps its own default
  (`GPUSERVE_METRICS_PORT`).
- `--model_name` + `--model_base_path` (a folder of version folders): that one model, version policy latest 1, as
  TFServing serves it; `--model_config_file`: the models that ModelServerConfig lists (gpuserve/tfserving_config.py).
  Either way gpuserve serves a scratch folder holding a models.config (written, or a link to the given file, whose
  relative base paths still resolve from the file's own folder), so HandleReloadConfigRequest works as in TFServing.
- `--file_system_poll_wait_seconds` (default 1, as TFServing: a version folder dropped in is served, one removed is
  unloaded) and `--model_config_file_poll_wait_seconds` (the file re-read): the repository is scanned at the
  shorter of the two that is set (0 for both: at start-up only), with model control kept on.
- `--monitoring_config_file`: a `prometheus_config { enable: true path: ... }` serves gpuserve's metrics on the REST
  port at that path (TFServing's default /monitoring/prometheus/metrics), besides gpuserve's metrics port.
- `--enable_batching` with `--batching_parameters_file`: its `max_batch_size` bounds the batches TensorFlow models'
  requests are gathered into (without it gpuserve's default, 4, batches them anyway; TFServing would not batch).
- Flags TFServing tunes its own runtime with (threads, batching files, session parallelism, GPU memory fraction,
  ...) are taken so the line starts and said in the log; an unknown flag is an error, as in TFServing.
Flags are absl's: `--flag=value`, `--flag value`, and for booleans `--flag`, `--noflag`, `--flag=false`.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

logger = logging.getLogger("gpuserve")

# flag -> default, for the flags that change what gpuserve does
USED = {"port": "8500", "rest_api_port": "0", "model_name": "default", "model_base_path": "",
        "model_config_file": "", "file_system_poll_wait_seconds": "1", "model_config_file_poll_wait_seconds": "0",
        "version": "false", "monitoring_config_file": "", "enable_batching": "false",
        "batching_parameters_file": ""}
# TFServing's flags with no gpuserve meaning: taken and said in the log (booleans among them in BOOLEANS)
NOTED = ("rest_api_num_threads", "rest_api_timeout_in_ms", "rest_api_enable_cors_support",
         "allow_version_labels", "allow_version_labels_for_unavailable_models",
         "enable_per_model_batching_parameters", "platform_config_file",
         "num_load_threads", "num_unload_threads", "max_num_load_retries", "load_retry_interval_micros",
         "flush_filesystem_caches", "tensorflow_session_parallelism", "tensorflow_intra_op_parallelism",
         "tensorflow_inter_op_parallelism", "use_alts_credentials", "ssl_config_file", "grpc_channel_arguments",
         "grpc_max_threads", "per_process_gpu_memory_fraction", "use_tflite_model", "prefer_tflite_model",
         "enable_model_warmup", "num_request_iterations_for_warmup", "saved_model_tags",
         "remove_unused_fields_from_bundle_metagraph", "enable_signature_method_name_check",
         "xla_cpu_compilation_enabled", "enable_profiler", "thread_pool_factory_config_file", "mixed_precision",
         "skip_initialize_tpu", "grpc_socket_path", "model_config_file_poll_wait_seconds_jitter",
         "tensorflow_session_config_file")
BOOLEANS = {"rest_api_enable_cors_support", "enable_batching", "allow_version_labels",
            "allow_version_labels_for_unavailable_models", "enable_per_model_batching_parameters",
            "flush_filesystem_caches", "use_alts_credentials", "use_tflite_model", "prefer_tflite_model",
            "enable_model_warmup", "version", "remove_unused_fields_from_bundle_metagraph",
            "enable_signature_method_name_check", "xla_cpu_compilation_enabled", "enable_profiler",
            "skip_initialize_tpu"}


class FlagError(ValueError):
    pass


def parse(argv: List[str]) -> Tuple[Dict[str, str], Dict[str, str]]:
    """(the used flags with their values, defaults filled in; the noted ones given) of an absl command line."""
    used, noted = dict(USED), {}
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if not token.startswith("-") or token in ("-", "--"):
            raise FlagError(f"unexpected argument '{token}' (TensorFlow Serving takes flags only)")
        name, has_value, value = token.lstrip("-").partition("=")
        if not has_value and name.startswith("no") and name[2:] in BOOLEANS:
            name, has_value, value = name[2:], True, "false"
        if name not in USED and name not in NOTED:
            raise FlagError(f"Unknown command line flag '{name}'")
        if not has_value:
            if name in BOOLEANS:
                value = "true"
            elif i < len(argv):
                value = argv[i]
                i += 1
            else:
                raise FlagError(f"Missing the value of --{name}")
        (used if name in USED else noted)[name] = value
    return used, noted


def _seconds(flags: Dict[str, str], name: str) -> float:
    try:
        return float(flags[name])
    except ValueError:
        raise FlagError(f"Illegal value '{flags[name]}' specified for flag '{name}'") from None


def _port(flags: Dict[str, str], name: str) -> int:
    try:
        port = int(flags[name])
    except ValueError:
        raise FlagError(f"Illegal value '{flags[name]}' specified for flag '{name}'") from None
    if not 0 <= port <= 65535:
        raise FlagError(f"--{name}={port} is not a port")
    return port


def repository(flags: Dict[str, str]) -> Path:
    """A scratch folder holding the models.config the flags describe; removed when the process ends."""
    if not flags["model_config_file"] and not flags["model_base_path"]:  # (a config file wins over a base path)
        raise FlagError("Both server_options.model_base_path and server_options.model_config_file are empty!")
    folder = Path(tempfile.mkdtemp(prefix="gpuserve-tfserving-"))
    atexit.register(shutil.rmtree, folder, True)
    if flags["model_config_file"]:
        given = Path(flags["model_config_file"]).resolve()
        if not given.is_file():
            raise FlagError(f"--model_config_file={flags['model_config_file']}: no such file")
        (folder / "models.config").symlink_to(given)  # relative base paths: from the file's own folder
    else:
        base = Path(flags["model_base_path"]).resolve()
        (folder / "models.config").write_text(
            f'model_config_list {{ config {{ name: "{_quoted(flags["model_name"])}" '
            f'base_path: "{_quoted(str(base))}" model_platform: "tensorflow" }} }}\n')
    return folder


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def start_line(flags: Dict[str, str], noted: Dict[str, str]) -> Tuple[List[str], Dict[str, str]]:
    """(gpuserve start's arguments, the GPUSERVE_* settings to add) for the flags."""
    grpc, rest = _port(flags, "port"), _port(flags, "rest_api_port")
    polls = [s for s in (_seconds(flags, "file_system_poll_wait_seconds"),
                         _seconds(flags, "model_config_file_poll_wait_seconds")) if s > 0]
    env = {"GPUSERVE_REPOSITORY_POLL_SECONDS": f"{min(polls):g}"} if polls else {}
    if flags["monitoring_config_file"]:
        path = prometheus_path(Path(flags["monitoring_config_file"]))
        if path:
            env["GPUSERVE_METRICS_PATH"] = path
    args = ["start", str(repository(flags)), "--grpc-port", str(grpc), "--http-port", str(rest)]
    if flags["enable_batching"] != "false" and flags["batching_parameters_file"]:
        largest = max_batch_size(Path(flags["batching_parameters_file"]))
        if largest is not None:  # the batches a TensorFlow model's requests are gathered into
            args += ["--backend-config", f"tensorflow,default-max-batch-size={largest}"]
    return args, env


def max_batch_size(path: Path) -> Optional[int]:
    """A BatchingParameters file's `max_batch_size { value: N }`; None where it sets none."""
    try:
        found = re.search(r"\bmax_batch_size\s*\{\s*value\s*:\s*(\d+)\s*\}", path.read_text())
    except OSError as exc:
        raise FlagError(f"--batching_parameters_file={path}: {exc}") from None
    return int(found.group(1)) if found else None


def prometheus_path(path: Path) -> Optional[str]:
    """The REST path a MonitoringConfig (`prometheus_config { enable: true path: "..." }`) serves Prometheus metrics
    on (TFServing's default /monitoring/prometheus/metrics), or None when it is off."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise FlagError(f"--monitoring_config_file={path}: {exc}") from None
    if not re.search(r"\benable\s*:\s*true\b", text):
        return None
    found = re.search(r'\bpath\s*:\s*"([^"]*)"', text)
    return found.group(1) if found and found.group(1) else "/monitoring/prometheus/metrics"


def main(argv: Optional[List[str]] = None) -> int:
    from gpuserve import cli

    argv = sys.argv[1:] if argv is None else argv
    try:
        flags, noted = parse(argv)
        if flags["version"] != "false":
            from gpuserve.version import __version__

            print(f"TensorFlow ModelServer: gpuserve {__version__}")
            return 0
        args, env = start_line(flags, noted)
    except FlagError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    os.environ.update(env)
    if flags["rest_api_port"] == "0":
        print("tensorflow_model_server: --rest_api_port is 0 (TensorFlow Serving's REST off); gpuserve serves REST "
              "on a port the system picks", file=sys.stderr)
    for name, value in noted.items():
        print(f"tensorflow_model_server: --{name}={value} taken; gpuserve tunes this itself (README, \"Coming from "
              "TensorFlow Serving\")", file=sys.stderr)
    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
