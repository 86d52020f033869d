"""`import mlserver` for runtimes written against MLServer, in a process without MLServer.

A runtime folder brought from MLServer says `from mlserver import MLModel`, `from mlserver.codecs import
NumpyCodec`, ... . Where the real `mlserver` package is not installed, those names resolve to
gpuserve.mlserver's modules (the same module objects, so codec registries and classes are shared with
the ones gpuserve uses), and the runtime runs with no line changed. Where MLServer is installed it is
left alone: its names then mean MLServer's own classes. Installed before gpuserve imports a model
folder's implementation (gpuserve/repository.py), in the server and in parallel-worker processes.

MLServer's runtime packages that gpuserve serves with a module of its own are aliased the same way, each
where the real one is absent: `mlserver_huggingface` is gpuserve/huggingface, `mlserver_alibi_detect` (and
`.runtime`) is gpuserve/runtimes_alibi_detect.py, `mlserver_alibi_explain` (and `.runtime`, `.common`, `.errors`)
is gpuserve/runtimes_alibi_explain, `mlserver_mllib` (and `.mllib`, `.utils`, `.errors`) is
gpuserve/runtimes_mllib.py.
"""

from __future__ import annotations

from gpuserve import import_alias


def install() -> bool:
    """Make `mlserver` mean gpuserve.mlserver unless MLServer itself is importable; True when it does."""
    for name, (target, modules) in RUNTIME_PACKAGES.items():
        import_alias.install(name, target, modules)
    return import_alias.install("mlserver", "gpuserve.mlserver")


# MLServer's runtime package -> gpuserve's module and what its submodules mean
RUNTIME_PACKAGES = {
    "mlserver_huggingface": ("gpuserve.huggingface", {}),
    "mlserver_alibi_detect": ("gpuserve.runtimes_alibi_detect", {"runtime": "gpuserve.runtimes_alibi_detect"}),
    "mlserver_alibi_explain": ("gpuserve.runtimes_alibi_explain",
                               {"runtime": "gpuserve.runtimes_alibi_explain.runtime",
                                "common": "gpuserve.runtimes_alibi_explain.runtime",
                                "errors": "gpuserve.runtimes_alibi_explain.remote"}),
    "mlserver_mllib": ("gpuserve.runtimes_mllib", {"mllib": "gpuserve.runtimes_mllib",
                                                   "utils": "gpuserve.runtimes_mllib",
                                                   "errors": "gpuserve.runtimes_mllib"}),
}
