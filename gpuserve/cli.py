"""`gpuserve start FOLDER --http-port P --grpc-port G --metrics-port M`: the launch line users script
against. Flags win over `GPUSERVE_*` env, which wins over `settings.json` in FOLDER."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from gpuserve import triton_flags
from gpuserve.errors import GpuserveError
from gpuserve.version import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpuserve", description="GPU-first inference server "
                                     "(KServe V1, Open Inference Protocol V2 over REST and gRPC).")
    parser.add_argument("--version", action="version", version=f"gpuserve {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="run a KServe or MLServer Python script as it is",
                              description="Run SCRIPT as `python SCRIPT ARGS...` would, with `import kserve` and "
                              "`import mlserver` meaning gpuserve's modules where those packages are not installed: "
                              "a KServe script (`from kserve import Model, ModelServer`) serves on gpuserve "
                              "unchanged, its KServe flags (--http_port, ...) as it reads them.")
    run.add_argument("script", help="the Python script")
    run.add_argument("args", nargs=argparse.REMAINDER, help="the script's own arguments")
    start = commands.add_parser("start", help="serve the models in a repository folder",
                                description="Serve every model found in FOLDER (model-settings.json "
                                "folders, bare model.onnx files, numbered version folders).")
    start.add_argument("folder", nargs="?", default=None,
                       help="model repository folder (default: GPUSERVE_MODEL_REPOSITORY_ROOT or .)")
    start.add_argument("--model-repository", "--model-store", dest="model_repository", action="append", default=None,
                       metavar="FOLDER", help="as Triton: the model repository folder, in place of FOLDER (repeat: "
                       "models from every folder; a name in two folders is served from neither)")
    start.add_argument("--http-port", type=int, default=None, help="REST port (default 8080, env GPUSERVE_HTTP_PORT)")
    start.add_argument("--grpc-port", type=int, default=None, help="gRPC port (default 8081, env GPUSERVE_GRPC_PORT)")
    start.add_argument("--metrics-port", type=int, default=None,
                       help="Prometheus port (default 8082, env GPUSERVE_METRICS_PORT)")
    start.add_argument("--host", default=None, help="address to listen on (default 0.0.0.0, env GPUSERVE_HOST)")
    start.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (env GPUSERVE_DEVICE)")
    start.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING, ... (env GPUSERVE_LOG_LEVEL)")
    start.add_argument("--workers", type=int, default=None,
                       help="serving processes sharing the ports (default 1, env GPUSERVE_WORKERS)")
    start.add_argument("--cache-config", action="append", default=None, metavar="local,size=BYTES",
                       help="as Triton: the response cache's size for models that enable it (default 128 MiB, "
                       "env GPUSERVE_RESPONSE_CACHE_BYTES; size=0 turns it off)")
    start.add_argument("--enable-model-api", dest="enable_model_api", action="store_true", default=None,
                       help="TorchServe's flag: its management API registers and unregisters archives "
                            "(setting torchserve_model_api; KServe's config.properties enable_model_api=true)")
    control = start.add_argument_group("model control, as Triton's flags (default: every model loads at "
                                       "start-up and the repository extension may load and unload)")
    control.add_argument("--model-control-mode", type=str.lower, choices=("none", "explicit", "poll"), default=None,
                         help="none: every model loads at start-up, load/unload requests are refused; explicit: "
                         "only --load-model models load at start-up; poll: as none, and the folder is scanned "
                         "for added, changed and removed models")
    control.add_argument("--load-model", action="append", default=None, metavar="NAME",
                         help="with --model-control-mode explicit: a model to load at start-up (repeat; '*': all)")
    control.add_argument("--repository-poll-secs", type=float, default=None, metavar="SECONDS",
                         help="with --model-control-mode poll: seconds between scans (default 15)")
    triton = start.add_argument_group("Triton flags taken so a tritonserver launch line still starts (each one "
                                      "given is said in the log)")
    triton.add_argument("--log-verbose", type=_verbosity, default=None, metavar="N", help="N > 0: --log-level DEBUG")
    triton.add_argument("--strict-readiness", type=_boolean, default=None, metavar="BOOL",
                        help="ready only while every model is (setting strict_readiness)")
    triton.add_argument("--exit-on-error", type=_boolean, default=True, metavar="BOOL",
                        help="false: a repository folder that is missing leaves the server running, not live "
                        "(as Triton's failed initialization), and a model that fails at start-up of a "
                        "--model-repository launch line leaves the others serving, instead of exiting")
    triton.add_argument("--allow-client-shm", type=_boolean, default=None, metavar="BOOL",
                        help="false: clients may not register shared memory (setting allow_client_shm; default true)")
    triton.add_argument("--trace-config", action="append", default=None, metavar="[triton,]KEY=VALUE",
                        help="the trace settings clients read at start-up (file, level, rate, count, log-frequency); "
                             "mode=opentelemetry exports Triton's spans to opentelemetry,url=...")
    triton.add_argument("--metrics-config", action="append", default=None, metavar="SETTING=VALUE",
                        help="model metrics: counter_latencies=false drops the latency counters, summary_latencies=true "
                        "adds latency summaries, summary_quantiles=Q:ERROR,... their quantiles (repeat)")
    for flag, what in (("--allow-metrics", "no metrics endpoint"), ("--allow-gpu-metrics", "no nv_gpu_* metrics"),
                       ("--allow-cpu-metrics", "no nv_cpu_* metrics")):
        triton.add_argument(flag, type=_boolean, default=None, metavar="BOOL", help=f"false: {what}")
    triton.add_argument("--metrics-interval-ms", type=float, default=None, metavar="MS",
                        help="how often GPU metrics are sampled (setting nvml_interval_seconds; default 5000)")
    triton.add_argument("--model-namespacing", type=_boolean, default=None, metavar="BOOL",
                        help="false, Triton's default, is gpuserve's way: a model name is served once")
    for flag, what in (("--http-restricted-api", "API"), ("--grpc-restricted-protocol", "PROTOCOL")):
        triton.add_argument(flag, action="append", default=None, metavar=f"{what}[,{what}...]:KEY=VALUE",
                            help="those endpoint groups answer only requests with header KEY: VALUE (repeat)")
    triton.add_argument("--grpc-use-ssl", type=_boolean, default=None, metavar="BOOL",
                        help="serve gRPC over TLS (--grpc-server-cert, --grpc-server-key)")
    triton.add_argument("--grpc-use-ssl-mutual", type=_boolean, default=None, metavar="BOOL",
                        help="serve gRPC over TLS and require client certificates signed by --grpc-root-cert")
    for flag in ("--grpc-server-cert", "--grpc-server-key", "--grpc-root-cert"):
        triton.add_argument(flag, default=None, metavar="FILE", help="a PEM file for gRPC TLS")
    triton.add_argument("--disable-auto-complete-config", action="store_true", default=None,
                        help="check config.pbtxt tensors as written, before any model file completes them")
    triton.add_argument("--strict-model-config", type=_boolean, default=None, metavar="BOOL",
                        help="Triton's deprecated spelling of --disable-auto-complete-config")
    triton.add_argument("--model-config-name", default=None, metavar="NAME",
                        help="each model reads configs/NAME.pbtxt in its folder where there is one, else config.pbtxt")
    for flag in ("--http-header-forward-pattern", "--grpc-header-forward-pattern"):
        triton.add_argument(flag, default=None, metavar="REGEX", help="request headers whose name this finds "
                            "(case-insensitive unless it starts with (?-i)) reach models as request parameters")
    for flag, key in TRACE_FLAGS.items():  # Triton's older spellings of --trace-config KEY=VALUE
        triton.add_argument(flag, action="append", default=None, metavar="VALUE",
                            help=f"Triton's deprecated spelling of --trace-config {key}=VALUE")
    triton.add_argument("--backend-config", action="append", default=None, metavar="[BACKEND,]SETTING=VALUE",
                        help="Triton's backend settings (repeat); default-max-batch-size is the max_batch_size "
                        "an ONNX model without one in its config is completed with (gpuserve/backend_config.py)")
    for flag in TRITON_NOTED:
        triton.add_argument(flag, default=None, metavar="VALUE",
                            help="taken so tritonserver's launch lines start; no effect here (said in the log)")
    triton_flags.add_flags(triton, parser)  # the rest of tritonserver's line, after every flag defined here
    return parser


# tritonserver flags with no gpuserve meaning (their behaviour is gpuserve's own, README): taken and noted.
TRITON_NOTED = ("--backend-directory",
                "--pinned-memory-pool-byte-size", "--cuda-memory-pool-byte-size",
                "--http-thread-count", "--grpc-infer-allocation-pool-size",
                "--id")


TRACE_FLAGS = {"--trace-file": "file", "--trace-level": "level", "--trace-rate": "rate", "--trace-count": "count",
               "--trace-log-frequency": "log-frequency"}
# what tritonserver prints for each use of them, which scripts that migrate grep for
TRACE_IN_PLACE = {"--trace-file": "triton,file=<filepath>", "--trace-level": "level=<OFF|TIMESTAMPS|TENSORS>",
                  "--trace-rate": "rate=<rate value>", "--trace-count": "count=<count value>",
                  "--trace-log-frequency": "triton,log-frequency=<log frequency value>"}
# OpenTelemetry's batch span processor settings: --trace-config opentelemetry,KEY=N, else the environment
OTEL_BSP = {"bsp_max_queue_size": "OTEL_BSP_MAX_QUEUE_SIZE", "bsp_schedule_delay": "OTEL_BSP_SCHEDULE_DELAY",
            "bsp_max_export_batch_size": "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"}


def metrics_config(args: argparse.Namespace) -> Optional[dict]:
    """--metrics-config SETTING=VALUE flags as a dict (the last of a setting wins); a malformed one stops the
    start in Triton's words."""
    settings = {}
    for arg in args.metrics_config or ():
        name, equals, value = arg.partition("=")
        if not equals or not name or not value or "," in name:
            raise GpuserveError(f"--metrics-config option format is <setting>=<value>. Got {arg}")
        settings[name] = value
    return settings or None


