"""The rest of tritonserver's command line, so a Triton launch line (a Helm chart's, a k8s manifest's) starts
gpuserve unchanged: flags with a gpuserve meaning become settings, the others are taken and said in the log.

Meanings: --http-address / --grpc-address / --metrics-address (each endpoint's bind address), --allow-http /
--allow-grpc (serve that endpoint or not), --reuse-http-port / --reuse-grpc-port (SO_REUSEPORT), --log-file
(the log goes to that file), --log-format (tritonserver's log lines), --log-info / --log-warning / --log-error
(that level's lines, and /v2/logging's flags), --http-max-input-size (the request size limit),
--response-cache-byte-size (the older spelling of --cache-config local,size=N), --model-load-retry-count, gRPC's
keepalive and connection-age flags, which go to grpc.aio as its channel arguments (the native transport sends no
pings, so they select grpc.aio), and the rate limiter's --rate-limit / --rate-limit-resource (engine/rate_limiter.py).
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any, Dict, List

# flag -> grpc.aio channel argument, each in Triton's unit (ms, or a count / 0-1)
GRPC_ARGUMENTS = {
    "--grpc-keepalive-time": "grpc.keepalive_time_ms",
    "--grpc-keepalive-timeout": "grpc.keepalive_timeout_ms",
    "--grpc-keepalive-permit-without-calls": "grpc.keepalive_permit_without_calls",
    "--grpc-http2-max-pings-without-data": "grpc.http2.max_pings_without_data",
    "--grpc-http2-min-recv-ping-interval-without-data": "grpc.http2.min_ping_interval_without_data_ms",
    "--grpc-http2-max-ping-strikes": "grpc.http2.max_ping_strikes",
    "--grpc-max-connection-age": "grpc.max_connection_age_ms",
    "--grpc-max-connection-age-grace": "grpc.max_connection_age_grace_ms",
}

# taken and said in the log: gpuserve has its own way (README) or the feature is another server's
NOTED = ("--buffer-manager-thread-count", "--cache-directory", "--cuda-virtual-address-size", "--enable-peer-access",
         "--grpc-infer-thread-count", "--grpc-max-response-pool-size", "--grpc-infer-response-compression-level",
         "--host-policy", "--repoagent-directory", "--min-supported-compute-capability",
         "--sagemaker-thread-count", "--vertex-ai-thread-count",
         "--allow-cpu-metrics", "--metrics-interval-ms", "--model-load-thread-count")


def boolean(text: str) -> bool:
    """A tritonserver flag's boolean (1/0, true/false, yes/no, on/off)."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def log_format(text: str) -> str:
    if text not in ("default", "ISO8601"):  # tritonserver's spelling, case and all
        raise argparse.ArgumentTypeError(f"invalid argument for --log-format, got '{text}': default or ISO8601")
    return text


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_flags(group: argparse._ArgumentGroup, parser: argparse.ArgumentParser) -> None:
    """Add each flag the parser does not have yet (another part of the CLI may give one its own meaning)."""

    def add(flag: str, **options) -> bool:
        if flag in parser._option_string_actions or flag in group._option_string_actions:
            return False
        group.add_argument(flag, dest=_dest(flag), default=None, **options)
        return True

    for flag, what, default in (("--http-address", "HTTP", "--host"), ("--grpc-address", "gRPC", "--host"),
                                ("--metrics-address", "metrics", "--http-address, as Triton")):
        add(flag, metavar="ADDRESS", help=f"the address the {what} endpoint binds (default: {default})")
    for flag, what in (("--allow-http", "HTTP"), ("--allow-grpc", "gRPC")):
        add(flag, type=boolean, metavar="BOOL", help=f"false: no {what} endpoint")
    for flag in ("--reuse-http-port", "--reuse-grpc-port"):
        add(flag, type=boolean, metavar="BOOL", help="several servers may listen on this endpoint's port (SO_REUSEPORT); the "
            "other endpoints' ports stay their own")
    add("--log-file", metavar="FILE", help="write the log to FILE instead of standard error")
    for flag in ("--log-info", "--log-warning", "--log-error"):
        add(flag, type=boolean, metavar="BOOL", help="false: no log lines of that level (verbose lines still show)")
    add("--log-format", type=log_format, metavar="default|ISO8601",
        help="write tritonserver's log lines in this layout (gpuserve's own without the flag)")
    add("--http-max-input-size", type=int, metavar="BYTES", help="the largest request body taken")
    add("--response-cache-byte-size", type=int, metavar="BYTES", help="as --cache-config local,size=BYTES")
    add("--model-load-retry-count", type=int, metavar="N", help="load a model that failed again, up to N times")
    add("--model-load-gpu-limit", action="append", metavar="DEVICE:FRACTION",
        help="checked as Triton checks it; gpuserve loads on a GPU whatever its memory use (said in the log)")
    add("--exit-timeout-secs", type=int, metavar="SECONDS", help="how long a shutdown waits for connections, "
        "in-flight inferences and unloads (setting graceful_shutdown_seconds; default 30)")
    for flag, argument in GRPC_ARGUMENTS.items():
        add(flag, type=int, metavar="N", help=f"grpc.aio's {argument} (Triton's unit); any of these flags serves "
            "gRPC with grpc.aio, which sends and polices the pings")
    add("--rate-limit", metavar="MODE", help="execution_count: Triton's rate limiter (instances run while the "
        "resources their instance_group's rate_limiter names are free); off (default)")
    add("--rate-limit-resource", action="append", metavar="NAME:COUNT[:DEVICE]",
        help="the count of a rate limiter resource (repeat; default: the most any instance needs)")
    add("--allow-sagemaker", type=boolean, metavar="BOOL", help="serve SageMaker's /ping, /invocations and /models "
        "on --sagemaker-port (server/sagemaker.py)")
    add("--sagemaker-port", type=int, metavar="PORT", help="the SageMaker endpoint's port (default 8080)")
    add("--sagemaker-safe-port-range", metavar="LOW-HIGH", help="the ports every other endpoint must listen on")
    add("--allow-vertex-ai", type=boolean, metavar="BOOL", help="serve Vertex AI's AIP_HEALTH_ROUTE and "
        "AIP_PREDICT_ROUTE on --vertex-ai-port (default: true where AIP_MODE=PREDICTION)")
    add("--vertex-ai-port", type=int, metavar="PORT", help="the Vertex AI endpoint's port (default AIP_HTTP_PORT, "
        "else 8080)")
    add("--vertex-ai-default-model", metavar="NAME", help="the model AIP_PREDICT_ROUTE infers (default: the "
        "repository's only model)")
    noted = [flag for flag in NOTED if add(flag, metavar="VALUE", help="taken so tritonserver's launch lines start; "
                                           "no effect here (said in the log)")]
    parser.set_defaults(triton_noted=tuple(noted))


