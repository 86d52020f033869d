"""The `mlserver` command, for MLServer users' scripts and images as they are: `mlserver start FOLDER` serves the
folder with gpuserve (MLServer's settings.json, model-settings.json and MLSERVER_* variables read as MLServer
reads them), `mlserver infer ...` runs MLServer's batch inference client (gpuserve/mlserver/batch_processing.py)
and `mlserver dockerfile` / `mlserver build` write and build an image serving the folder on gpuserve's image
(gpuserve/mlserver/build.py).

Where MLServer itself is installed in the same environment its own command runs instead, unchanged: installing
gpuserve beside MLServer must not change what `mlserver` means there. `init` makes a project from MLServer's
template (a download); it says so and exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

from gpuserve.version import __version__

logger = logging.getLogger("gpuserve")
NOT_HERE = {"init": "makes a project from MLServer's template"}


def _real_mlserver() -> bool:
    """MLServer's own package is importable (not gpuserve's `mlserver` alias)."""
    spec = importlib.util.find_spec("mlserver") if "mlserver" not in sys.modules else None
    origin = Path(spec.origin).resolve() if spec is not None and spec.origin else None
    return origin is not None and Path(__file__).resolve().parents[1] not in origin.parents


def _env(name: str, default):
    value = os.environ.get(f"MLSERVER_INFER_{name}")
    if value is None:
        return default
    if isinstance(default, bool):  # the words MLServer's settings take for true
        from gpuserve.mlserver.settings import _TRUE

        return value.strip().lower() in _TRUE
    return type(default)(value) if default is not None else value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlserver", description="Command-line interface to manage MLServer models "
                                     "(served by gpuserve).")
    parser.add_argument("--version", action="version", version=f"mlserver (gpuserve {__version__})")
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="Start serving a machine learning model with MLServer.")
    start.add_argument("folder")
    infer = commands.add_parser("infer", help="Execute batch inference requests against V2 inference server.")
    infer.add_argument("-u", "--url", default=_env("URL", "localhost:8080"))
    infer.add_argument("-m", "--model-name", default=_env("MODEL_NAME", None))
    infer.add_argument("-i", "--input-data-path", default=_env("INPUT_DATA_PATH", None))
    infer.add_argument("-o", "--output-data-path", default=_env("OUTPUT_DATA_PATH", None))
    infer.add_argument("-w", "--workers", type=int, default=_env("WORKERS", 10))
    infer.add_argument("-r", "--retries", type=int, default=_env("RETRIES", 3))
    infer.add_argument("-s", "--batch-size", type=int, default=_env("BATCH_SIZE", 1))
    infer.add_argument("-b", "--binary-data", action="store_true", default=_env("BINARY_DATA", False))
    infer.add_argument("-v", "--verbose", action="store_true", default=_env("VERBOSE", False))
    infer.add_argument("-vv", "--extra-verbose", action="store_true", default=_env("EXTRA_VERBOSE", False))
    infer.add_argument("-t", "--transport", choices=("rest", "grpc"), default=_env("TRANSPORT", "rest"))
    infer.add_argument("-H", "--request-headers", action="append",
                       default=_env("REQUEST_HEADERS", "").split() if os.environ.get(
                           "MLSERVER_INFER_REQUEST_HEADERS") else [])
    infer.add_argument("--timeout", type=float, default=_env("CONNECTION_TIMEOUT", 60.0))
    infer.add_argument("--batch-interval", type=float, default=_env("BATCH_INTERVAL", 0.0))
    infer.add_argument("--batch-jitter", type=float, default=_env("BATCH_JITTER", 0.0))
    infer.add_argument("--use-ssl", action="store_true", default=_env("USE_SSL", False))
    infer.add_argument("--insecure", action="store_true", default=_env("INSECURE", False))
    build = commands.add_parser("build", help="Build a Docker image serving FOLDER with gpuserve.")
    build.add_argument("folder")
    build.add_argument("-t", "--tag", required=True)
    build.add_argument("--no-cache", action="store_true")
    build.add_argument("--base-image", default="", help="the gpuserve image to start from (gpuserve:cuda)")
    dockerfile = commands.add_parser("dockerfile", help="Generate a Dockerfile serving FOLDER with gpuserve.")
    dockerfile.add_argument("folder")
    dockerfile.add_argument("-i", "--include-dockerignore", action="store_true")
    dockerfile.add_argument("--base-image", default="", help="the gpuserve image to start from (gpuserve:cuda)")
    for name, what in NOT_HERE.items():
        other = commands.add_parser(name, help=f"{what} (not provided by gpuserve)")
        other.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    if argv is None and _real_mlserver():
        from mlserver.cli.main import main as mlserver_main  # MLServer's own command, where it is installed

        return mlserver_main()
    args = _parser().parse_args(argv)
    if args.command in NOT_HERE:
        print(f"mlserver {args.command} {NOT_HERE[args.command]}; gpuserve does not: write model-settings.json "
              "and serve the folder with `mlserver start FOLDER`", file=sys.stderr)
        return 2
    if args.command in ("build", "dockerfile"):
        return _image(args)
    if args.command == "start":
        from gpuserve.cli import main as gpuserve_main

        return gpuserve_main(["start", args.folder])
    return _infer(args, own_logging=argv is None)


def _image(args) -> int:
    import subprocess

    from gpuserve.mlserver.build import build_image, generate_dockerfile, write_dockerfile

    if not os.path.isdir(args.folder):
        print(f"mlserver {args.command}: {args.folder} is not a folder", file=sys.stderr)
        return 2
    dockerfile = generate_dockerfile(args.base_image)
    if args.command == "dockerfile":
        path = write_dockerfile(args.folder, dockerfile, args.include_dockerignore)
        print(f"Dockerfile written to {path}")
        return 0
    try:
        build_image(args.folder, dockerfile, args.tag, args.no_cache)
    except FileNotFoundError:
        print("mlserver build: the docker command is not installed", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"mlserver build: docker build failed ({exc.returncode})", file=sys.stderr)
        return exc.returncode or 1
    print(f"Successfully built custom Docker image with tag {args.tag}")
    return 0


def _infer(args, own_logging: bool = True) -> int:
    """`own_logging`: run as the command, its lines to stderr (called from Python, the caller's logging stays)."""
    from gpuserve.logging_setup import configure_logging
    from gpuserve.mlserver.batch_processing import BadParameter, process_batch
    from gpuserve.settings import ServerSettings

    missing = [flag for flag, value in (("--model-name", args.model_name), ("--input-data-path",
                                                                            args.input_data_path),
                                        ("--output-data-path", args.output_data_path)) if not value]
    if missing:
        print(f"mlserver infer: missing option {', '.join(missing)}", file=sys.stderr)
        return 2
    if own_logging:
        configure_logging(ServerSettings.model_construct(log_level="DEBUG" if args.verbose or args.extra_verbose
                                                         else "INFO", logging_format="text", access_log=False))
        if not args.extra_verbose:  # a line per request from the HTTP client is -vv's
            logging.getLogger("httpx").setLevel(logging.WARNING)
    logger.warning("This feature has been deprecated and will be removed in a future version")
    try:
        asyncio.run(process_batch(
            model_name=args.model_name, url=args.url, workers=args.workers, retries=args.retries,
            batch_size=args.batch_size, input_data_path=args.input_data_path,
            output_data_path=args.output_data_path, binary_data=args.binary_data, transport=args.transport,
            request_headers=args.request_headers or [], timeout=args.timeout, batch_interval=args.batch_interval,
            batch_jitter=args.batch_jitter, use_ssl=args.use_ssl, insecure=args.insecure, verbose=args.verbose,
            extra_verbose=args.extra_verbose))
    except BadParameter as exc:
        print(f"mlserver infer: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
