"""Triton's poll mode: the repository folder is scanned every few seconds and the server follows it.

A model that appears loads, one whose files change (sizes or modification times, the versions its
config picks) loads again, one whose folder goes away unloads. A reload loads the new versions beside
the old ones, which keep serving until the new ones are ready, and a reload that fails leaves the old
ones serving (model_repository.ModelRepository.load_async), so editing a model in place never takes it
down. Files are compared by their metadata, not read, so a scan of a repository of large artefacts
costs a directory walk; it runs on a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Dict, Optional

from gpuserve.errors import ModelNotFound
from gpuserve.model_repository import DUPLICATED, ModelRepository

logger = logging.getLogger("gpuserve")


class RepositoryPoller:
    def __init__(self, registry: ModelRepository, interval_s: float,
                 changed: Optional[Callable[[str], None]] = None, baseline: Optional[Dict[str, str]] = None):
        if getattr(registry, "fingerprints", None) is None:
            raise ValueError("repository polling needs a repository folder (gpuserve start FOLDER)")
        self.registry = registry
        self.interval_s = interval_s
        self.changed = changed  # told each name before it loads again or unloads (the response cache forgets it)
        self.seen: Optional[Dict[str, str]] = baseline  # the scan to compare the next one with

    async def run(self) -> None:
        """Scan forever (cancel to stop); without a baseline the first scan is the state the server started from."""
        while True:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception:  # a scan that fails (a folder being replaced) is tried again next time
                logger.exception("repository poll failed; trying again in %.3g s", self.interval_s)
            await asyncio.sleep(self.interval_s)

    async def poll(self) -> None:
        now = await asyncio.to_thread(self.registry.fingerprints)
        before, self.seen = self.seen, now
        if before is None:
            return
        unchanged = {name for name in now if before.get(name) == now[name] and self.registry.versions(name)}
        for name in sorted(now):
            if before.get(name) == now[name]:
                continue
            logger.info("repository poll: model '%s' %s; loading it", name, "changed" if name in before else "added")
            if self.changed is not None:
                self.changed(name)
            try:
                ok = await self.registry.load_async(name)
            except ModelNotFound:  # removed again since the scan
                continue
            if not ok:
                logger.error("repository poll: model '%s' did not load: %s", name,
                             self.registry.load_failures.get(name) or self._reason(name))
                if DUPLICATED in self.registry.load_failures.get(name, ""):
                    # as Triton's poll: a model another repository folder now holds too is served from neither
                    await self.registry.unload_async(name)
        for name in sorted(set(before) - set(now)):
            if not self.registry.versions(name):
                continue
            logger.info("repository poll: model '%s' was removed; unloading it", name)
            if self.changed is not None:
                self.changed(name)
            try:
                await self.registry.unload_async(name)
            except ModelNotFound:
                pass
        await self._relink(unchanged)

    async def _relink(self, names) -> None:
        """As Triton's poll follows its dependency graph: an ensemble unloaded because a model it calls went
        or changed name (a namespaced name one folder holds again) loads again, its steps found afresh; an
        explicit unload, by contrast, leaves it unloaded (model_repository.ModelRepository.unload_async)."""
        for name in sorted(names):
            if self.registry.versions(name):
                continue
            logger.info("repository poll: model '%s' lost a model it calls; loading it again", name)
            try:
                if not await self.registry.load_async(name):
                    logger.error("repository poll: model '%s' did not load: %s", name,
                                 self.registry.load_failures.get(name) or self._reason(name))
            except ModelNotFound:
                pass

    def _reason(self, name: str) -> str:
        model = self.registry.get_model(name)
        return getattr(model, "reason", "") or "not ready"
