"""Large answers go to the socket from views of the output arrays without being joined first.

Python 3.11's `transport.writelines` joins its pieces into one bytes object (a copy of a whole large answer)
and `write` then copies again what the socket did not take at once. Here the pieces go out with sendmsg
(scatter-gather) while the transport has nothing queued, and only what the socket did not take is handed to
the transport (copied once into its buffer). uvloop's and TLS transports (no `_sock`) keep their own way.
"""

from __future__ import annotations

import os
from typing import Iterable

try:
    IOV_MAX = max(16, min(os.sysconf("SC_IOV_MAX"), 1024))
except (AttributeError, OSError, ValueError):
    IOV_MAX = 16


def write_views(transport, parts: Iterable) -> None:
    sock = getattr(transport, "_sock", None)
    if sock is None or not hasattr(sock, "sendmsg") or transport.get_write_buffer_size() or transport.is_closing():
        transport.writelines(parts)
        return
    views = []
    for part in parts:
        view = memoryview(part)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        if view.nbytes:
            views.append(view)
    at = 0
    while at < len(views):
        batch = views[at:at + IOV_MAX]
        try:
            sent = sock.sendmsg(batch)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:  # the transport's own write meets the same error and closes as it does
            break
        whole = sum(view.nbytes for view in batch)
        if sent < whole:
            for index, view in enumerate(batch):
                if sent < view.nbytes:
                    views[at + index] = view[sent:]
                    at += index
                    break
                sent -= view.nbytes
            break
        at += len(batch)
    for view in views[at:]:
        transport.write(view)  # the first one queues and waits for the socket; the rest join it