# flags whose value is a setting's as given: flag -> ServerSettings field
AS_GIVEN = {"--http-address": "http_host", "--grpc-address": "grpc_host", "--metrics-address": "metrics_host",
            "--log-file": "log_file", "--log-format": "logging_format", "--log-info": "log_info",
            "--log-warning": "log_warning", "--log-error": "log_error", "--http-max-input-size": "max_request_bytes",
            "--response-cache-byte-size": "response_cache_bytes", "--model-load-retry-count": "model_load_retry_count",
            "--exit-timeout-secs": "graceful_shutdown_seconds", "--allow-http": "enable_http",
            "--allow-grpc": "enable_grpc", "--rate-limit": "rate_limit", "--reuse-http-port": "reuse_http_port",
            "--reuse-grpc-port": "reuse_grpc_port"}
CLOUD_AS_GIVEN = {"--allow-sagemaker": "sagemaker", "--sagemaker-port": "sagemaker_port",
                  "--sagemaker-safe-port-range": "sagemaker_safe_port_range", "--allow-vertex-ai": "vertex_ai",
                  "--vertex-ai-port": "vertex_ai_port", "--vertex-ai-default-model": "vertex_ai_default_model"}


def _value(args: argparse.Namespace, flag: str) -> Any:
    return getattr(args, _dest(flag), None)


def _given(args: argparse.Namespace, fields: Dict[str, str]) -> Dict[str, Any]:
    """{field: value} for each flag of `fields` given on the command line."""
    return {key: _value(args, flag) for flag, key in fields.items() if _value(args, flag) is not None}


