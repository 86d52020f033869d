"""TensorFlow Serving's Classify, Regress and MultiInference on gpuserve: a TF1-style SavedModel (tf.io.parse_example
over serialized tf.Examples, classification / regression / predict SignatureDefs, as Estimator exports have)
served from a models.config with two versions and labels, driven by TFServing's own client (tensorflow-serving-api)
over both gRPC transports and by TFServing's REST JSON (`:classify`, `:regress`); answers compared with
TensorFlow's own run of the same signature on the same examples, errors in TFServing's codes and words, an ONNX
model refused as having no classify signature. Skipped where tensorflow-serving-api is not installed."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_serving.apis")

import grpc  # noqa: E402
import httpx  # noqa: E402
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, inference_pb2,  # noqa: E402
                                     prediction_service_pb2_grpc, regression_pb2)

from conftest import make_onnx_model, running_server  # noqa: E402
from gpuserve import ModelRepository  # noqa: E402
from gpuserve.repository import DiskRepository  # noqa: E402

CLASSIFY, REGRESS = "tensorflow/serving/classify", "tensorflow/serving/regress"
LABELS = [b"cat", b"dog", b"eel"]
CONFIG = '''model_config_list {
  config { name: "census" base_path: "census" model_platform: "tensorflow"
           model_version_policy { specific { versions: 1 versions: 2 } }
           version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 } }
}
'''


def tf1_examples_savedmodel(path, factor: float) -> None:
    """A graph parsing tf.Examples (`x`: 2 floats, `k`: an int64 defaulting to 0, `word`: bytes defaulting to
    empty) with signatures serving_default (classify: classes and scores), classify_scores (scores only),
    regress, predict (a predict signature with a classify one's keys), and bad_scores (a classify signature whose
    scores are 1-D)."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        serialized = v1.placeholder(tf.string, shape=[None], name="tf_example")
        parsed = tf.io.parse_example(serialized, {
            "x": tf.io.FixedLenFeature([2], tf.float32),
            "k": tf.io.FixedLenFeature([1], tf.int64, default_value=[0]),
            "word": tf.io.FixedLenFeature([], tf.string, default_value="")})
        k = tf.cast(parsed["k"], tf.float32)
        weights = tf.constant([[1.0, -1.0, 0.5], [0.5, 2.0, -1.0]]) * factor
        logits = parsed["x"] @ weights + k + tf.cast(tf.strings.length(parsed["word"]), tf.float32)[:, None] * 0.25
        scores = tf.nn.softmax(logits)
        classes = tf.tile(tf.constant([LABELS]), [tf.shape(serialized)[0], 1])
        value = tf.reduce_sum(parsed["x"], axis=1) * factor + k[:, 0]
        info = v1.saved_model.build_tensor_info
        build = v1.saved_model.signature_def_utils.build_signature_def
        signatures = {
            "serving_default": v1.saved_model.classification_signature_def(serialized, classes, scores),
            "classify_scores": build({"inputs": info(serialized)}, {"scores": info(scores)}, CLASSIFY),
            "regress": v1.saved_model.regression_signature_def(serialized, value),
            "predict": v1.saved_model.predict_signature_def({"inputs": serialized}, {"scores": scores}),
            "bad_scores": build({"inputs": info(serialized)}, {"scores": info(tf.reduce_max(scores, axis=1))},
                                CLASSIFY)}
        with v1.Session(graph=graph) as session:
            builder = v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
            builder.save()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfs-classify")
    refs = {}
    for version in (1, 2):
        tf1_examples_savedmodel(root / "census" / str(version), float(version))
        refs[version] = tf.saved_model.load(str(root / "census" / str(version)))
    (root / "models.config").write_text(CONFIG)
    (root / "lin" / "1").mkdir(parents=True)  # an ONNX model beside them: no classify signature
    make_onnx_model(root / "lin" / "1" / "model.onnx")
    (root / "lin" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\nmax_batch_size: 8\n')
    return root, refs


@pytest.fixture(scope="module", params=["grpcio", "native"])
def server(request, repo):
    root, refs = repo
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry, grpc_transport=request.param) as srv:
        srv.refs = refs
        yield srv


