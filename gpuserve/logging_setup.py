"""Log format for the whole process: plain text, one JSON object a line (for log shippers), or tritonserver's
lines (`--log-format default|ISO8601` on a tritonserver launch line, or a log_format set through /v2/logging).

Triton writes `I1205 16:26:59.141234 4242 server.cc:674] "message"` (default) or
`2026-12-05T16:26:59Z I 4242 server.cc:674] "message"` (ISO8601), in UTC, level E / W / I (verbose lines
are I), each message JSON-quoted unless TRITON_SERVER_ESCAPE_LOG_MESSAGES=0: a newline in a client's tensor
name or model name cannot then forge a log record of its own (qa L0_logging log_format_test).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Optional

# Libraries whose DEBUG lines are per frame or per header (hpack logs every header of every gRPC call): at
# --log-verbose they buried the server's own lines. They stay at INFO unless the process's level is above it.
CHATTY_LIBRARIES = ("hpack", "h2", "h11", "httpcore", "httpx", "urllib3", "asyncio", "multipart",
                    "python_multipart", "grpc", "filelock", "PIL", "matplotlib", "numba", "fsspec")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


TRITON_LAYOUTS = ("default", "ISO8601")
ESCAPE_VARIABLE = "TRITON_SERVER_ESCAPE_LOG_MESSAGES"
# what /v2/logging reports as log_file: the path as given, as Triton reports it
given_log_file = ""
_handler: Optional[logging.Handler] = None  # the one configure_logging installed


class TritonFormatter(logging.Formatter):
    def __init__(self, layout: str = "default", escape: Optional[bool] = None):
        super().__init__()
        self.layout = layout
        self.escape = os.environ.get(ESCAPE_VARIABLE) != "0" if escape is None else escape

    def format(self, record: logging.LogRecord) -> str:
        when = time.gmtime(record.created)
        letter = "E" if record.levelno >= logging.ERROR else "W" if record.levelno >= logging.WARNING else "I"
        where = f"{record.process or os.getpid()} {record.filename}:{record.lineno}] "
        if self.layout == "ISO8601":
            head = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', when)} {letter} {where}"
        else:
            micros = int(record.created * 1_000_000) % 1_000_000
            head = f"{letter}{time.strftime('%m%d %H:%M:%S', when)}.{micros:06d} {where}"
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            message = f"{message}\n{self.formatStack(record.stack_info)}"
        return head + (json.dumps(message, ensure_ascii=False) if self.escape else message)


class LevelSwitch(logging.Filter):
    """Triton's --log-info / --log-warning / --log-error (and /v2/logging's log_info, log_warning, log_error):
    each turns its own level's lines off alone, so verbose (DEBUG) lines still show with log_info false."""

    def __init__(self, info: bool = True, warning: bool = True, error: bool = True):
        super().__init__()
        self.info, self.warning, self.error = info, warning, error

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return self.error
        if record.levelno >= logging.WARNING:
            return self.warning
        return self.info if record.levelno >= logging.INFO else True


def level_switch() -> Optional[LevelSwitch]:
    found = [f for f in (_handler.filters if _handler is not None else ()) if isinstance(f, LevelSwitch)]
    return found[0] if found else None


def triton_layout() -> str:
    """The log_format /v2/logging reports: ISO8601 where the log is written so, else default."""
    formatter = _handler.formatter if _handler is not None else None
    return formatter.layout if isinstance(formatter, TritonFormatter) else "default"


def set_triton_layout(layout: str) -> None:
    """A log_format set through /v2/logging: the server's log is written in Triton's lines from now on (a JSON log
    stays JSON; handlers others installed, such as a test runner's, keep theirs)."""
    if _handler is not None and not isinstance(_handler.formatter, JsonFormatter):
        _handler.setFormatter(TritonFormatter(layout))


def configure_logging(settings) -> None:
    global given_log_file, _handler
    log_file = getattr(settings, "log_file", None)
    given_log_file = log_file or ""
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler()
    handler.addFilter(LevelSwitch(*(getattr(settings, f"log_{level}", True) is not False
                                    for level in ("info", "warning", "error"))))
    if settings.logging_format == "json":
        handler.setFormatter(JsonFormatter())
    elif settings.logging_format in TRITON_LAYOUTS:
        handler.setFormatter(TritonFormatter(settings.logging_format))
    else:
        plain = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        # milliseconds after a dot, not logging's comma: a line holds no comma before its message (Triton's qa
        # scripts split log lines on commas to read a logged "setting,value")
        plain.default_msec_format = "%s.%03d"
        handler.setFormatter(plain)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    _handler = handler
    root.setLevel(settings.log_level.upper())
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = []
    access.propagate = settings.access_log
    access.disabled = not settings.access_log
    applied_logging_settings(getattr(settings, "logging_settings", None))


def applied_logging_settings(given) -> None:
    """MLServer's logging_settings over gpuserve's set-up: a dictConfig dict, or a file: .json/.yaml/.yml read as
    dictConfig, another as fileConfig (existing loggers kept); anything else is named in a warning."""
    if not given:
        return
    from pathlib import Path

    from gpuserve.logging import configure_logging as from_config

    if isinstance(given, dict) or isinstance(given, str) and Path(given).is_file():
        try:
            from_config(given)
        except Exception as exc:  # a broken file must not stop the server: said, and gpuserve's logging kept
            logging.getLogger("gpuserve").error("logging_settings %r cannot be applied: %s: %s", given,
                                                type(exc).__name__, exc)
        return
    logging.getLogger("gpuserve").warning("Unable to parse logging_settings %r: not a file or a dictConfig dict",
                                          given)
