"""The `torchserve` command: TorchServe's launch line runs gpuserve on TorchServe's model store and config.

KServe's TorchServe runtime runs `torchserve --start --model-store=/mnt/models/model-store
--ts-config=/mnt/models/config/config.properties`; TorchServe's docs and images run `torchserve --start
--model-store model_store --models NAME=NAME.mar [--ts-config FILE] [--ncs] [--disable-token-auth]`. With this
command on the PATH those lines serve on gpuserve, through the same layout gpuserve serves KServe's TorchServe
folders from (gpuserve/torchserve/store.py): a scratch folder holds `config/config.properties` (the given file's
lines, `model_store=` set to `--model-store` and `load_models=` to `--models`, as those flags override them in
TorchServe) and `model-store`, a link to the store.

As TorchServe's own command: `--start` (or no action flag) starts the server and returns at once, the server
running on (its pid in TorchServe's pid file, `.model_server.pid` in the temp folder); `--foreground` waits for it;
`--stop` stops it ("TorchServe has stopped." / "TorchServe is not currently running."); the running server's
output goes to `logs/gpuserve.log` (TorchServe's log folder, `LOG_LOCATION`); a second start while one
runs exits 1; `TS_CONFIG_FILE` stands over `--ts-config`; a missing store or config file exits 1 in TorchServe's
words. Ports come from the config file: `inference_address` (default http://127.0.0.1:8080) is gpuserve's HTTP
port and address, where TorchServe's management API is served too (TorchServe's `management_address` has no
port of its own here: said in the log), `metrics_address` (8082) the metrics port, `grpc_inference_port` (7070) the
gRPC port (both gRPC services on it). `--enable-model-api` turns on the management API's writes, as in
TorchServe; `--disable-token-auth` is taken (gpuserve asks no tokens) and said in the log.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional
from urllib.parse import urlsplit

PID_FILE = Path(tempfile.gettempdir()) / ".model_server.pid"  # TorchServe's own


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchserve", description="TorchServe's command line, served by gpuserve")
    parser.add_argument("--version", action="store_true")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--start", action="store_true", help="start the server (the default)")
    action.add_argument("--stop", action="store_true", help="stop the running server")
    parser.add_argument("--ts-config", dest="ts_config", help="TorchServe's config.properties")
    parser.add_argument("--model-store", dest="model_store", help="the folder of .mar archives")
    parser.add_argument("--models", nargs="+", help="models to load at start-up: NAME=FILE.mar, FILE.mar or all")
    parser.add_argument("--foreground", action="store_true", help="wait for the server instead of returning")
    parser.add_argument("--no-config-snapshots", "--ncs", dest="no_config_snapshots", action="store_true",
                        help="taken: gpuserve writes no config snapshots")
    parser.add_argument("--disable-token-auth", "--dt", dest="token_auth", action="store_true",
                        help="taken: gpuserve asks no tokens")
    parser.add_argument("--enable-model-api", dest="model_mode", action="store_true",
                        help="the management API may register and unregister archives")
    for flag in ("--workflow-store", "--log-config", "--cpp-log-config", "--plugins-path", "--sock-type",
                 "--sock-name", "--host", "--port", "--metrics-config"):
        parser.add_argument(flag, help="taken; no meaning in gpuserve (said in the log)")
    parser.add_argument("--ppath", dest="plugins_path", help=argparse.SUPPRESS)
    parser.add_argument("--async", dest="async_comm", action="store_true", help="taken; no meaning in gpuserve")
    return parser


def _running_pid() -> Optional[int]:
    """The pid in TorchServe's pid file when that process is a gpuserve server; the file goes when it is not."""
    try:
        pid = int(PID_FILE.read_text().split()[0])
        if b"gpuserve" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    except (OSError, ValueError, IndexError):
        pass
    if PID_FILE.exists():
        print("Removing orphan pid file.")
        PID_FILE.unlink(missing_ok=True)
    return None


def _stop(foreground: bool) -> int:
    pid = _running_pid()
    folder = _scratch_of_running()
    if pid is None:
        print("TorchServe is not currently running.")
        return 0
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and not _zombie(pid):
            time.sleep(0.1)
        print("TorchServe has stopped.")
    except OSError:
        print("TorchServe already stopped.")
    PID_FILE.unlink(missing_ok=True)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def _scratch_of_running() -> Optional[Path]:
    """The layout folder the running server serves: the pid file's second line (TorchServe reads the first)."""
    try:
        lines = PID_FILE.read_text().splitlines()
    except OSError:
        return None
    folder = Path(lines[1]) if len(lines) > 1 else None
    return folder if folder is not None and folder.name.startswith("gpuserve-torchserve-") else None


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def read_properties(path: Path) -> Dict[str, str]:
    from gpuserve.torchserve.store import read_properties as read

    return read(path)