def settings_from(args: argparse.Namespace) -> Dict[str, Any]:
    """ServerSettings overrides for the flags given (none for those not given)."""
    value = lambda flag: _value(args, flag)  # noqa: E731
    out = _given(args, AS_GIVEN)
    if out.get("max_request_bytes", 1) <= 0:  # later tritonservers stop here; a 0 limit would refuse every body
        from gpuserve.errors import GpuserveError
        raise GpuserveError("Error: --http-max-input-size must be greater than 0.")
    if "http_host" in out and "metrics_host" not in out and out.get("enable_http") is not False:
        out["metrics_host"] = out["http_host"]  # as tritonserver: metrics listen where HTTP does
    if value("--rate-limit-resource"):
        out["rate_limit_resources"] = list(value("--rate-limit-resource"))
    check_gpu_limits(value("--model-load-gpu-limit") or ())
    out.update(cloud_settings(args))
    arguments = _given(args, GRPC_ARGUMENTS)
    if arguments:
        out["grpc_arguments"] = arguments
    return out


def joined(argv: List[str]) -> List[str]:
    """`--model-load-gpu-limit -1:0.6` as one `--model-load-gpu-limit=-1:0.6`: tritonserver takes a value that
    starts with '-' after this flag (its qa does), where argparse would read it as another flag."""
    out: List[str] = []
    for token in argv:
        if out and out[-1] == "--model-load-gpu-limit" and token.startswith("-"):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def check_gpu_limits(limits) -> None:
    """--model-load-gpu-limit DEVICE:FRACTION values refused in Triton's words (it stops the start on them);
    a good one is taken and said in the log, as gpuserve does not stop loads on a GPU's memory use."""
    from gpuserve.errors import GpuserveError

    for limit in limits:
        device, colon, fraction = limit.partition(":")
        try:
            device_id, share = int(device), float(fraction)
        except ValueError:
            raise GpuserveError(f'Bad option: "--model-load-gpu-limit".\nFailed to parse {limit} as '
                                "<int>:<float>") from None
        if not colon:
            raise GpuserveError(f'Bad option: "--model-load-gpu-limit".\nFailed to parse {limit} as <int>:<float>')
        why = (f"expects device ID >= 0, got {device_id}" if device_id < 0 else
               f"expects limit fraction to be in range [0.0, 1.0], got {share:f}" if not 0.0 <= share <= 1.0 else None)
        if why:
            raise GpuserveError(f"Failed to build Triton option: setting model load GPU limit: {why}")
        logging.getLogger("gpuserve").warning("--model-load-gpu-limit=%s is taken; gpuserve does not stop loads "
                                              "on a GPU's memory use", limit)


def cloud_settings(args: argparse.Namespace) -> Dict[str, Any]:
    """The SageMaker and Vertex AI endpoints' settings. As tritonserver: AIP_MODE=PREDICTION (a Vertex AI
    container) serves Vertex AI in place of HTTP and gRPC unless flags say otherwise, on AIP_HTTP_PORT."""
    value = lambda flag: _value(args, flag)  # noqa: E731
    out = _given(args, CLOUD_AS_GIVEN)
    if os.environ.get("AIP_MODE") == "PREDICTION":
        out.setdefault("vertex_ai", True)
        for flag, key in (("--allow-http", "enable_http"), ("--allow-grpc", "enable_grpc")):
            if value(flag) is None:
                out[key] = False
    if value("--vertex-ai-port") is None and os.environ.get("AIP_HTTP_PORT"):
        try:
            out["vertex_ai_port"] = int(os.environ["AIP_HTTP_PORT"])
        except ValueError:
            from gpuserve.errors import GpuserveError

            raise GpuserveError(f"AIP_HTTP_PORT must be a port number, got '{os.environ['AIP_HTTP_PORT']}'") from None
    return out


def note_flags(args: argparse.Namespace) -> None:
    log = logging.getLogger("gpuserve")
    for flag in getattr(args, "triton_noted", ()):
        given = getattr(args, _dest(flag), None)
        if given is not None:
            log.warning("%s=%s is a tritonserver flag with no gpuserve meaning; ignored", flag, given)
    if any(getattr(args, _dest(flag), None) is not None for flag in GRPC_ARGUMENTS):
        log.info("gRPC keepalive / connection-age flags given: gRPC is served by grpc.aio, which applies them")

