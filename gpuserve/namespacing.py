"""Triton's --model-namespacing=true: each repository folder is a namespace, so one model name may be
served from several folders. The registry keeps such a model under `NAME::N` (N: the folder's place on
the command line); a name only one folder holds keeps its plain name. A model from folder N (an
ensemble's steps, a Python model's BLS calls) reaches NAME in its own folder first, else the one NAME
elsewhere, looked up at each request, so a copy that appears or goes is picked up as the repository
changes. A request for a plain name that several folders hold is refused in Triton's words.
"""

from __future__ import annotations

from typing import List, Optional

SEP = "::"


def namespaced(name: str, index: int) -> str:
    return f"{name}{SEP}{index}"


def plain(key: str) -> str:
    return key.split(SEP, 1)[0]


def copies(names, name: str) -> List[str]:
    """The namespaced keys among `names` that stand for `name`."""
    return sorted(k for k in names if SEP in k and plain(k) == name)


def ambiguity(name: str, count: int) -> str:
    return (f"There are {count} identifiers of model '{name}' in global map, model namespace must be provided "
            "to resolve ambiguity.")


class NamespaceView:
    """The registry as the models of one repository folder see it (set as their `registry`)."""

    def __init__(self, registry, index: int):
        self._registry = registry
        self._index = index  # the folder's place on the command line

    def name_for(self, name: str) -> str:
        """This folder's copy of `name` where several folders hold it now, else `name` itself."""
        key = namespaced(name, self._index)
        return key if self._registry.get_model(key) is not None else name

    def get_model(self, name: str, version: Optional[str] = None):
        return self._registry.get_model(self.name_for(name), version)

    def resolve(self, name: str, version: Optional[str] = None):
        return self._registry.resolve(self.name_for(name), version)

    async def infer(self, request, headers: Optional[dict] = None):
        request.model_name = self.name_for(request.model_name)
        return await self._registry.infer(request, headers)

    def __getattr__(self, attribute):
        return getattr(self._registry, attribute)


def registry_for(registry, model):
    """What a model that calls others is given as its registry: a view of its own folder's names when it
    came from a namespaced repository, else the registry itself."""
    index = getattr(model, "namespace_index", None)
    return NamespaceView(registry, index) if index is not None else registry


def settle(registry, key: str) -> None:
    """`key` was just registered: a copy of its name still registered under the plain name (loaded while
    only its folder held the name) moves to its own key, so the plain name is ambiguous again, as on disk."""
    name = plain(key)
    versions = registry._versions.get(name)
    if SEP not in key or not versions:
        return
    index = next((getattr(m, "namespace_index", None) for m in versions.values()), None)
    if index is None or namespaced(name, index) == key or namespaced(name, index) in registry._versions:
        return
    registry._versions[namespaced(name, index)] = registry._versions.pop(name)
    registry.models[namespaced(name, index)] = registry.models.pop(name)