def layout(store: Path, config: Optional[Path], models: Optional[List[str]], folder: Path) -> Dict[str, str]:
    """KServe's TorchServe layout in `folder` for the flags; the config's properties, as written there."""
    lines = config.read_text().splitlines() if config is not None else []
    given = read_properties(config) if config is not None else {}
    overridden = {"model_store": str(store)}
    if models:
        overridden["load_models"] = ",".join(models)
    kept = [line for line in lines if line.split("=", 1)[0].strip() not in overridden]
    (folder / "config").mkdir(parents=True, exist_ok=True)
    (folder / "config" / "config.properties").write_text(
        "\n".join(kept + [f"{key}={value}" for key, value in overridden.items()]) + "\n")
    link = folder / "model-store"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(store)
    return {**given, **overridden}


def _address(properties: Dict[str, str], key: str, default: str):
    parts = urlsplit(properties.get(key) or default)
    return parts.hostname or "127.0.0.1", parts.port or urlsplit(default).port


def start_line(args: argparse.Namespace, folder: Path) -> List[str]:
    """gpuserve's command for TorchServe's flags (a message and SystemExit(1) where TorchServe refuses them)."""
    config = os.environ.get("TS_CONFIG_FILE") or args.ts_config
    if config and not Path(config).is_file():
        _refuse(f"--ts-config file not found: {config}")
    if not args.model_store:
        _refuse("Missing mandatory parameter --model-store")
    if not Path(args.model_store).is_dir():
        _refuse(f"--model-store directory not found: {args.model_store}")
    properties = layout(Path(args.model_store).resolve(), Path(config).resolve() if config else None, args.models,
                        folder)
    host, http = _address(properties, "inference_address", "http://127.0.0.1:8080")
    _, metrics = _address(properties, "metrics_address", "http://127.0.0.1:8082")
    grpc = properties.get("grpc_inference_port") or "7070"
    if properties.get("management_address"):
        print(f"torchserve: management_address {properties['management_address']} is served on the inference "
              f"address (gpuserve serves TorchServe's management API on its HTTP port, {http})", file=sys.stderr)
    line = [sys.executable, "-m", "gpuserve.cli", "start", str(folder), "--host", host, "--http-port", str(http),
            "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    if args.model_mode:
        line.append("--enable-model-api")
    for name in ("workflow_store", "log_config", "cpp_log_config", "plugins_path", "sock_type", "sock_name", "host",
                 "port", "metrics_config"):
        if getattr(args, name):
            print(f"torchserve: --{name.replace('_', '-')} taken; it has no meaning in gpuserve", file=sys.stderr)
    if args.token_auth:
        print("torchserve: --disable-token-auth taken (gpuserve asks no tokens)", file=sys.stderr)
    return line


def _refuse(message: str) -> None:
    print(message)
    raise SystemExit(1)


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.version:
        from gpuserve.version import __version__

        print(f"TorchServe Version is {__version__} (gpuserve)")
        return 0
    if args.stop:
        return _stop(args.foreground)
    if _running_pid() is not None:
        print("TorchServe is already running, please use torchserve --stop to stop TorchServe.")
        return 1
    folder = Path(tempfile.mkdtemp(prefix="gpuserve-torchserve-"))
    try:
        line = start_line(args, folder)
    except SystemExit as exc:
        shutil.rmtree(folder, ignore_errors=True)
        return int(exc.code or 0)
    if args.foreground:
        process = subprocess.Popen(line)
    else:  # its output to TorchServe's log folder: a caller reading this command's output is not held open by it
        logs = Path(os.environ.get("LOG_LOCATION") or "logs")
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / "gpuserve.log", "ab") as log:
            process = subprocess.Popen(line, start_new_session=True, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        print(f"gpuserve serves TorchServe's store; its log: {(logs / 'gpuserve.log').resolve()}")
    PID_FILE.write_text(f"{process.pid}\n{folder}\n")  # --stop removes the folder with the server
    if args.foreground:
        try:
            return process.wait()
        except KeyboardInterrupt:
            process.send_signal(signal.SIGINT)
            return process.wait()
        finally:
            PID_FILE.unlink(missing_ok=True)
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
