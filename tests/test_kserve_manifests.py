"""The KServe manifests in configs/kserve/ checked against KServe's own CRD schemas.

The CRDs are vendored in configs/kserve/crds/ (source in SOURCE.md), so this runs offline. Each
manifest is validated against the `openAPIV3Schema` of the served version of its CRD with a Draft 7
validator (jsonschema ignores the `x-kubernetes-*` keys). Kubernetes' structural schemas do not say
`additionalProperties: false`; the API server instead rejects (kubectl's default strict field
validation) or prunes fields the schema does not name. `strict()` states that rule in JSON Schema
terms, so a misspelt field fails here as it would on `kubectl apply`.
"""
from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
KSERVE = ROOT / "configs" / "kserve"
CRDS = KSERVE / "crds"
MANIFESTS = sorted(KSERVE.glob("*.yaml"))
LAUNCH = ["start", "/mnt/models", "--http-port", "8080", "--grpc-port", "8081", "--metrics-port", "8082"]
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=Loader)


def strict(schema):
    """A copy of a structural schema in which objects with named properties allow no other fields,
    unless the schema keeps unknown fields (`x-kubernetes-preserve-unknown-fields`)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@lru_cache(maxsize=None)
def _crds() -> dict:
    found = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = _load(path)
        assert crd["kind"] == "CustomResourceDefinition", path
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                found[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return found


@lru_cache(maxsize=None)
def _validator(api_version: str, kind: str):
    schema = _crds().get((api_version, kind))
    assert schema is not None, f"no vendored CRD serves {kind} at {api_version}"
    schema = strict(copy.deepcopy(schema))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def errors(doc: dict) -> list[str]:
    validator = _validator(doc["apiVersion"], doc["kind"])
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(doc)]


def _docs():
    return [(path.name, i, doc) for path in MANIFESTS
            for i, doc in enumerate(yaml.load_all(path.read_text(encoding="utf-8"), Loader=Loader)) if doc]


def _by_kind(kind: str) -> list[dict]:
    return [doc for _, _, doc in _docs() if doc["kind"] == kind]


def _runtime() -> dict:
    runtimes = [doc for doc in _by_kind("ClusterServingRuntime") if doc["metadata"]["name"] == "gpuserve"]
    assert len(runtimes) == 1
    return runtimes[0]


def test_crds_are_vendored_with_their_source():
    assert ("serving.kserve.io/v1alpha1", "ClusterServingRuntime") in _crds()
    assert ("serving.kserve.io/v1beta1", "InferenceService") in _crds()
    source = (CRDS / "SOURCE.md").read_text(encoding="utf-8")
    assert "kserve/kserve" in source and "Apache" in source
    for path in CRDS.glob("*.yaml"):
        assert path.name in source


@pytest.mark.parametrize("name,index,doc", _docs(), ids=lambda v: v if isinstance(v, str) else "")
def test_manifest_matches_kserve_crd(name, index, doc):
    assert doc["apiVersion"].startswith("serving.kserve.io/")
    assert errors(doc) == [], f"{name} document {index}"


def test_there_is_a_runtime_and_three_inference_services():
    _runtime()
    services = _by_kind("InferenceService")
    formats = {s["spec"]["predictor"]["model"]["modelFormat"]["name"] for s in services}
    protocols = {s["spec"]["predictor"]["model"]["protocolVersion"] for s in services}
    assert {"onnx", "pytorch"} <= formats
    assert {"v2", "grpc-v2"} <= protocols


def test_runtime_launches_gpuserve_on_the_kserve_model_mount():
    (container,) = _runtime()["spec"]["containers"]
    assert container["name"] == "kserve-container"
    assert container["command"] == ["gpuserve"]
    assert container["args"] == LAUNCH
    assert container["image"]


def test_runtime_formats_protocols_and_gpu():
    spec = _runtime()["spec"]
    formats = {f["name"]: f for f in spec["supportedModelFormats"]}
    assert set(formats) == {"onnx", "pytorch", "tensorrt"}
    assert all(f["autoSelect"] is True and isinstance(f["priority"], int) for f in formats.values())
    assert spec["protocolVersions"] == ["v1", "v2", "grpc-v2"]
    (container,) = spec["containers"]
    for section in ("requests", "limits"):
        assert str(container["resources"][section]["nvidia.com/gpu"]) == "1"


def test_runtime_ports_probe_and_metrics():
    spec = _runtime()["spec"]
    (container,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http1": 8080, "h2c": 8081}
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == "/v2/health/ready" and probe["port"] == 8080
    assert spec["annotations"]["prometheus.kserve.io/port"] == "8082"
    assert spec["annotations"]["prometheus.io/port"] == "8082"
    assert spec["annotations"]["prometheus.io/scrape"] == "true"


def test_inference_services_use_the_runtime():
    for service in _by_kind("InferenceService"):
        model = service["spec"]["predictor"]["model"]
        assert model["runtime"] == "gpuserve"
        assert model["storageUri"].startswith(("s3://", "gs://"))
        assert model["protocolVersion"] in _runtime()["spec"]["protocolVersions"]
        assert model["modelFormat"]["name"] in {f["name"] for f in _runtime()["spec"]["supportedModelFormats"]}
        if model["protocolVersion"] == "grpc-v2":
            assert [p["name"] for p in model["ports"]] == ["h2c"]


def _onnx_service() -> dict:
    (service,) = [s for s in _by_kind("InferenceService") if s["metadata"]["name"] == "resnet-onnx"]
    return copy.deepcopy(service)


def test_a_misspelt_field_fails():
    service = _onnx_service()
    model = service["spec"]["predictor"]["model"]
    model["runtme"] = model.pop("runtime")
    assert any("runtme" in e for e in errors(service))


def test_a_misspelt_runtime_field_fails():
    runtime = copy.deepcopy(_runtime())
    runtime["spec"]["supportedModelFormats"][0]["autoselect"] = True
    assert any("autoselect" in e for e in errors(runtime))


def test_a_wrong_type_fails():
    service = _onnx_service()
    service["spec"]["predictor"]["minReplicas"] = "two"
    assert any(e.startswith("spec.predictor.minReplicas") for e in errors(service))
    runtime = copy.deepcopy(_runtime())
    runtime["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    assert any("containerPort" in e for e in errors(runtime))


def test_strict_keeps_fields_that_kubernetes_keeps():
    schema = strict({"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {}},
                                                             "x-kubernetes-preserve-unknown-fields": True}}})
    validator = jsonschema.Draft7Validator(schema)
    assert validator.is_valid({"a": {"b": 1, "c": 2}})
    assert not validator.is_valid({"a": {}, "z": 1})