def metrics_endpoint(args: argparse.Namespace) -> dict:
    """Settings for Triton's --allow-metrics, --allow-gpu-metrics, --allow-cpu-metrics (the last two only
    where metrics are served, as Triton) and --metrics-interval-ms."""
    out = {}
    if args.allow_metrics is not None:
        out["enable_metrics_server"] = args.allow_metrics
    for flag, key in (("allow_gpu_metrics", "gpu_metrics"), ("allow_cpu_metrics", "cpu_metrics")):
        if getattr(args, flag) is not None:
            out[key] = getattr(args, flag) and args.allow_metrics is not False
    if args.metrics_interval_ms is not None:
        if args.metrics_interval_ms <= 0:
            raise GpuserveError(f"--metrics-interval-ms must be more than 0, got {args.metrics_interval_ms:g}")
        out["nvml_interval_seconds"] = args.metrics_interval_ms / 1000.0
    return out


def trace_config(args: argparse.Namespace) -> Optional[List[str]]:
    """--trace-config values, Triton's older --trace-KEY flags included; checked here so a bad one is a
    start-up error (as in Triton), None when none was given."""
    from gpuserve.errors import InvalidInput
    from gpuserve.runtime_settings import trace_start_settings

    configs = list(args.trace_config or [])
    for flag, key in TRACE_FLAGS.items():
        for value in getattr(args, flag.lstrip("-").replace("-", "_")) or ():
            print(f"Warning: '{flag}' has been deprecated and will be removed in future releases. Please use "
                  f"'--trace-config {TRACE_IN_PLACE[flag]}' instead.", file=sys.stderr, flush=True)
            configs.append(f"{key}={value}")
    opentelemetry_checked(configs)
    try:
        trace_start_settings(configs)
    except InvalidInput as exc:
        raise GpuserveError(str(exc)) from None
    return configs or None


