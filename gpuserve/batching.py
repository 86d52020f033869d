"""Model settings (MLServer's and Triton's names) -> the engine's BatchingConfig.

MLServer: `max_batch_size` N > 1 batches up to N; `max_batch_time` seconds is the longest a batch
waits to fill. Triton: `dynamic_batching { preferred_batch_size, max_queue_delay_microseconds,
priority_levels, default_priority_level, default_queue_policy }`. When neither says, a model whose
inputs all have a dynamic first dimension batches up to AUTO_MAX_BATCH rows without waiting: the
batcher is work-conserving, so this costs an idle model nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from gpuserve.engine.batcher import BatchingConfig, QueuePolicy
from gpuserve.errors import InvalidSettings
from gpuserve.settings import ModelSettings

AUTO_MAX_BATCH = 64
# Triton takes priority_levels up to 2^64-1 (its qa uses that); a queue per level would never be built,
# so levels past this many share the last queue (first come, first served among them)
MAX_PRIORITY_LEVELS = 256

logger = logging.getLogger("gpuserve")


def batching_config(settings: ModelSettings, batchable: bool) -> BatchingConfig:
    max_batch = settings.max_batch_size
    if max_batch is None:
        max_batch = AUTO_MAX_BATCH if batchable else 0
    if not batchable:
        max_batch = 0
    dyn = settings.dynamic_batching
    delay = settings.max_batch_time
    if dyn is not None and dyn.max_queue_delay_microseconds:
        delay = dyn.max_queue_delay_microseconds / 1e6
    levels = dyn.priority_levels if dyn is not None and dyn.priority_levels else 1
    if levels > MAX_PRIORITY_LEVELS:
        logger.warning("model '%s': priority_levels %d; gpuserve keeps %d queues, levels from %d on share the last",
                       settings.name, levels, MAX_PRIORITY_LEVELS, MAX_PRIORITY_LEVELS)
        levels = MAX_PRIORITY_LEVELS
    default_level = (dyn.default_priority_level - 1) if dyn is not None and dyn.default_priority_level else \
        (levels - 1) // 2 if levels > 1 else 0
    policy = (settings.model_extra or {}).get("default_queue_policy") or {}
    if dyn is not None and dyn.model_extra:
        policy = dyn.model_extra.get("default_queue_policy", policy) or policy
    timeout_us = policy.get("default_timeout_microseconds") or (dyn.default_timeout_microseconds if dyn else 0)
    max_queue = policy.get("max_queue_size") or (dyn.max_queue_size if dyn else 0)
    preferred = tuple(sorted(p for p in (dyn.preferred_batch_size if dyn else []) if 0 < p <= max(max_batch, 1)))
    by_level = _level_policies(dyn.model_extra.get("priority_queue_policy") if dyn is not None and dyn.model_extra
                               else None, levels)
    allow = bool(policy.get("allow_timeout_override", True))
    if allow and not timeout_us and "triton_max_batch_size" in (settings.model_extra or {}):
        allow = False  # Triton only lets a request shorten a default timeout: without one it has no effect
    default = QueuePolicy(int(max_queue or 0), timeout_us / 1e6 if timeout_us else None, allow, _delays(policy))
    policies = ()
    if by_level or default.delay or (levels > 1 and default.max_queue_size):  # Triton bounds each level alone
        policies = tuple(by_level.get(level, default) for level in range(levels))
    return BatchingConfig(
        max_batch_size=max_batch,
        preferred_batch_sizes=preferred,
        max_queue_delay_s=max(delay, 0.0),
        priority_levels=levels,
        default_priority_level=max(min(default_level, levels - 1), 0),
        max_queue_size=int(max_queue or 0),
        default_timeout_s=timeout_us / 1e6 if timeout_us else None,
        allow_timeout_override=allow,
        queue_policies=policies,
        ragged_inputs=tuple(settings.ragged.inputs) if settings.ragged is not None and batchable else (),
        triton_errors="triton_max_batch_size" in (settings.model_extra or {}),  # a config.pbtxt model
        start_after=int((settings.model_extra or {}).get("triton_delay_scheduler") or 0),
    )


def _delays(policy: dict) -> bool:
    action = policy.get("timeout_action", "REJECT")
    return action in ("DELAY", 1, "1")


def _level_policies(entries, levels: int) -> dict:
    """Triton's `priority_queue_policy` map (level -> ModelQueuePolicy, levels from 1) by 0-based level.
    Its fields are Triton's own defaults where unset (a level's policy does not inherit the default's)."""
    if not entries:
        return {}
    out = {}
    for key, value in entries.items():
        try:
            level = int(key) - 1
        except (TypeError, ValueError):
            continue
        if not 0 <= level < levels or not isinstance(value, dict):
            continue
        timeout_us = int(value.get("default_timeout_microseconds", 0) or 0)
        allow = bool(value.get("allow_timeout_override", False)) and timeout_us > 0  # as the default's, above
        out[level] = QueuePolicy(int(value.get("max_queue_size", 0) or 0), timeout_us / 1e6 if timeout_us else None,
                                 allow, _delays(value))
    return out


def request_priority(parameters: dict, levels: int) -> Optional[int]:
    """Triton's request `priority`: 1 is the highest level, 0 or absent the model's default."""
    value = parameters.get("priority") if parameters else None
    if value in (None, 0):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        from gpuserve.errors import InvalidInput

        raise InvalidInput(f"request parameter 'priority' must be a non-negative integer, got {value!r}")
    return value - 1


def request_timeout_s(parameters: dict) -> Optional[float]:
    """Triton's request `timeout` in microseconds."""
    value = parameters.get("timeout") if parameters else None
    if value in (None, 0):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        from gpuserve.errors import InvalidInput

        raise InvalidInput(f"request parameter 'timeout' must be microseconds (a non-negative number), got {value!r}")
    return value / 1e6


STRATEGY_LIBRARY = "batchstrategy.so"  # what Triton looks for in the version, then the model folder


def check_batch_strategy(folder: Path, config: dict, version: Optional[int]) -> None:
    """A config.pbtxt's custom batching strategy (Triton's TRITON_BATCH_STRATEGY_PATH parameter, or a
    batchstrategy.so beside the model): a C++ library of TRITONBACKEND_ModelBatch* functions that decides which
    requests share a batch. gpuserve cannot run one, so such a model is refused with the reason rather than
    batched by other rules than its config asks; the path missing, or given with sequence_batching, is refused
    in Triton's words, as Triton refuses it."""
    entry = (config.get("parameters") or {}).get("TRITON_BATCH_STRATEGY_PATH")
    if config.get("sequence_batching") is not None:
        if entry is not None:
            raise InvalidSettings("Invalid argument: TRITON_BATCH_STRATEGY_PATH cannot be specified with sequence "
                                  "batcher, using default batching strategy")
        return
    if entry is not None:
        path = str(entry.get("string_value", "") if isinstance(entry, dict) else entry)
        if not Path(path).exists():
            raise InvalidSettings(f"Not found: Batching library path not found: {path}")
    else:
        places = ([folder / str(version)] if version is not None else []) + [folder]
        path = next((str(p / STRATEGY_LIBRARY) for p in places if (p / STRATEGY_LIBRARY).is_file()), None)
        if path is None:
            return
    raise InvalidSettings(f"Unsupported: custom batching strategy '{path}' is a C++ library, which gpuserve does not "
                          "load; without it (and without TRITON_BATCH_STRATEGY_PATH) the model batches by its "
                          "dynamic_batching settings")
