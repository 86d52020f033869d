"""The two hooks gpuserve's repository needs for MLServer runtimes, put in place by the tests until
`gpuserve.repository.instantiate` and `gpuserve.runtimes.BUILTIN_RUNTIMES` carry them themselves.

- `instantiate(cls, settings)` builds `cls.__gpuserve_adapter__(settings)` when the class offers it
  (every `gpuserve.mlserver.MLModel` subclass does);
- `BUILTIN_RUNTIMES` knows `mlserver_sklearn.SKLearnModel` and the other classic-ML names.

Each hook is added only where it is missing (checked by behaviour, not by reading source), so once
the repository has them this module changes nothing.
"""

from __future__ import annotations

from typing import Callable, List, Optional


def missing() -> List[str]:
    from gpuserve import repository, runtimes
    from gpuserve.errors import GpuserveError
    from gpuserve.mlserver import MLModel
    from gpuserve.runtimes_classic import CLASSIC_RUNTIMES
    from gpuserve.settings import ModelSettings

    class _Probe(MLModel):
        pass

    out = []
    try:
        built = repository.instantiate(_Probe, ModelSettings(name="probe"))
        if type(built).__name__ != "MLModelAdapter":
            out.append("instantiate")
    except (GpuserveError, TypeError):
        out.append("instantiate")
    if any(runtimes.BUILTIN_RUNTIMES.get(k) is not v for k, v in CLASSIC_RUNTIMES.items()):
        out.append("builtin_runtimes")
    return out


def apply(setattr_: Optional[Callable] = None, setitem: Optional[Callable] = None) -> List[str]:
    """Add the missing hooks (through pytest's monkeypatch when given); returns which were added."""
    from gpuserve import repository, runtimes
    from gpuserve.runtimes_classic import CLASSIC_RUNTIMES

    setattr_ = setattr_ or setattr
    setitem = setitem or (lambda mapping, key, value: mapping.__setitem__(key, value))
    todo = missing()
    if "instantiate" in todo:
        original = repository.instantiate

        def instantiate(cls, settings):
            adapter = getattr(cls, "__gpuserve_adapter__", None)
            if adapter is not None:
                return adapter(settings)
            return original(cls, settings)

        setattr_(repository, "instantiate", instantiate)
    if "builtin_runtimes" in todo:
        for key, value in CLASSIC_RUNTIMES.items():
            setitem(runtimes.BUILTIN_RUNTIMES, key, value)
    return todo