def opentelemetry_checked(configs: List[str]) -> None:
    """With --trace-config mode=opentelemetry, the batch span processor's settings must be counts, as
    tritonserver checks them at start-up (in its words)."""
    if not any(c.replace(" ", "").rpartition(",")[2] == "mode=opentelemetry" for c in configs):
        return
    given = {}
    for config in configs:
        mode, _, pair = config.rpartition(",")
        key, _, value = pair.partition("=")
        if mode.strip() == "opentelemetry" and key.strip() in OTEL_BSP:
            given[key.strip()] = value
    for key, variable in OTEL_BSP.items():
        value, where = (given[key], f"--trace-config opentelemetry,{key}") if key in given else \
            (os.environ.get(variable), variable)
        if value is not None and not (value.strip().isdigit() and int(value) < 2**32):
            raise GpuserveError(f'Bad option: "{where}".\nInvalid argument: {value}')


def log_level_of(args: argparse.Namespace) -> Optional[str]:
    """--log-level, else DEBUG for Triton's --log-verbose N > 0."""
    return args.log_level or ("DEBUG" if (args.log_verbose or 0) > 0 else None)


_boolean = triton_flags.boolean


def _verbosity(text: str) -> int:
    """--log-verbose's level; true / false as 1 / 0, as tritonserver takes them (SageMaker's serve script
    passes --log-verbose=true)."""
    try:
        return int(text)
    except ValueError:
        return int(_boolean(text))


