"""TensorFlow Serving's API on gpuserve: its gRPC services (tensorflow.serving.PredictionService and
ModelService) on the gRPC port, driven by TFServing's own Python client (tensorflow-serving-api) and by
perf_analyzer's `--service-kind tfserving`, on both gRPC transports: TensorFlow SavedModels in TFServing's
folder layout and ONNX models in a Triton repository, answers compared with TensorFlow's and NumPy's, errors
in TFServing's codes and words; and its REST status, metadata and versioned predict routes beside KServe's V1.
Skipped where tensorflow-serving-api (it needs tensorflow) is not installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_serving.apis")

import grpc  # noqa: E402
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2  # noqa: E402
from tensorflow.core.protobuf import meta_graph_pb2  # noqa: E402
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_pb2,  # noqa: E402
                                     model_service_pb2, model_service_pb2_grpc, predict_pb2, prediction_service_pb2,
                                     prediction_service_pb2_grpc, status_pb2)

import tf_models  # noqa: E402
from conftest import make_onnx_model, one_op_onnx, running_server  # noqa: E402
from simple_models import build_simple_models  # noqa: E402
from gpuserve import ModelRepository  # noqa: E402
from gpuserve.repository import DiskRepository  # noqa: E402

BESIDE = Path(sys.executable).parent / "perf_analyzer"
WIDE = 1 << 16  # a row of 256 KiB: eight are a message the native transport receives as a view
PERF_ANALYZER = shutil.which("perf_analyzer") or (str(BESIDE) if BESIDE.exists() else None)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfs-repo")
    refs = {}
    (root / "pair" / "1").mkdir(parents=True)  # TFServing's layout: NAME/VERSION/saved_model.pb
    refs["pair"] = tf_models.two_io_savedmodel(root / "pair" / "1")
    (root / "pair" / "2").mkdir()
    refs["pair2"] = tf_models.two_io_savedmodel(root / "pair" / "2")
    (root / "words" / "3").mkdir(parents=True)
    refs["words"] = tf_models.strings_savedmodel(root / "words" / "3")
    (root / "lin" / "1").mkdir(parents=True)  # an ONNX model in a Triton repository
    refs["lin"] = make_onnx_model(root / "lin" / "1" / "model.onnx")
    (root / "lin" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
                                               'dynamic_batching { max_queue_delay_microseconds: 100000 }\n')
    build_simple_models(root)  # `simple` (two outputs) and `strings` (BYTES and INT32)
    (root / "wide" / "1").mkdir(parents=True)
    one_op_onnx(root / "wide" / "1" / "model.onnx", "Relu", ["x"], "y", width=WIDE)
    (root / "wide" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\nmax_batch_size: 8\n')
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx model")
    (root / "broken" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\n')
    return root, refs


@pytest.fixture(scope="module", params=["grpcio", "native"])
def server(request, repo):
    root, refs = repo
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry, grpc_transport=request.param) as srv:
        srv.refs = refs
        yield srv


@pytest.fixture
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
        yield channel


@pytest.fixture
def predict(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _request(name, signature="", **inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if signature:
        request.model_spec.signature_name = signature
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(value if isinstance(value, tensor_pb2.TensorProto)
                                       else tf.make_tensor_proto(value))
    return request


def _refused(call, request, code, words):
    with pytest.raises(grpc.RpcError) as failed:
        call(request, timeout=30)
    assert failed.value.code() == code, failed.value.details()
    assert failed.value.details() == words if not words.endswith("...") else \
        failed.value.details().startswith(words[:-3])


def test_predict_savedmodel_in_tfserving_layout_answers_as_tensorflow(server, predict):
    a = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    b = np.arange(12, dtype=np.int64).reshape(3, 4)
    answer = predict.Predict(_request("pair", a=a, b=b), timeout=30)
    direct = server.refs["pair2"].serve(tf.constant(a), tf.constant(b))  # the latest version serves
    assert sorted(answer.outputs) == ["prod", "sum"]
    np.testing.assert_allclose(tf.make_ndarray(answer.outputs["sum"]), direct["sum"].numpy(), rtol=1e-6)
    np.testing.assert_array_equal(tf.make_ndarray(answer.outputs["prod"]), direct["prod"].numpy())
    assert answer.outputs["sum"].float_val  # typed fields, as TFServing answers by default
    assert (answer.model_spec.name, answer.model_spec.version.value,
            answer.model_spec.signature_name) == ("pair", 2, "serving_default")


def test_another_signature_of_the_savedmodel_answers_unbatched(server, predict):
    """TFServing serves every signature of a SavedModel; the served (batched) one is serving_default here."""
    a = np.random.default_rng(5).normal(size=(2, 4)).astype(np.float32)
    answer = predict.Predict(_request("pair", "double", a=a), timeout=30)
    assert answer.model_spec.signature_name == "double" and list(answer.outputs) == ["twice_a"]
    np.testing.assert_allclose(tf.make_ndarray(answer.outputs["twice_a"]),
                               server.refs["pair2"].double(tf.constant(a))["twice_a"].numpy())
    _refused(predict.Predict, _request("pair", "double", a=a, b=np.ones((2, 4), np.int64)),
             grpc.StatusCode.INVALID_ARGUMENT, "input size does not match signature: 2!=1 len({a,b}) != len({a}). "
             "Sent extra: {b}. Missing but required: {}.")
    _refused(predict.Predict, _request("pair", "double", a=np.ones((2, 5), np.float32)),
             grpc.StatusCode.INVALID_ARGUMENT, "signature 'double' of model 'pair': ...")
    _refused(predict.Predict, _request("pair", "triple", a=a), grpc.StatusCode.FAILED_PRECONDITION,
             'Serving signature key "triple" not found.')


def test_predict_a_specific_version_and_a_numeric_label(server, predict):
    """TFServing's default version policy serves the latest version only, as Triton's: version 1 is on disk
    and not served."""
    request = _request("pair", a=np.ones((1, 4), np.float32), b=np.ones((1, 4), np.int64))
    request.model_spec.version.value = 2
    assert predict.Predict(request, timeout=30).model_spec.version.value == 2
    request.model_spec.version_label = "2"  # perf_analyzer's -x
    assert predict.Predict(request, timeout=30).model_spec.version.value == 2
    request.model_spec.version.value = 1
    _refused(predict.Predict, request, grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(pair, 1)")
    request.model_spec.version_label = "stable"
    _refused(predict.Predict, request, grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: stable")


def test_predict_onnx_model_with_typed_values_and_tensorflows_short_form(server, predict):
    weight, bias = server.refs["lin"]
    rows = np.random.default_rng(1).normal(size=(2, 4)).astype(np.float32)
    tensor = tensor_pb2.TensorProto(dtype=tf.float32.as_datatype_enum)
    tensor.tensor_shape.dim.add(size=2)
    tensor.tensor_shape.dim.add(size=4)
    tensor.float_val.extend(rows.ravel().tolist())
    answer = predict.Predict(_request("lin", input=tensor), timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(answer.outputs["output"]), np.maximum(rows @ weight + bias, 0),
                               rtol=1e-5, atol=1e-6)
    del tensor.float_val[1:]  # one value for 8 elements: TensorFlow repeats the last
    answer = predict.Predict(_request("lin", input=tensor), timeout=30)
    same = np.full((2, 4), rows.ravel()[0], np.float32)
    np.testing.assert_allclose(tf.make_ndarray(answer.outputs["output"]), np.maximum(same @ weight + bias, 0),
                               rtol=1e-5, atol=1e-6)


def test_a_large_request_is_read_as_a_predict_request(server, predict):
    """A message over VIEW_BYTES is received into a buffer of its own on the native transport (server/grpc/large.py),
    a path small messages never take."""
    rows = np.random.default_rng(2).normal(size=(8, WIDE)).astype(np.float32)
    answer = predict.Predict(_request("wide", x=rows), timeout=60)
    np.testing.assert_array_equal(tf.make_ndarray(answer.outputs["y"]), np.maximum(rows, 0))


def test_output_filter_and_its_errors(server, predict):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    request = _request("simple", INPUT0=x)
    answer = predict.Predict(request, timeout=30)
    assert sorted(answer.outputs) == ["OUTPUT0", "OUTPUT1"]
    request.output_filter.append("OUTPUT1")
    answer = predict.Predict(request, timeout=30)
    assert list(answer.outputs) == ["OUTPUT1"]
    np.testing.assert_array_equal(tf.make_ndarray(answer.outputs["OUTPUT1"]), x + 1)
    request.output_filter.append("OUTPUT1")
    _refused(predict.Predict, request, grpc.StatusCode.INVALID_ARGUMENT, "duplicate output tensor alias: OUTPUT1")
    del request.output_filter[:]
    request.output_filter.append("nope")
    _refused(predict.Predict, request, grpc.StatusCode.INVALID_ARGUMENT,
             "output tensor alias not found in signature: nope Outputs expected to be in the set {OUTPUT0,OUTPUT1}.")


def test_strings_in_and_out(server, predict):
    text = np.array([b"abc", "\u00e9t\u00e9".encode()], dtype=object)
    answer = predict.Predict(_request("words", text=text), timeout=30)
    direct = server.refs["words"].serve(tf.constant(text))
    assert list(answer.outputs["upper"].string_val) == list(direct["upper"].numpy())
    assert list(tf.make_ndarray(answer.outputs["length"])) == [3, len("\u00e9t\u00e9".encode())]
    assert answer.model_spec.version.value == 3
    answer = predict.Predict(_request("strings", TEXT=np.array([[b"x"], [b"yz"]], dtype=object),
                                      COUNT=np.array([[1], [5]], np.int32)), timeout=30)
    assert list(answer.outputs["TEXT_OUT"].string_val) == [b"x", b"yz"]
    assert list(answer.outputs["COUNT_OUT"].int_val) == [2, 6]


def test_bad_requests_get_tfservings_codes_and_the_server_keeps_serving(server, predict):
    x = np.ones((1, 4), np.float32)
    _refused(predict.Predict, _request("nope", input=x), grpc.StatusCode.NOT_FOUND,
             "Servable not found for request: Latest(nope)")
    _refused(predict.Predict, _request("broken", input=x), grpc.StatusCode.NOT_FOUND,
             "Servable not found for request: Latest(broken)")
    _refused(predict.Predict, _request("lin", "classify", input=x), grpc.StatusCode.FAILED_PRECONDITION,
             'Serving signature key "classify" not found.')
    _refused(predict.Predict, _request("pair", a=x), grpc.StatusCode.INVALID_ARGUMENT,
             "input size does not match signature: 1!=2 len({a}) != len({a,b}). Sent extra: {}. "
             "Missing but required: {b}.")
    _refused(predict.Predict, _request("lin", x=x), grpc.StatusCode.INVALID_ARGUMENT,
             "input tensor alias not found in signature: x. Inputs expected to be in the set {input}.")
    short = tf.make_tensor_proto(x)
    short.tensor_content = short.tensor_content[:-4]
    _refused(predict.Predict, _request("lin", input=short), grpc.StatusCode.INVALID_ARGUMENT,
             "tensor parsing error: input (...")
    complex_values = tf.make_tensor_proto(np.ones((1, 4), np.complex64))
    _refused(predict.Predict, _request("lin", input=complex_values), grpc.StatusCode.INVALID_ARGUMENT,
             "tensor parsing error: input (gpuserve does not serve DT_COMPLEX64 tensors)")
    _refused(predict.Predict, _request("lin", input=np.ones((1, 4), np.float64)), grpc.StatusCode.INVALID_ARGUMENT,
             "...")
    _refused(predict.Predict, _request("lin", input=np.ones((1, 5), np.float32)), grpc.StatusCode.INVALID_ARGUMENT,
             "...")
    assert predict.Predict(_request("lin", input=x), timeout=30).outputs["output"].float_val


def test_model_metadata_is_a_signature_def_map(server, predict):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "pair"
    request.metadata_field.append("signature_def")
    answer = predict.GetModelMetadata(request, timeout=30)
    assert (answer.model_spec.name, answer.model_spec.version.value) == ("pair", 2)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert answer.metadata["signature_def"].Unpack(signatures)  # the Any's type is SignatureDefMap
    signature = signatures.signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    assert {k: (v.dtype, [d.size for d in v.tensor_shape.dim]) for k, v in signature.inputs.items()} == \
        {"a": (tf.float32.as_datatype_enum, [-1, 4]), "b": (tf.int64.as_datatype_enum, [-1, 4])}
    assert sorted(signature.outputs) == ["prod", "sum"]
    assert sorted(signatures.signature_def) == ["double", "serving_default"]  # every signature, as TFServing
    assert list(signatures.signature_def["double"].outputs) == ["twice_a"]
    request.model_spec.name = "words"
    signatures.ParseFromString(predict.GetModelMetadata(request, timeout=30).metadata["signature_def"].value)
    assert signatures.signature_def["serving_default"].inputs["text"].dtype == tf.string.as_datatype_enum
    del request.metadata_field[:]
    _refused(predict.GetModelMetadata, request, grpc.StatusCode.INVALID_ARGUMENT,
             "GetModelMetadataRequest must specify at least one metadata_field")
    request.metadata_field.append("graph")
    _refused(predict.GetModelMetadata, request, grpc.StatusCode.INVALID_ARGUMENT,
             "Metadata field graph is not supported")
    _refused(predict.GetModelMetadata, get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"]),
             grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


def test_model_status_lists_versions_and_a_failed_load(server, channel):
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    state = get_model_status_pb2.ModelVersionStatus
    status = models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "pair"}), timeout=30)
    assert [(v.version, v.state, v.status.error_code) for v in status.model_version_status] == \
        [(2, state.AVAILABLE, 0)]
    request = get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "pair"})
    request.model_spec.version.value = 2
    assert [v.version for v in models.GetModelStatus(request, timeout=30).model_version_status] == [2]
    request.model_spec.version.value = 5
    _refused(models.GetModelStatus, request, grpc.StatusCode.NOT_FOUND, "Could not find version 5 of model pair")
    broken = models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "broken"}),
                                   timeout=30).model_version_status
    assert [(v.version, v.state) for v in broken] == [(1, state.END)]
    assert broken[0].status.error_code == 2 and broken[0].status.error_message
    _refused(models.GetModelStatus, get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "nope"}),
             grpc.StatusCode.NOT_FOUND, "Could not find any versions of model nope")


def test_concurrent_predicts_are_batched_and_each_gets_its_rows(server, predict):
    weight, bias = server.refs["lin"]
    rows = [np.random.default_rng(i).normal(size=(1, 4)).astype(np.float32) for i in range(8)]
    answers = [None] * len(rows)
    futures = [predict.Predict.future(_request("lin", input=row), timeout=30) for row in rows]
    for i, future in enumerate(futures):
        answers[i] = tf.make_ndarray(future.result().outputs["output"])
    for row, answer in zip(rows, answers):
        np.testing.assert_allclose(answer, np.maximum(row @ weight + bias, 0), rtol=1e-5, atol=1e-6)
    stats = server.dataplane.statistics("lin")["model_stats"][0]
    assert int(stats["inference_count"]) >= len(rows) > int(stats["execution_count"])  # several rows a run


@pytest.mark.parametrize("transport", ["grpcio", "native"])
def test_restricted_inference_covers_predict(repo, transport):
    """Triton's --grpc-restricted-protocol groups hold TFServing's RPCs too: Predict is inference."""
    registry = DiskRepository(repo[0]).populate(ModelRepository())
    with running_server(repository=registry, grpc_transport=transport,
                        grpc_restricted_protocol=["inference:infer-key=infer-value"]) as srv, \
            grpc.insecure_channel(f"127.0.0.1:{srv.ports['grpc']}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = _request("lin", input=np.ones((1, 4), np.float32))
        _refused(stub.Predict, request, grpc.StatusCode.UNAVAILABLE,
                 "This protocol is restricted, expecting header 'triton-grpc-protocol-infer-key'")
        answer = stub.Predict(request, timeout=30, metadata=(("triton-grpc-protocol-infer-key", "infer-value"),))
        assert answer.outputs["output"].float_val
        metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        metadata.model_spec.name = "lin"
        assert stub.GetModelMetadata(metadata, timeout=30).model_spec.name == "lin"  # metadata: not restricted


@pytest.mark.skipif(PERF_ANALYZER is None, reason="perf_analyzer is not installed")
def test_perf_analyzer_service_kind_tfserving(server):
    run = subprocess.run([PERF_ANALYZER, "-m", "pair", "--service-kind", "tfserving", "-i", "grpc",
                          "-u", f"127.0.0.1:{server.ports['grpc']}", "-b", "2", "--measurement-interval", "300",
                          "--stability-percentage", "999", "--max-trials", "3", "--concurrency-range", "2"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Concurrency: 2, throughput:" in run.stdout


def test_our_messages_have_tensorflow_servings_field_numbers():
    """Every field gpuserve's tfserving.proto declares has the number and wire type of the real one."""
    from google.protobuf import descriptor
    from tensorflow.core.example import example_pb2, feature_pb2
    from tensorflow_serving.apis import classification_pb2, inference_pb2, input_pb2, model_management_pb2
    from tensorflow_serving.apis import regression_pb2
    from tensorflow_serving.config import file_system_storage_path_source_pb2 as storage
    from tensorflow_serving.config import model_server_config_pb2

    from gpuserve.server.grpc import tfserving_pb2 as ours

    real = {"TensorProto": tensor_pb2.TensorProto,
            "TensorShapeProto": tensor_shape_pb2.TensorShapeProto,
            "ModelSpec": model_pb2.ModelSpec, "PredictRequest": predict_pb2.PredictRequest,
            "PredictResponse": predict_pb2.PredictResponse,
            "TensorInfo": meta_graph_pb2.TensorInfo,
            "SignatureDef": meta_graph_pb2.SignatureDef,
            "SignatureDefMap": get_model_metadata_pb2.SignatureDefMap,
            "GetModelMetadataRequest": get_model_metadata_pb2.GetModelMetadataRequest,
            "GetModelMetadataResponse": get_model_metadata_pb2.GetModelMetadataResponse,
            "GetModelStatusRequest": get_model_status_pb2.GetModelStatusRequest,
            "GetModelStatusResponse": get_model_status_pb2.GetModelStatusResponse,
            "ModelVersionStatus": get_model_status_pb2.ModelVersionStatus,
            "StatusProto": status_pb2.StatusProto,
            # HandleReloadConfigRequest's (tests/test_tfserving_reload.py) and Classify's, Regress's and
            # MultiInference's (tests/test_tfserving_classify.py)
            "ReloadConfigRequest": model_management_pb2.ReloadConfigRequest,
            "ReloadConfigResponse": model_management_pb2.ReloadConfigResponse,
            "Metric": model_management_pb2.Metric, "ModelServerConfig": model_server_config_pb2.ModelServerConfig,
            "ModelConfigList": model_server_config_pb2.ModelConfigList,
            "ModelConfig": model_server_config_pb2.ModelConfig,
            "ServableVersionPolicy": storage.FileSystemStoragePathSourceConfig.ServableVersionPolicy,
            "BytesList": feature_pb2.BytesList, "FloatList": feature_pb2.FloatList, "Int64List": feature_pb2.Int64List,
            "Feature": feature_pb2.Feature, "Features": feature_pb2.Features, "Example": example_pb2.Example,
            "ExampleList": input_pb2.ExampleList, "ExampleListWithContext": input_pb2.ExampleListWithContext,
            "Input": input_pb2.Input, "Class": classification_pb2.Class,
            "Classifications": classification_pb2.Classifications,
            "ClassificationResult": classification_pb2.ClassificationResult,
            "ClassificationRequest": classification_pb2.ClassificationRequest,
            "ClassificationResponse": classification_pb2.ClassificationResponse,
            "Regression": regression_pb2.Regression, "RegressionResult": regression_pb2.RegressionResult,
            "RegressionRequest": regression_pb2.RegressionRequest,
            "RegressionResponse": regression_pb2.RegressionResponse, "InferenceTask": inference_pb2.InferenceTask,
            "InferenceResult": inference_pb2.InferenceResult,
            "MultiInferenceRequest": inference_pb2.MultiInferenceRequest,
            "MultiInferenceResponse": inference_pb2.MultiInferenceResponse}
    enum = descriptor.FieldDescriptor.TYPE_ENUM
    for name, theirs in real.items():
        mine = getattr(ours, name).DESCRIPTOR
        for field in mine.fields:
            other = theirs.DESCRIPTOR.fields_by_name[field.name]
            assert field.number == other.number, (name, field.name)
            same_wire = field.type == other.type or {field.type, other.type} <= {enum, field.TYPE_INT32}
            assert same_wire and field.label == other.label, (name, field.name)
    assert {v.name: v.number for v in ours.DataType.DESCRIPTOR.values} == \
        {v.name: v.number for v in types_pb2.DataType.DESCRIPTOR.values if v.number <= 23}
    served = {s.full_name: [m.name for m in s.methods] for s in ours.DESCRIPTOR.services_by_name.values()}
    real_services = {**prediction_service_pb2.DESCRIPTOR.services_by_name,
                     **model_service_pb2.DESCRIPTOR.services_by_name}
    for service, methods in served.items():  # every RPC of both services, as TFServing's
        assert set(methods) == {m.name for m in real_services[service.rsplit(".", 1)[1]].methods}