@pytest.fixture
def stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _example(**features) -> tf.train.Example:
    example = tf.train.Example()
    for name, values in features.items():
        feature = example.features.feature[name]
        values = values if isinstance(values, list) else [values]
        if isinstance(values[0], bytes):
            feature.bytes_list.value.extend(values)
        elif isinstance(values[0], float):
            feature.float_list.value.extend(values)
        else:
            feature.int64_list.value.extend(values)
    return example


EXAMPLES = [_example(x=[1.0, 2.0]), _example(x=[-0.5, 0.25], k=3, word=b"hello"), _example(x=[0.0, 4.0], k=-1)]
CONTEXT = _example(k=2, word=b"ab")


def _merged(example: tf.train.Example) -> tf.train.Example:
    """What TFServing feeds for an example with a context: the context's features, the example's overriding."""
    merged = tf.train.Example()
    merged.CopyFrom(CONTEXT)
    merged.MergeFrom(example)
    return merged


def _direct(server, version: int, signature: str, examples) -> dict:
    """TensorFlow's own run of the signature on the serialized examples."""
    serialized = tf.constant([e.SerializeToString() for e in examples])
    return {k: v.numpy() for k, v in server.refs[version].signatures[signature](inputs=serialized).items()}


def _fill(request, examples=EXAMPLES, context=None):
    if context is None:
        request.input.example_list.examples.extend(examples)
    else:
        request.input.example_list_with_context.context.CopyFrom(context)
        request.input.example_list_with_context.examples.extend(examples)
    return request


def _classification(name="census", signature="", version=None, label="", **fill):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label:
        request.model_spec.version_label = label
    return _fill(request, **fill)


def _regression(name="census", signature="regress", **fill):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    return _fill(request, **fill)


def _refused(call, request, code, words):
    with pytest.raises(grpc.RpcError) as failed:
        call(request, timeout=30)
    assert failed.value.code() == code, failed.value.details()
    assert failed.value.details() == words if not words.endswith("...") else \
        failed.value.details().startswith(words[:-3]), failed.value.details()


def _rows(result):
    return [[(c.label.encode(), c.score) for c in row.classes] for row in result.classifications]


def _assert_classified(rows, direct, labels=True):
    assert len(rows) == len(direct["scores"])
    for row, scores, classes in zip(rows, direct["scores"], direct.get("classes", [None] * len(rows))):
        assert [label for label, _ in row] == (list(classes) if labels else [b""] * len(scores))
        np.testing.assert_allclose([score for _, score in row], scores, rtol=1e-6)


def test_classify_answers_as_tensorflow_runs_the_signature(server, stub):
    answer = stub.Classify(_classification(), timeout=30)
    _assert_classified(_rows(answer.result), _direct(server, 2, "serving_default", EXAMPLES))
    assert (answer.model_spec.name, answer.model_spec.version.value, answer.model_spec.signature_name) == \
        ("census", 2, "serving_default")
    scores_only = stub.Classify(_classification(signature="classify_scores"), timeout=30)
    _assert_classified(_rows(scores_only.result), _direct(server, 2, "classify_scores", EXAMPLES), labels=False)
    assert scores_only.model_spec.signature_name == "classify_scores"


def test_regress_answers_as_tensorflow_runs_the_signature(server, stub):
    answer = stub.Regress(_regression(), timeout=30)
    np.testing.assert_allclose([r.value for r in answer.result.regressions],
                               _direct(server, 2, "regress", EXAMPLES)["outputs"], rtol=1e-6)
    assert (answer.model_spec.version.value, answer.model_spec.signature_name) == (2, "regress")