def note_triton_flags(args: argparse.Namespace) -> None:
    log = logging.getLogger("gpuserve")
    for flag in TRITON_NOTED:
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if value is not None:
            log.warning("%s=%s is a tritonserver flag with no gpuserve meaning; ignored", flag, value)
    if getattr(args, "model_namespacing", None):
        from gpuserve.repository import DiskRepository

        DiskRepository.namespacing = True  # each repository folder a namespace (gpuserve/namespacing.py)
        log.warning("--model-namespacing=true: a name several repository folders hold is served from each, "
                    "reached by plain name from its own folder's models only; metrics carry no namespace label")


def auto_complete(args: argparse.Namespace) -> Optional[bool]:
    """Whether configs are auto-completed: off with --disable-auto-complete-config or --strict-model-config=true,
    with Triton's warnings (on stderr, as Triton prints them) for the deprecated flag."""
    strict = args.strict_model_config
    if strict is not None:
        print("Warning: '--strict-model-config' has been deprecated! Please use "
              "'--disable-auto-complete-config' instead.", file=sys.stderr, flush=True)
    if args.disable_auto_complete_config:
        if strict is False:
            print("Warning: Overriding deprecated '--strict-model-config' from False to True in favor of "
                  "'--disable-auto-complete-config'!", file=sys.stderr, flush=True)
        return False
    return None if strict is None else not strict


def model_config_name(args: argparse.Namespace) -> Optional[str]:
    """--model-config-name, refused when empty, as Triton refuses it."""
    name = args.model_config_name
    if name is not None and not name:
        raise GpuserveError("Error: empty argument for --model-config-name")
    return name


def model_control(args: argparse.Namespace) -> dict:
    """Settings for Triton's model control flags (none where no flag was given)."""
    mode = getattr(args, "model_control_mode", None)
    log = logging.getLogger("gpuserve")
    if args.load_model and mode != "explicit":
        log.warning("--load-model takes effect only with --model-control-mode explicit (as Triton); ignored")
    if args.repository_poll_secs is not None and mode != "poll":
        log.warning("--repository-poll-secs takes effect only with --model-control-mode poll (as Triton); ignored")
    if mode == "none":
        return {"model_control_enabled": False}
    if mode == "explicit":
        if "*" in (args.load_model or ()) and len(args.load_model) > 1:  # Triton's words
            raise GpuserveError("Wildcard model name '*' must be the ONLY startup model if specified at all.")
        return {"model_control_enabled": True, "load_models_at_startup": False, "startup_models": args.load_model or []}
    if mode == "poll":
        seconds = 15.0 if args.repository_poll_secs is None else args.repository_poll_secs
        if seconds < 0:  # 0, as in Triton: the repository is read at start-up only (and the control API refused)
            raise GpuserveError(f"--repository-poll-secs must be 0 or more, got {args.repository_poll_secs:g}")
        return {"model_control_enabled": False, "repository_poll_seconds": seconds}
    return {}