# REST -----------------------------------------------------------------------------------------------------------

def _get(server, path):
    import httpx

    return httpx.get(f"http://127.0.0.1:{server.ports['http']}{path}", timeout=30)


def test_rest_status_metadata_and_versioned_predict(server):
    import httpx

    status = _get(server, "/v1/models/pair")
    assert status.status_code == 200
    assert status.json() == {"name": "pair", "ready": True, "model_version_status": [
        {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert _get(server, "/v1/models/lin").json() == {"name": "lin", "ready": True}  # KServe's, as it was
    assert _get(server, "/v1/models/pair/versions/2").json()["model_version_status"][0]["state"] == "AVAILABLE"
    broken = _get(server, "/v1/models/broken/versions/1").json()["model_version_status"][0]
    assert broken["state"] == "END" and broken["status"]["error_code"] == "UNKNOWN"
    assert broken["status"]["error_message"]
    missing = _get(server, "/v1/models/pair/versions/9")
    assert missing.status_code == 404 and missing.json() == {"error": "Could not find version 9 of model pair"}

    metadata = _get(server, "/v1/models/pair/metadata").json()
    assert metadata["model_spec"] == {"name": "pair", "signature_name": "", "version": "2"}
    signatures = metadata["metadata"]["signature_def"]
    assert signatures["@type"] == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    assert signatures["signature_def"]["serving_default"]["inputs"]["a"] == {
        "dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1", "name": ""}, {"size": "4", "name": ""}],
                                              "unknown_rank": False}, "name": "a"}
    assert _get(server, "/v1/models/lin/versions/1/metadata").json()["model_spec"]["version"] == "1"
    assert _get(server, "/v1/models/nope/metadata").status_code == 404

    a = np.ones((2, 4), np.float32)
    url = f"http://127.0.0.1:{server.ports['http']}/v1/models/pair/versions/2:predict"
    answer = httpx.post(url, json={"instances": [{"a": row.tolist(), "b": [1, 2, 3, 4]} for row in a]}, timeout=30)
    assert answer.status_code == 200, answer.text
    direct = server.refs["pair2"].serve(tf.constant(a), tf.constant(np.tile(np.arange(1, 5), (2, 1))))
    assert [p["prod"] for p in answer.json()["predictions"]] == direct["prod"].numpy().tolist()
    doubled = httpx.post(url, json={"signature_name": "double", "instances": a.tolist()}, timeout=30)
    assert doubled.status_code == 200, doubled.text
    assert doubled.json() == {"predictions": (a * 2).tolist()}
    refused = httpx.post(url.replace("/versions/2", "/versions/1"), json={"instances": []}, timeout=30)
    assert refused.status_code == 404
    assert refused.json() == {"error": "Servable not found for request: Specific(pair, 1)"}