def test_examples_with_a_context_merge_it_under_their_own_features(server, stub):
    merged = [_merged(e) for e in EXAMPLES]
    answer = stub.Classify(_classification(context=CONTEXT), timeout=30)
    _assert_classified(_rows(answer.result), _direct(server, 2, "serving_default", merged))
    regressed = stub.Regress(_regression(context=CONTEXT), timeout=30)
    direct = _direct(server, 2, "regress", merged)["outputs"]
    np.testing.assert_allclose([r.value for r in regressed.result.regressions], direct, rtol=1e-6)
    assert direct[0] != _direct(server, 2, "regress", EXAMPLES)["outputs"][0]  # the context counted


def test_versions_and_labels(server, stub):
    for version, label in ((1, "stable"), (2, "canary")):
        direct = _direct(server, version, "serving_default", EXAMPLES)
        for request in (_classification(version=version), _classification(label=label)):
            answer = stub.Classify(request, timeout=30)
            _assert_classified(_rows(answer.result), direct)
            assert answer.model_spec.version.value == version
    assert not np.allclose(_direct(server, 1, "serving_default", EXAMPLES)["scores"],
                           _direct(server, 2, "serving_default", EXAMPLES)["scores"])
    _refused(stub.Classify, _classification(version=3), grpc.StatusCode.NOT_FOUND,
             "Servable not found for request: Specific(census, 3)")
    _refused(stub.Classify, _classification(label="nightly"), grpc.StatusCode.INVALID_ARGUMENT,
             "Unrecognized servable version label: nightly")


