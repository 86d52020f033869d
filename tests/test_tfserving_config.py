"""TensorFlow Serving's model config file on gpuserve (gpuserve/tfserving_config.py): a repository folder holding
`models.config` serves the models it lists with their version policies (latest N, all, specific) and version
labels, which TFServing's own client (tensorflow-serving-api) and its REST paths (`/labels/LABEL`) reach, on both
gRPC transports. Skipped without tensorflow-serving-api."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_serving.apis")
httpx = pytest.importorskip("httpx")

import grpc  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

import tf_models  # noqa: E402
from conftest import running_server  # noqa: E402
from gpuserve import ModelRepository  # noqa: E402
from gpuserve.repository import DiskRepository  # noqa: E402
from gpuserve.tfserving_config import parse  # noqa: E402

X = np.arange(8, dtype=np.float32).reshape(2, 4)


def _config(newest: str) -> str:
    return f'''
# TFServing's ModelServerConfig, as --model_config_file reads it
model_config_list {{
  config {{
    name: "scaled"
    base_path: "scaled"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 3 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 3 }}
    version_labels {{ key: "gone" value: 2 }}
    logging_config {{ sampling_config {{ sampling_rate: 0.1 }} }}
  }}
  config {{
    name: "newest"
    base_path: "{newest}"
    model_version_policy {{ latest {{ num_versions: 2 }} }}
  }}
  config {{ name: "everything" base_path: "scaled" model_version_policy {{ all {{}} }} }}
}}
'''


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfs-config")
    elsewhere = tmp_path_factory.mktemp("tfs-elsewhere")  # an absolute base_path outside the folder
    for version in (1, 2, 3):
        tf_models.scaled_savedmodel(root / "scaled" / str(version), float(version))
        tf_models.scaled_savedmodel(elsewhere / "newest" / str(version), 10.0 * version)
    (root / "models.config").write_text(_config(str(elsewhere / "newest")))
    return root


def test_policies_and_labels_as_listed(repo):
    found = DiskRepository(repo).scan()
    versions = {name: sorted(s.parameters.version for s in found[name]) for name in ("scaled", "newest", "everything")}
    assert versions == {"scaled": ["1", "3"], "newest": ["2", "3"], "everything": ["1", "2", "3"]}
    labels = found["scaled"][0].parameters.extra["tfserving"]["version_labels"]
    assert labels == {"stable": 1, "canary": 3}  # "gone" names a version not served: refused, as TFServing
    assert set(found) == {"scaled", "newest", "everything"}  # the base folder is no model of its own besides


def test_a_broken_config_is_one_model_saying_why(tmp_path):
    (tmp_path / "models.config").write_text("model_config_list { config { name: 'x' ")
    (broken,) = DiskRepository(tmp_path).scan().values()
    assert "models.config" in broken[0].model_extra["_broken"]
    assert parse('model_config_list { config { name: "a" base_path: "/m/a" } config { name: "b" } }')[1] == \
        {"name": "b"}
    # a config of the wrong types spoils its own model only
    (tmp_path / "models.config").write_text('model_config_list { config { name: "x" base_path: "." '
                                            'model_version_policy { specific { versions: "a" } } } '
                                            'config { name: "y" base_path: "." model_version_policy { latest { '
                                            'num_versions: [1] } } } config { name: "z" base_path: "." } }')
    found = DiskRepository(tmp_path).scan()
    assert all(found[n][0].model_extra.get("_broken") for n in "xyz"), found


@pytest.fixture(scope="module", params=["grpcio", "native"])
def server(request, repo):
    registry = DiskRepository(repo).populate(ModelRepository())
    with running_server(repository=registry, grpc_transport=request.param) as srv:
        yield srv


def _predict(server, name, version=None, label=None):
    with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
        ask = predict_pb2.PredictRequest()
        ask.model_spec.name = name
        if version is not None:
            ask.model_spec.version.value = version
        if label is not None:
            ask.model_spec.version_label = label
        ask.inputs["x"].CopyFrom(tf.make_tensor_proto(X))
        answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(ask, timeout=60)
        return tf.make_ndarray(answer.outputs["y"]), answer.model_spec.version.value


def test_versions_and_labels_over_grpc(server):
    for label, factor in (("stable", 1.0), ("canary", 3.0)):
        y, version = _predict(server, "scaled", label=label)
        np.testing.assert_allclose(y, X * factor)
        assert version == int(factor)
    y, version = _predict(server, "scaled")  # no version: the latest one served
    np.testing.assert_allclose(y, X * 3.0)
    y, version = _predict(server, "newest", version=2)
    np.testing.assert_allclose(y, X * 20.0)
    for kwargs, code, words in (({"version": 2}, grpc.StatusCode.NOT_FOUND, "Servable not found"),
                                ({"label": "gone"}, grpc.StatusCode.INVALID_ARGUMENT,
                                 "Unrecognized servable version label: gone")):
        with pytest.raises(grpc.RpcError) as failed:
            _predict(server, "scaled", **kwargs)
        assert failed.value.code() == code and words in failed.value.details()


def test_labels_over_rest(server):
    base = f"http://127.0.0.1:{server.ports['http']}"
    answer = httpx.post(f"{base}/v1/models/scaled/labels/canary:predict", json={"instances": X.tolist()})
    assert answer.status_code == 200
    np.testing.assert_allclose(answer.json()["predictions"], X * 3.0)
    status = httpx.get(f"{base}/v1/models/scaled/labels/stable").json()["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [("1", "AVAILABLE")]
    assert httpx.get(f"{base}/v1/models/scaled/labels/stable/metadata").json()["model_spec"]["version"] == "1"
    refused = httpx.post(f"{base}/v1/models/scaled/labels/nope:predict", json={"instances": X.tolist()})
    assert refused.status_code == 400 and "Unrecognized servable version label: nope" in refused.json()["error"]
    assert httpx.get(f"{base}/v2/models/scaled/versions/2/ready").status_code != 200