def start(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gpuserve.model_repository import ModelRepository
    from gpuserve.repository import DiskRepository
    from gpuserve.settings import ServerSettings

    folders = repository_folders(args)
    folder = folders[0]
    missing = [f for f in folders if not Path(f).is_dir()]
    failure = f"model repository folder '{missing[0]}' does not exist or is not a folder" if missing else None
    if failure and args.exit_on_error:
        raise GpuserveError(failure)
    from gpuserve import backend_config

    try:
        backend_config.configure(backend_config.parse(args.backend_config), auto_complete(args) is not False)
    except ValueError as exc:
        raise GpuserveError(str(exc)) from None
    from gpuserve.response_cache import parse_cache_config

    more = triton_flags.settings_from(args)
    try:  # --cache-config, or Triton's older --response-cache-byte-size
        cache_bytes = parse_cache_config(args.cache_config, more.pop("response_cache_bytes", None))
    except ValueError as exc:
        raise GpuserveError(str(exc)) from None
    log_level = log_level_of(args)
    ports = enabled_ports(args, more)
    settings = ServerSettings.load(folder, **ports, host=args.host, device=args.device,
                                   log_level=log_level, strict_readiness=strict_readiness(args), workers=args.workers,
                                   response_cache_bytes=cache_bytes, trace_config=trace_config(args),
                                   allow_client_shm=args.allow_client_shm, metrics_config=metrics_config(args),
                                   **metrics_endpoint(args),
                                   http_restricted_api=args.http_restricted_api,
                                   grpc_restricted_protocol=args.grpc_restricted_protocol,
                                   grpc_use_ssl=args.grpc_use_ssl, grpc_use_ssl_mutual=args.grpc_use_ssl_mutual,
                                   grpc_server_cert=args.grpc_server_cert, grpc_server_key=args.grpc_server_key,
                                   grpc_root_cert=args.grpc_root_cert,
                                   http_header_forward_pattern=args.http_header_forward_pattern,
                                   grpc_header_forward_pattern=args.grpc_header_forward_pattern,
                                   auto_complete_config=auto_complete(args),
                                   model_config_name=model_config_name(args), **model_control(args),
                                   torchserve_model_api=args.enable_model_api, **more)
    if args.model_repository:
        triton_default_ports(settings)
        from gpuserve.server.cloud import check_ports

        check_ports(settings, metrics_on_http=False)  # before any bind, in tritonserver's words
    from gpuserve.logging_setup import configure_logging

    configure_logging(settings)
    # The flags are read; model code sees none, as in Triton's Python stub (a model.py calling unittest.main()
    # or argparse would otherwise parse the server's own flags and exit)
    sys.argv[1:] = []
    note_triton_flags(args)
    triton_flags.note_flags(args)
    _stacks_on_sigusr1()
    if settings.workers > 1:
        if len(folders) > 1:
            raise GpuserveError("workers > 1 serve one model repository folder; more than one was given")
        from gpuserve.server.workers import serve_workers

        return serve_workers(str(folder), settings)
    from gpuserve.server.model_server import ModelServer

    if failure:  # --exit-on-error=false: as Triton, serving no models, not live, so probes see it failed
        logging.getLogger("gpuserve").error("%s; serving no models and not live (--exit-on-error=false)", failure)
        server = ModelServer(settings=settings, registered_models=ModelRepository())
        server.dataplane.init_failure = failure
        server.start()
        return 0
    disk = DiskRepository.for_server(folder, settings, folders[1:])
    selection = settings.startup_selection()
    missing = sorted(set(selection or ()) - set(disk.catalog()))
    if missing and args.exit_on_error:  # as Triton: a startup model that is nowhere stops the start
        raise GpuserveError(f"failed to load '{missing[0]}': model not found in any model repository "
                            "(--exit-on-error=false serves the others)")
    registry = disk.populate(ModelRepository(), selection)
    server = ModelServer(settings=settings, registered_models=registry)
    if args.model_repository:  # a tritonserver launch line: its start-up failure and its stop
        server.exit_on_load_failure = bool(args.exit_on_error)
        server.serve_open_connections = True
    server.start()
    if server.exit_timeout_expired:  # as tritonserver: what still runs is cut off, and the exit status says so
        logging.shutdown()
        os._exit(1)
    return 0


TRITON_PORTS = {"http_port": 8000, "grpc_port": 8001, "metrics_port": 8002}


def enabled_ports(args: argparse.Namespace, more: dict) -> dict:
    """The --http-port, --grpc-port and --metrics-port given, less those of an endpoint turned off
    (--allow-http 0 ...): tritonserver never reads those, so a script's placeholder (-47 in its qa) starts."""
    off = {"http_port": more.get("enable_http") is False, "grpc_port": more.get("enable_grpc") is False,
           "metrics_port": args.allow_metrics is False}
    return {field: None if off[field] else getattr(args, field) for field in TRITON_PORTS}


def triton_default_ports(settings) -> None:
    """On a tritonserver launch line, a port nobody set (flag, GPUSERVE_* variable, settings.json) is
    tritonserver's, where that line's clients and probes look: 8000 HTTP, 8001 gRPC, 8002 metrics."""
    for field, port in TRITON_PORTS.items():
        if field not in settings.model_fields_set:
            setattr(settings, field, port)


def strict_readiness(args: argparse.Namespace) -> Optional[bool]:
    """--strict-readiness; unset on a tritonserver launch line (--model-repository), Triton's default (true: not
    ready while a model failed to load); unset otherwise, the setting's (gpuserve's default false)."""
    if args.strict_readiness is None and args.model_repository:
        return True
    return args.strict_readiness


def repository_folders(args: argparse.Namespace) -> List[str]:
    """FOLDER, or Triton's --model-repository (repeatable), or AIP_STORAGE_URI, or GPUSERVE_MODEL_REPOSITORY_ROOT,
    or the current folder; FOLDER and --model-repository together must name the same one."""
    given = args.model_repository or []
    if args.folder is not None and given and [os.path.abspath(args.folder)] != [os.path.abspath(g) for g in given]:
        raise GpuserveError(f"two model repositories given: '{args.folder}' and --model-repository "
                            f"'{', '.join(given)}'; give the folder once")
    if args.folder or given:
        return [args.folder] if args.folder else given
    # as tritonserver in a Vertex AI container: the repository Vertex AI copied the model to
    return [os.environ.get("AIP_STORAGE_URI") or os.environ.get("GPUSERVE_MODEL_REPOSITORY_ROOT", ".")]


def _stacks_on_sigusr1() -> None:
    """`kill -USR1 PID` prints every thread's stack to stderr: how a stuck request is found in a running
    server without a debugger (the lent GPU machines have no gdb or py-spy)."""
    import faulthandler
    import signal

    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=True)


