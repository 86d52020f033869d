"""Triton's model instance update: reloading a Python-backend model whose model file and config are unchanged
but for `instance_group` adds and removes instances in place instead of loading the model again.

Triton matches instances by their signature (kind and devices, not the group's name or how groups are
split): instances whose signature the new config still asks for keep running untouched (no `finalize`, no
`initialize`), missing ones are initialized, and extra ones stop taking requests, finish the batch they run
and are finalized before the load answers. Requests keep being served throughout. Anything else changed (the
model file, any other config field) reloads the whole model, as before. Its qa (L0_model_update
instance_update_test.py) counts initialize/finalize calls to check exactly this.

A model with `sequence_batching` keeps each sequence on its instance: a leaving instance takes no new
sequence and is finalized once the sequences it runs have ended (or gone idle).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from gpuserve.engine import rate_limiter
from gpuserve.triton_python_config import complete_config, completed_config


@dataclass(frozen=True)
class LoadedFrom:
    """What a loaded Python model was built from: enough to complete a new config and to start instances."""

    cls: type
    folder: Path
    device: str
    digest: str  # of model.py


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


CODE_SUFFIXES = (".py", ".so", ".tar.gz")  # beside a model's versions: what model.py may import or run in


def files_stamp(model) -> Optional[tuple]:
    """What tells a reload that a loaded version's files changed, as Triton tells it by modification times:
    every file in its version folder, and beside the versions (the model folder less its config) the code
    model.py may use (modules, shared libraries, execution environments), each by path, size and time. So a
    touched model.py or a new or edited helper module loads the version again, while what a model writes
    beside its versions as it runs (a log, a counter) does not. Taken once a load is over, so what a version
    writes into its own folder while it loads (a marker) is not a change either; __pycache__ folders and a
    folder's own time (its file list shows what came or went) are left out."""
    try:
        version_folder = model.artefact().parent
        folder = Path(model.settings.folder) if getattr(model.settings, "folder", None) else version_folder.parent
        beside = [entry for entry in folder.iterdir()
                  if entry.name not in ("config.pbtxt", "configs") and not entry.name.isdigit()]
        return _files(version_folder.iterdir(), version_folder, lambda _: True), \
            _files(beside, folder, lambda path: path.name.endswith(CODE_SUFFIXES))
    except OSError:
        return None


def _files(entries, base: Path, wanted) -> tuple:
    found = []
    for entry in sorted(entries):
        if entry.name == "__pycache__":
            continue
        if entry.is_dir():
            found.extend(_files(entry.iterdir(), base, wanted))
        elif wanted(entry):
            stat = entry.stat()
            found.append((str(entry.relative_to(base)), stat.st_size, stat.st_mtime_ns))
    return tuple(found)


def signature(group: Dict[str, Any]) -> tuple:
    """What an instance of a completed instance group is matched by: its kind and devices."""
    return group["kind"], tuple(group["gpus"])


def in_place_config(model, new) -> Optional[Dict[str, Any]]:
    """The completed config `new` (a model built for the reload, not loaded) would run with, if `model` can
    take it by updating its instances alone; None if the model must be loaded again."""
    source = getattr(model, "loaded_from", None)
    if source is None or not model.ready or type(new) is not type(model):
        return None
    if str(getattr(new, "version", None)) != str(getattr(model, "version", None)):
        return None
    try:
        path = new.artefact()
        stamp = getattr(model, "files_stamp", None)
        if (files_stamp(new) != stamp) if stamp is not None else (file_digest(path) != source.digest):
            return None
        _, config = new.written_config()
        config = completed_config(complete_config(source.cls, config), model.name, source.device)
    except Exception:  # a config that does not read or complete: the full load reports it
        return None
    # as Triton, a version whose config differs only in instance_group or version_policy is not loaded again
    kept = lambda c: json.dumps({k: v for k, v in c.items() if k not in ("instance_group", "version_policy")},  # noqa: E731
                                sort_keys=True)
    if kept(config) != kept(model.config):
        return None
    return config


