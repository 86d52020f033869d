"""Log format for the whole process: plain text or one JSON object a line (for log shippers)."""

from __future__ import annotations

import json
import logging
import time

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


def configure_logging(settings) -> None:
    log_file = getattr(settings, "log_file", None)
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler()
    if settings.logging_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        plain = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        # milliseconds after a dot, not logging's comma: a line holds no comma before its message (Triton's qa
        # scripts split log lines on commas to read a logged "setting,value")
        plain.default_msec_format = "%s.%03d"
        handler.setFormatter(plain)
    root = logging.getLogger()
    root.handlers[:] = [handler]
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
