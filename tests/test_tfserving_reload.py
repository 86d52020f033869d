"""TensorFlow Serving's HandleReloadConfigRequest on gpuserve (server/tfserving_reload.py), driven by TFServing's own
client (tensorflow-serving-api's ModelServiceStub) on both gRPC transports: a new model_config_list adds models and
versions, moves version labels without a reload, unloads the models it no longer names and leaves models of other
forms serving; a list TFServing refuses changes nothing and is refused with TFServing's code and words. Skipped
without tensorflow-serving-api."""

from __future__ import annotations

import time

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_serving.apis")

import grpc  # noqa: E402
from tensorflow_serving.apis import (model_management_pb2, model_service_pb2_grpc, predict_pb2,  # noqa: E402
                                     prediction_service_pb2_grpc)
from tensorflow_serving.config import model_server_config_pb2  # noqa: E402

import tf_models  # noqa: E402
from conftest import make_onnx_model, running_server  # noqa: E402
from gpuserve import ModelRepository  # noqa: E402
from gpuserve.repository import DiskRepository  # noqa: E402

X = np.arange(8, dtype=np.float32).reshape(2, 4)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfs-reload")
    elsewhere = tmp_path_factory.mktemp("tfs-reload-elsewhere")
    for version in (1, 3):
        tf_models.scaled_savedmodel(root / "scaled" / str(version), float(version))
    tf_models.scaled_savedmodel(elsewhere / "other" / "1", 10.0)
    (elsewhere / "empty").mkdir()
    (root / "lin" / "1").mkdir(parents=True)
    make_onnx_model(root / "lin" / "1" / "model.onnx")  # a Triton model beside the TFServing ones
    (root / "lin" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\nmax_batch_size: 8\n')
    (root / "models.config").write_text('model_config_list { config { name: "scaled" base_path: "scaled" '
                                        'model_platform: "tensorflow" model_version_policy { specific { versions: 1 '
                                        '} } version_labels { key: "stable" value: 1 } } }')
    return root, elsewhere


@pytest.fixture(params=["grpcio", "native"])
def server(request, folders):
    root, _ = folders
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry, grpc_transport=request.param) as srv:
        srv.registry = registry
        with grpc.insecure_channel(f"127.0.0.1:{srv.ports['grpc']}") as channel:
            srv.models = model_service_pb2_grpc.ModelServiceStub(channel)
            srv.predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            yield srv


def _config(*models):
    """A ReloadConfigRequest listing (name, base_path, policy versions or None for latest, labels[, platform])."""
    request = model_management_pb2.ReloadConfigRequest()
    for name, path, versions, labels, *platform in models:
        config = request.config.model_config_list.config.add(name=name, base_path=str(path))
        config.model_platform = platform[0] if platform else "tensorflow"
        if versions:
            config.model_version_policy.specific.versions.extend(versions)
        for label, version in labels.items():
            config.version_labels[label] = version
    return request


def _predict(server, name, version=None, label=None):
    ask = predict_pb2.PredictRequest()
    ask.model_spec.name = name
    if version is not None:
        ask.model_spec.version.value = version
    if label is not None:
        ask.model_spec.version_label = label
    ask.inputs["x"].CopyFrom(tf.make_tensor_proto(X))
    answer = server.predict.Predict(ask, timeout=60)
    return float(tf.make_ndarray(answer.outputs["y"])[0, 1]), answer.model_spec.version.value


def _refused(server, request, code, words):
    with pytest.raises(grpc.RpcError) as failed:
        server.models.HandleReloadConfigRequest(request, timeout=120)
    assert failed.value.code() == code, failed.value.details()
    assert words in failed.value.details(), failed.value.details()


