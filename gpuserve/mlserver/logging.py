"""`mlserver.logging`: the `mlserver` logger runtimes log to, and `configure_logger`.

Records propagate to the server's own handlers, so a runtime's lines appear in gpuserve's log in its
format; `configure_logger` only adds a stdout handler where nothing would print them (a script or a
test that uses the runtime without the server).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Optional

LoggerName = "mlserver"
logger = logging.getLogger(LoggerName)


def get_logger() -> logging.Logger:
    return logger


def configure_logger(settings: Optional[Any] = None) -> logging.Logger:
    """INFO, or DEBUG when `settings.debug`; a stdout handler only where no handler would take the records."""
    logger.setLevel(logging.DEBUG if settings is not None and getattr(settings, "debug", False) else logging.INFO)
    if not logger.hasHandlers():
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s [%(name)s] %(levelname)s - %(message)s"))
        logger.addHandler(handler)
    return logger


__all__ = ["LoggerName", "logger", "get_logger", "configure_logger"]