def run_script(script: str, args: List[str]) -> int:
    """`gpuserve run SCRIPT ARGS...`: the script as its own __main__, `kserve` and `mlserver` aliased."""
    import runpy

    from gpuserve import import_alias
    from gpuserve.mlserver import alias as mlserver_alias

    if not os.path.isfile(script):
        print(f"gpuserve: error: no script {script}", file=sys.stderr)
        return 2
    import_alias.install("kserve", "gpuserve")
    mlserver_alias.install()  # `mlserver` and the runtime packages gpuserve serves (mlserver_huggingface, mlserver_alibi_detect)
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # as `python SCRIPT` puts its folder first
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["run"] and len(given) > 1 and not given[1].startswith("-"):
        return run_script(given[1], given[2:])  # the script's arguments are its own, unparsed here
    parser = _parser()
    args = parser.parse_args(triton_flags.joined(given))
    if args.command != "start":
        parser.print_help()
        return 2
    try:
        return start(args)
    except GpuserveError as exc:
        logging.getLogger("gpuserve").debug("start-up failed", exc_info=True)
        print(f"gpuserve: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def tritonserver_main(argv: Optional[List[str]] = None) -> int:
    """The `tritonserver` command: a tritonserver launch line (`tritonserver --model-repository=/models ...`)
    runs as `gpuserve start` with the same flags, so manifests and scripts keep their command."""
    return main(["start", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
