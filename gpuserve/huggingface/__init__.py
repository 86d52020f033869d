"""MLServer's HuggingFace runtime (mlserver-huggingface 1.7.1) on gpuserve.

A `model-settings.json` naming `mlserver_huggingface.HuggingFaceRuntime` (or `huggingface`) serves a
transformers pipeline as MLServer does: the same settings (`parameters.extra`, MLSERVER_MODEL_HUGGINGFACE_*),
request decoding and answers. `import mlserver_huggingface` means this package where the real one is not
installed (gpuserve/mlserver/alias.py), so `from mlserver_huggingface.codecs import HuggingfaceRequestCodec`
works in client code and custom runtimes. transformers itself is imported when a model loads.
"""

from gpuserve.huggingface.runtime import HuggingFaceRuntime

__all__ = ["HuggingFaceRuntime"]