def test_a_new_list_adds_moves_labels_and_unloads(server, folders):
    root, elsewhere = folders
    scaled, other = root / "scaled", elsewhere / "other"
    assert _predict(server, "scaled", label="stable") == (1.0, 1)
    answer = server.models.HandleReloadConfigRequest(
        _config(("scaled", scaled, [1, 3], {"stable": 1}), ("other", other, None, {})), timeout=120)
    assert answer.status.error_code == 0 and not answer.status.error_message
    assert _predict(server, "scaled") == (3.0, 3)  # version 3 added; the latest serves
    assert _predict(server, "scaled", version=1) == (1.0, 1)
    assert _predict(server, "other") == (10.0, 1)

    kept = server.registry.versions("scaled")["3"]
    server.models.HandleReloadConfigRequest(
        _config(("scaled", scaled, [1, 3], {"stable": 3}), ("other", other, None, {})), timeout=120)
    assert _predict(server, "scaled", label="stable") == (3.0, 3)  # the label moved
    assert server.registry.versions("scaled")["3"] is kept  # without a reload

    server.models.HandleReloadConfigRequest(_config(("other", other, None, {})), timeout=120)
    with pytest.raises(grpc.RpcError) as gone:
        _predict(server, "scaled")
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    assert _predict(server, "other") == (10.0, 1)
    lin = predict_pb2.PredictRequest()  # the Triton model is no TFServing list's: it still serves
    lin.model_spec.name = "lin"
    lin.inputs["input"].CopyFrom(tf.make_tensor_proto(X))
    assert tf.make_ndarray(server.predict.Predict(lin, timeout=60).outputs["output"]).shape == (2, 3)


def test_lists_tfserving_refuses_change_nothing(server, folders):
    root, elsewhere = folders
    scaled, other = root / "scaled", elsewhere / "other"
    invalid, failed = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION
    _refused(server, _config(("other", other, None, {}), ("other", other, None, {})), invalid,
             "Illegal to list model other multiple times in config list")
    _refused(server, _config(("other", "other", None, {})), invalid,
             "Expected model other to have an absolute path or URI; got base_path()=other")
    _refused(server, _config(("other", other, None, {}, "")), invalid,
             "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
             "ModelServerConfig::model_platform, model name is other")
    _refused(server, _config(("scaled", scaled, [1], {}, "onnx")), invalid,
             "Illegal to change a model's platform. For model scaled platform was tensorflow and new platform "
             "requested is onnx")
    _refused(server, _config(("scaled", scaled, [1, 3], {"canary": 3})), failed,
             "Request to assign label to version 3 of model scaled, which is not currently available for inference")
    custom = model_management_pb2.ReloadConfigRequest(
        config=model_server_config_pb2.ModelServerConfig(custom_model_config={"type_url": "x/y"}))
    _refused(server, custom, invalid, "Only ModelConfigList is currently supported")
    _refused(server, model_management_pb2.ReloadConfigRequest(), invalid,
             "Only ModelConfigList is currently supported")
    assert _predict(server, "scaled", label="stable") == (1.0, 1)  # nothing changed
    with pytest.raises(grpc.RpcError):
        _predict(server, "other")


def test_a_model_that_does_not_load_answers_unknown_and_the_rest_serve(server, folders):
    root, elsewhere = folders
    _refused(server, _config(("scaled", root / "scaled", [1], {"stable": 1}), ("empty", elsewhere / "empty", None, {})),
             grpc.StatusCode.UNKNOWN, "1 model(s) did not become available: {{{name: empty version: 0} due to error: ")
    assert _predict(server, "scaled", label="stable") == (1.0, 1)



def test_a_polled_repository_does_not_load_what_a_reload_loaded(folders):
    """tensorflow_model_server polls its repository (gpuserve/tfserving_cli.py): the models a reload added are the
    poll's baseline, not changes it loads a second time."""
    root, elsewhere = folders
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry, repository_poll_seconds=0.2) as server:
        with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            stub.HandleReloadConfigRequest(_config(("scaled", root / "scaled", [1], {}),
                                                   ("other", elsewhere / "other", None, {})), timeout=120)
            loaded = registry.versions("other")["1"]
            time.sleep(1.0)  # five polls
            assert registry.versions("other")["1"] is loaded
