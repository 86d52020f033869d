"""`mlserver.metrics`: custom metrics from inside a runtime (`register`, `log`), gpuserve's own
(`gpuserve.metrics`), labelled `model_name` and `model_version` as MLServer's are."""

from gpuserve.metrics import log, register

__all__ = ["register", "log"]
