"""tritonserver's test hooks that hold gRPC answers back, read once when a gRPC server starts.

- TRITONSERVER_SERVER_DELAY_GRPC_RESPONSE_SEC=N: every RPC but the two inference ones (health, metadata,
  config, repository, statistics, trace and log settings, shared memory, grpc.health.v1 Check) does its
  work and then waits N seconds before it answers, success or error, as Triton's common handler waits
  before its write; qa L0_client_timeout lets a client_timeout expire on each of them this way.
- TRITONSERVER_DELAY_GRPC_RESPONSE=MS: each response a decoupled model sends on a ModelStreamInfer stream
  waits MS milliseconds before it is written, one after the other on that stream, as Triton's stream
  writer waits (qa L0_decoupled test_one_to_multi_many: responses pile up behind the writer).

Values are read as C's atoi reads them (leading digits; anything else is 0). Unset or 0, nothing is
wrapped and the stream adds no wait: the hooks cost nothing when off.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
from typing import Iterable

INFERENCE_RPCS = frozenset({"ModelInfer", "ModelStreamInfer"})


def _atoi(name: str) -> int:
    match = re.match(r"\s*([+-]?\d+)", os.environ.get(name, ""))
    return int(match.group(1)) if match else 0


def common_delay_s() -> int:
    """Seconds each non-inference answer waits (TRITONSERVER_SERVER_DELAY_GRPC_RESPONSE_SEC); 0: none."""
    return max(_atoi("TRITONSERVER_SERVER_DELAY_GRPC_RESPONSE_SEC"), 0)


def stream_response_delay_s() -> float:
    """Seconds each decoupled response on a stream waits before its write (TRITONSERVER_DELAY_GRPC_RESPONSE,
    in ms); 0: none."""
    return max(_atoi("TRITONSERVER_DELAY_GRPC_RESPONSE"), 0) / 1000.0


class _LateContext:
    """The call's context whose abort waits first: grpc.aio's abort sends the status at once."""

    def __init__(self, context, seconds: int):
        self._context, self._seconds, self.waited = context, seconds, False

    def __getattr__(self, name):
        return getattr(self._context, name)

    async def abort(self, *args, **kwargs):
        self.waited = True
        await asyncio.sleep(self._seconds)
        await self._context.abort(*args, **kwargs)


def delayed(method, seconds: int):
    """`method` answering `seconds` later, whether it returns or fails (a restricted call's refusal and an
    abort wait too); a call its client gave up on is cancelled in the wait, its work already done."""
    if not seconds:
        return method

    @functools.wraps(method)
    async def answer_later(request, context):
        late = _LateContext(context, seconds)
        try:
            answer = await method(request, late)
        except asyncio.CancelledError:
            raise
        except BaseException:
            if not late.waited:
                await asyncio.sleep(seconds)
            raise
        await asyncio.sleep(seconds)
        return answer

    return answer_later


def delay_common(servicer, names: Iterable[str]):
    """`servicer` with each non-inference RPC of `names` answering late, when the hook is set."""
    seconds = common_delay_s()
    if seconds:
        for name in names:
            if name not in INFERENCE_RPCS:
                setattr(servicer, name, delayed(getattr(servicer, name), seconds))
    return servicer