def test_multi_inference_runs_each_task_on_the_same_examples(server, stub):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("serving_default", CLASSIFY), ("regress", REGRESS), ("classify_scores", CLASSIFY)):
        task = request.tasks.add(method_name=method)
        task.model_spec.name = "census"
        task.model_spec.signature_name = signature
    _fill(request, context=CONTEXT)
    merged = [_merged(e) for e in EXAMPLES]
    answer = stub.MultiInference(request, timeout=30)
    first, second, third = answer.results
    _assert_classified(_rows(first.classification_result), _direct(server, 2, "serving_default", merged))
    np.testing.assert_allclose([r.value for r in second.regression_result.regressions],
                               _direct(server, 2, "regress", merged)["outputs"], rtol=1e-6)
    _assert_classified(_rows(third.classification_result), _direct(server, 2, "classify_scores", merged),
                       labels=False)
    assert [(r.model_spec.name, r.model_spec.signature_name, r.model_spec.version.value) for r in answer.results] \
        == [("census", "serving_default", 2), ("census", "regress", 2), ("census", "classify_scores", 2)]

    def refused(edit, code, words):
        changed = inference_pb2.MultiInferenceRequest()
        changed.CopyFrom(request)
        edit(changed)
        _refused(stub.MultiInference, changed, code, words)

    refused(lambda r: setattr(r.tasks[1].model_spec, "name", "lin"), grpc.StatusCode.INVALID_ARGUMENT,
            "All ModelSpecs in a MultiInferenceRequest must access the same model name.")
    refused(lambda r: setattr(r.tasks[2].model_spec, "signature_name", "regress"), grpc.StatusCode.INVALID_ARGUMENT,
            "Duplicate evaluation of signature: regress")
    refused(lambda r: setattr(r.tasks[1].model_spec, "signature_name", "nope"), grpc.StatusCode.INVALID_ARGUMENT,
            "Requested signature not found in model graph: nope")
    refused(lambda r: setattr(r.tasks[1], "method_name", "tensorflow/serving/predict"),
            grpc.StatusCode.UNIMPLEMENTED, "Unsupported signature method_name: tensorflow/serving/predict")
    refused(lambda r: setattr(r.tasks[1], "method_name", CLASSIFY), grpc.StatusCode.INVALID_ARGUMENT,
            f"Expected classification signature method_name to be {CLASSIFY}. Was: {REGRESS}")
    refused(lambda r: r.ClearField("tasks"), grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")
    refused(lambda r: r.ClearField("input"), grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")


def test_a_signature_of_another_method_is_refused_in_tensorflow_servings_words(server, stub):
    """The method_name in saved_model.pb decides, as TFServing's --enable_signature_method_name_check: `predict`
    has the keys and types of a classify signature and is still refused."""
    _refused(stub.Classify, _classification(signature="predict"), grpc.StatusCode.INVALID_ARGUMENT,
             f"Expected classification signature method_name to be {CLASSIFY}. Was: tensorflow/serving/predict")
    _refused(stub.Regress, _regression(signature="serving_default"), grpc.StatusCode.INVALID_ARGUMENT,
             f"Expected regression signature method_name to be {REGRESS}. Was: {CLASSIFY}")
    _refused(stub.Classify, _classification(signature="regress"), grpc.StatusCode.INVALID_ARGUMENT,
             f"Expected classification signature method_name to be {CLASSIFY}. Was: {REGRESS}")
    _refused(stub.Classify, _classification(signature="nope"), grpc.StatusCode.INVALID_ARGUMENT,
             "No signature was found with the name: nope")
    _refused(stub.Classify, _classification(signature="bad_scores"), grpc.StatusCode.INVALID_ARGUMENT,
             "Expected Tensor shape: [batch_size num_classes] but got [3]")


def test_metadata_reports_each_signatures_method_name(server, stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "census"
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert stub.GetModelMetadata(request, timeout=30).metadata["signature_def"].Unpack(signatures)
    assert {name: s.method_name for name, s in signatures.signature_def.items()} == {
        "serving_default": CLASSIFY, "classify_scores": CLASSIFY, "regress": REGRESS,
        "predict": "tensorflow/serving/predict", "bad_scores": CLASSIFY}
    rest = httpx.get(f"http://127.0.0.1:{server.ports['http']}/v1/models/census/metadata", timeout=30).json()
    assert rest["metadata"]["signature_def"]["signature_def"]["regress"]["method_name"] == REGRESS


def test_a_model_without_classify_signatures_and_bad_requests(server, stub):
    _refused(stub.Classify, _classification(name="lin"), grpc.StatusCode.INVALID_ARGUMENT,
             f"Expected classification signature method_name to be {CLASSIFY}. Was: tensorflow/serving/predict")
    _refused(stub.Regress, _regression(name="lin", signature=""), grpc.StatusCode.INVALID_ARGUMENT,
             f"Expected regression signature method_name to be {REGRESS}. Was: tensorflow/serving/predict")
    _refused(stub.Classify, _classification(name="nope"), grpc.StatusCode.NOT_FOUND,
             "Servable not found for request: Latest(nope)")
    _refused(stub.Classify, classification_pb2.ClassificationRequest(), grpc.StatusCode.INVALID_ARGUMENT,
             "Missing ModelSpec")
    _refused(stub.Classify, _classification(examples=[]), grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")
    _refused(stub.Regress, _regression(examples=[_example(k=1)]), grpc.StatusCode.INVALID_ARGUMENT,
             "signature 'regress' of model 'census': Name: <unknown>, Feature: x (data type: float) is required but "
             "could not be found.")  # parse_example's refusal, in its words
    wrong = _example(x=[1, 2])  # int64 values where the graph parses floats
    _refused(stub.Classify, _classification(examples=[wrong]), grpc.StatusCode.INVALID_ARGUMENT,
             "signature 'serving_default' of model 'census': Name: <unknown>, Key: x, Index: 0.  Data types don't "
             "match. Data type: int64 but expected type: float")
    assert len(stub.Classify(_classification(), timeout=30).result.classifications) == len(EXAMPLES)


# REST -----------------------------------------------------------------------------------------------------------

def _post(server, path, body):
    url = f"http://127.0.0.1:{server.ports['http']}/v1/models/{path}"
    if isinstance(body, (bytes, str)):
        return httpx.post(url, content=body, timeout=30)
    return httpx.post(url, json=body, timeout=30)


JSON_EXAMPLES = [{"x": [1.0, 2.0]}, {"x": [-0.5, 0.25], "k": 3, "word": "hello"}, {"x": [0.0, 4.0], "k": [-1]}]


def test_rest_classify_and_regress(server):
    answer = _post(server, "census:classify", {"examples": JSON_EXAMPLES})
    assert answer.status_code == 200, answer.text
    direct = _direct(server, 2, "serving_default", EXAMPLES)
    results = answer.json()["results"]
    assert [[label for label, _ in row] for row in results] == [[b.decode() for b in LABELS]] * len(EXAMPLES)
    np.testing.assert_allclose([[score for _, score in row] for row in results], direct["scores"], rtol=1e-6)
    assert results[0][0][1] == float(str(direct["scores"][0][0]))  # float32's shortest text, as TFServing writes

    regressed = _post(server, "census/versions/1:regress", {"signature_name": "regress", "examples": JSON_EXAMPLES})
    assert regressed.status_code == 200, regressed.text
    np.testing.assert_allclose(regressed.json()["results"], _direct(server, 1, "regress", EXAMPLES)["outputs"],
                               rtol=1e-6)
    context = {"k": 2, "word": {"b64": "YWI="}}  # b"ab", as CONTEXT
    labelled = _post(server, "census/labels/stable:classify",
                     {"signature_name": "classify_scores", "context": context, "examples": JSON_EXAMPLES})
    assert labelled.status_code == 200, labelled.text
    direct = _direct(server, 1, "classify_scores", [_merged(e) for e in EXAMPLES])
    assert [[label for label, _ in row] for row in labelled.json()["results"]] == [[""] * 3] * len(EXAMPLES)
    np.testing.assert_allclose([[s for _, s in row] for row in labelled.json()["results"]], direct["scores"],
                               rtol=1e-6)


def test_rest_errors_keep_tensorflow_servings_words(server):
    def refused(path, body, status, words):
        answer = _post(server, path, body)
        assert answer.status_code == status, answer.text
        error = answer.json()["error"]
        assert error == words if not words.endswith("...") else error.startswith(words[:-3]), error

    refused("census:classify", b"", 400, "JSON Parse error: The document is empty")
    refused("census:classify", b"{nope", 400, "JSON Parse error: ...")
    refused("census:classify", [1], 400, "JSON Value: [1] Is not object")
    refused("census:classify", {"instances": []}, 400,
            "JSON Value: {\"instances\":[]} When method is classify, key 'examples' is expected and was not found")
    refused("census:regress", {"examples": {}}, 400,
            "JSON Value: {\"examples\":{}} Expecting 'examples' value to be an list/array")
    refused("census:classify", {"examples": []}, 400,
            "JSON Value: {\"examples\":[]} 'examples' value is an empty array")
    refused("census:classify", {"examples": [1]}, 400, "Example must be JSON object but got JSON Number")
    refused("census:classify", {"examples": [{"x": [1.0, "a"]}]}, 400,
            "Unexpected element type in feature: x expecting type: float")
    refused("census:classify", {"examples": [{"x": [[1.0]]}]}, 400,
            "Feature: x has element with unexpected JSON type: Array")
    refused("census:classify", {"examples": [{"x": None}]}, 400,
            "Feature: x has element with unexpected JSON type: Null")
    refused("census:classify", {"examples": [{"w": {"b64": "!!"}}]}, 400, "Unable to base64 decode")
    refused("census:classify", {"signature_name": 1, "examples": JSON_EXAMPLES}, 400, "JSON Value: ...")
    refused("census:classify", {"signature_name": "predict", "examples": JSON_EXAMPLES}, 400,
            f"Expected classification signature method_name to be {CLASSIFY}. Was: tensorflow/serving/predict")
    refused("lin:regress", {"examples": JSON_EXAMPLES}, 400,
            f"Expected regression signature method_name to be {REGRESS}. Was: tensorflow/serving/predict")
    refused("nope:classify", {"examples": JSON_EXAMPLES}, 404, "Servable not found for request: Latest(nope)")
    refused("census/versions/7:regress", {"examples": JSON_EXAMPLES}, 404,
            "Servable not found for request: Specific(census, 7)")
    refused("census:regress", {"signature_name": "regress", "examples": [{"k": 1}]}, 400, "...")
    assert _post(server, "census:classify", {"examples": JSON_EXAMPLES}).status_code == 200  # still serving
