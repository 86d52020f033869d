"""`import mlserver` for runtimes written against MLServer, in a process without MLServer.

A runtime folder brought from MLServer says `from mlserver import MLModel`, `from mlserver.codecs import
NumpyCodec`, ... . Where the real `mlserver` package is not installed, those names resolve to
gpuserve.mlserver's modules (the same module objects, so codec registries and classes are shared with
the ones gpuserve uses), and the runtime runs with no line changed. Where MLServer is installed it is
left alone: its names then mean MLServer's own classes. Installed before gpuserve imports a model
folder's implementation (gpuserve/repository.py), in the server and in parallel-worker processes.
"""

from __future__ import annotations

from gpuserve import import_alias


def install() -> bool:
    """Make `mlserver` mean gpuserve.mlserver unless MLServer itself is importable; True when it does.
    `mlserver_huggingface` likewise means gpuserve.huggingface (MLServer's HuggingFace runtime and codecs)."""
    import_alias.install("mlserver_huggingface", "gpuserve.huggingface")
    return import_alias.install("mlserver", "gpuserve.mlserver")
