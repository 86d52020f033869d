"""MLServer's CloudEvents headers on V2 inference (Seldon's request loggers and Knative eventing read them).

MLServer adds `Ce-Specversion`, `Ce-Source`, `Ce-Type`, `Ce-Modelid`, `Ce-Inferenceservicename`,
`Ce-Endpoint` and, with an id, `Ce-Id` / `Ce-Requestid` (and `Ce-Namespace` inside Kubernetes) to every
request its runtimes see (`payload.parameters.headers`) and to every answer's headers. gpuserve does the
same for MLServer-form models, with the server's name as MLServer uses its own.
"""

from __future__ import annotations

from typing import Dict, Optional

REQUEST_TYPE = "io.seldon.serving.inference.request"
RESPONSE_TYPE = "io.seldon.serving.inference.response"
_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

_namespace: Optional[str] = None
_namespace_read = False


def namespace() -> Optional[str]:
    global _namespace, _namespace_read
    if not _namespace_read:
        try:
            with open(_NAMESPACE_FILE, "r") as handle:
                _namespace = handle.read()
        except OSError:
            _namespace = None
        _namespace_read = True
    return _namespace


def headers(kind: str, model: str, ce_id: Optional[str], server_name: str) -> Dict[str, str]:
    """`server_name`: the serving data plane's (settings' server_name, which MLServer's settings.json sets)."""
    where = namespace()
    source = f"io.seldon.serving.deployment.{server_name}" + (f".{where}" if where else "")
    out = {"Ce-Specversion": "0.3", "Ce-Source": source, "Ce-Type": kind, "Ce-Modelid": model,
           "Ce-Inferenceservicename": server_name, "Ce-Endpoint": model}
    if ce_id:
        out["Ce-Id"] = out["Ce-Requestid"] = ce_id
    if where:
        out["Ce-Namespace"] = where
    return out
