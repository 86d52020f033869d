"""At --log-verbose (the process at DEBUG) the server's own debug lines show, libraries' per-frame ones do
not: hpack logged every header of every gRPC call (91 lines for 5 health calls before)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from gpuserve.logging_setup import CHATTY_LIBRARIES, configure_logging


@pytest.fixture
def restored_logging():
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {name: logging.getLogger(name).level for name in CHATTY_LIBRARIES})
    yield
    root.handlers[:], level, levels = saved
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


def _settings(level: str) -> SimpleNamespace:
    return SimpleNamespace(log_file=None, logging_format="text", log_level=level, access_log=False)


def test_debug_keeps_libraries_at_info(restored_logging):
    configure_logging(_settings("debug"))
    assert logging.getLogger("gpuserve").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("hpack.hpack").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("asyncio").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("hpack.hpack").isEnabledFor(logging.INFO)


def test_a_quieter_process_keeps_libraries_quieter(restored_logging):
    configure_logging(_settings("error"))
    assert not logging.getLogger("hpack").isEnabledFor(logging.WARNING)
    assert logging.getLogger("hpack").isEnabledFor(logging.ERROR)