async def update_instances(model, config: Dict[str, Any]) -> None:
    """Bring `model`'s instances to `config`'s instance groups, keeping those whose signature is still asked
    for; then `config` is the model's."""
    source = model.loaded_from
    spare: Dict[tuple, List[Any]] = {}
    for instance in model.instances:
        spare.setdefault(instance.signature, []).append(instance)
    kept, wanted = [], []
    for group in config["instance_group"]:
        for index in range(group["count"]):
            wanted_kind = signature(group)
            if spare.get(wanted_kind):
                kept.append(spare[wanted_kind].pop(0))
            else:
                wanted.append((group, index))
    leaving = [instance for instances in spare.values() for instance in instances]
    arguments = json.dumps(config)
    # Triton's rate limiter: an added instance gets its group's ticket (a group that cannot fit fails the load
    # before any instance starts, as a full load does), a leaving one gives its ticket back once it stopped
    limiter = rate_limiter.limiter()
    ticket_of = dict(zip(map(id, model.instances), getattr(model, "_tickets", None) or []))
    tickets = limiter.tickets_for(model.name, [dict(group, count=1) for group, _ in wanted]) \
        if limiter is not None and ticket_of else []
    added = []
    try:
        for group, index in wanted:
            added.append(await asyncio.to_thread(model.start_instance, source.cls, group, index, arguments,
                                                 source.folder, source.device))
    except BaseException:
        for instance in added:
            await asyncio.to_thread(instance.unload)
        if tickets:
            limiter.unregister(tickets)
        raise
    ticket_of.update(zip(map(id, added), tickets))
    gone = [ticket_of.pop(id(instance)) for instance in leaving if id(instance) in ticket_of]
    engine_of = lambda instance: model.engine_instance(instance, ticket_of.get(id(instance)))  # noqa: E731
    if model.sequences is not None:
        _update_sequence_schedulers(model, added, leaving, engine_of)
    else:
        scheduler = model.scheduler
        engine = {id(i.backend): i for i in scheduler.instances}
        for instance in added:
            await scheduler.add_instance(engine_of(instance))
        for instance in leaving:
            await scheduler.retire_instance(engine[id(instance)])
        if gone:
            limiter.unregister(gone)
    model.instances = kept + added
    if ticket_of:
        model._tickets = [ticket_of[id(instance)] for instance in model.instances]
    model.backend = model.instances[0]
    model.config = config


def _update_sequence_schedulers(model, added: List[Any], leaving: List[Any], engine_of) -> None:
    """A stateful model has a scheduler per instance and its sequences stay on theirs: a new instance gets a
    scheduler (and new sequences); a leaving one takes no new sequence and stops (finalized) once none of
    its sequences is left, which may be after the load has answered (Triton keeps it until then too)."""
    from gpuserve.engine.batcher import Scheduler

    router = model.sequences
    index = {id(s.instances[0].backend): i for i, s in enumerate(model.schedulers) if s.instances}
    for instance in added:
        engine = engine_of(instance)
        model.schedulers.append(Scheduler(model.name, [engine], model.batching, model.stats,
                                          batch_dim=router.batch_dim))
        router.add_instance()
        if getattr(model, "direct", None) is not None:  # its Direct batcher gets slots there too
            model.direct.add_instance(engine)
    for instance in leaving:
        scheduler = model.schedulers[index[id(instance)]]
        ticket = scheduler.instances[0].ticket if scheduler.instances else None
        router.retire(index[id(instance)], lambda scheduler=scheduler, ticket=ticket: _stop_later(scheduler, ticket))


def _stop_later(scheduler, ticket=None) -> None:
    task = asyncio.ensure_future(scheduler.stop())
    if ticket is not None:  # its rate limiter ticket goes back once the instance stopped
        task.add_done_callback(lambda _: rate_limiter.limiter() is None or rate_limiter.limiter().unregister([ticket]))
    _STOPPING.add(task)
    task.add_done_callback(_STOPPING.discard)


_STOPPING: set = set()  # stops under way (a task nothing else holds could be collected before it ends)
