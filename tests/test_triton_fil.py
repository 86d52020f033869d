"""Triton FIL-backend repositories served unchanged by `gpuserve start`: XGBoost (JSON, UBJSON, `xgboost`),
LightGBM and scikit-learn forests (as Treelite checkpoints, the form FIL takes them in), with configs
written as FIL's documentation writes them; answers checked against the frameworks' own predict /
predict_proba (and threshold) over HTTP and gRPC, with NaN as missing values; broken models stay
unavailable with their reason while the others serve."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import free_ports
from test_cli import stop, wait_ready

xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")
httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")

FEATURES = 6
SIZES = (1, 7, 64, 301)


def config(name, model_type, out_dims, parameters, max_batch_size=8192, features=FEATURES, extra=""):
    """A FIL config.pbtxt as FIL's docs/model_config.md lays one out."""
    params = ",\n".join(f'  {{\n    key: "{k}"\n    value: {{ string_value: "{v}" }}\n  }}'
                        for k, v in [("model_type", model_type), *parameters])
    return f"""backend: "fil"
max_batch_size: {max_batch_size}
input [
 {{
    name: "input__0"
    data_type: TYPE_FP32
    dims: [ {features} ]
  }}
]
output [
 {{
    name: "output__0"
    data_type: TYPE_FP32
    dims: [ {out_dims} ]
  }}
]
instance_group [{{ kind: KIND_AUTO }}]
parameters [
{params}
]
{extra}
dynamic_batching {{}}
"""


def data(rows, seed=0, nan=0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    if nan:
        x[rng.random(x.shape) < nan] = np.nan
    return x


def add(repo, name, model_type, out_dims, parameters, save, filename, **kw):
    folder = repo / name
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(config(name, model_type, out_dims, parameters, **kw))
    save(str(folder / "1" / filename))


@pytest.fixture(scope="module")
def fil_repo(tmp_path_factory):
    """Models and, per model, the frameworks' own answer for a batch `x`."""
    repo = tmp_path_factory.mktemp("fil")
    x = data(600, seed=1, nan=0.05)  # NaN: missing values in training too
    y2 = (np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) > 0).astype(int)
    y3 = np.digitize(np.nan_to_num(x[:, 2]), [-0.5, 0.5])
    target = np.nan_to_num(x[:, 0]) * 2 + np.nan_to_num(x[:, 3]) ** 2
    expect = {}

    binary = xgb.XGBClassifier(n_estimators=20, max_depth=4).fit(x, y2)
    add(repo, "xgb_class", "xgboost_json", 1, [("is_classifier", "true")], binary.save_model, "xgboost.json")
    expect["xgb_class"] = lambda v: binary.predict(v)
    add(repo, "xgb_threshold", "xgboost_ubj", 1, [("is_classifier", "true"), ("threshold", "0.3")],
        binary.save_model, "xgboost.ubj")
    expect["xgb_threshold"] = lambda v: binary.predict_proba(v)[:, 1] > 0.3
    add(repo, "xgb_proba", "xgboost_ubj", 2, [("is_classifier", "true"), ("predict_proba", "true")],
        binary.save_model, "xgboost.ubj")
    expect["xgb_proba"] = lambda v: binary.predict_proba(v)
    add(repo, "xgb_proba_one", "xgboost_json", 1, [("is_classifier", "true"), ("predict_proba", "true")],
        binary.save_model, "xgboost.json")  # FIL: a binary model's one score, where output__0 has one value
    expect["xgb_proba_one"] = lambda v: binary.predict_proba(v)[:, 1]

    multi = xgb.XGBClassifier(n_estimators=15, max_depth=3, objective="multi:softprob").fit(x, y3)
    # FIL before 25.09: output_class, and GPU layout parameters (accepted, without effect here)
    add(repo, "xgb_multi", "xgboost", 1, [("output_class", "true"), ("storage_type", "SPARSE"), ("algo", "NAIVE"),
                                          ("threads_per_tree", "4"), ("blocks_per_sm", "2"),
                                          ("use_experimental_optimizations", "true"), ("transfer_threshold", "2")],
        lambda path: open(path, "wb").write(multi.get_booster().save_raw("ubj")), "xgboost.model")
    expect["xgb_multi"] = lambda v: multi.predict(v)
    softmax = xgb.XGBClassifier(n_estimators=15, max_depth=3, objective="multi:softmax").fit(x, y3)
    add(repo, "xgb_softmax_proba", "xgboost_json", 3, [("is_classifier", "true"), ("predict_proba", "true"),
                                                       ("layout", "breadth_first"), ("chunk_size", "8")],
        softmax.save_model, "xgboost.json")
    expect["xgb_softmax_proba"] = lambda v: softmax.predict_proba(v)

    regressor = xgb.XGBRegressor(n_estimators=20, max_depth=4).fit(x, target)
    add(repo, "xgb_reg", "xgboost_ubj", 1, [("is_classifier", "false")], regressor.save_model, "xgboost.ubj")
    expect["xgb_reg"] = lambda v: regressor.predict(v)

    quiet = {"verbose": -1, "num_leaves": 15}
    lbin = lgb.train({"objective": "binary", **quiet}, lgb.Dataset(x, y2), 20)
    add(repo, "lgb_class", "lightgbm", 1, [("is_classifier", "true"), ("threshold", "0.6")], lbin.save_model,
        "model.txt")
    expect["lgb_class"] = lambda v: lbin.predict(v) > 0.6
    add(repo, "lgb_proba", "lightgbm", 2, [("is_classifier", "true"), ("predict_proba", "true")], lbin.save_model,
        "model.txt")
    expect["lgb_proba"] = lambda v: np.stack([1 - lbin.predict(v), lbin.predict(v)], axis=1)
    lmulti = lgb.train({"objective": "multiclass", "num_class": 3, **quiet}, lgb.Dataset(x, y3), 15)
    add(repo, "lgb_multi", "lightgbm", 3, [("is_classifier", "true"), ("predict_proba", "true")],
        lmulti.save_model, "model.txt")
    expect["lgb_multi"] = lambda v: lmulti.predict(v)
    add(repo, "lgb_multi_class", "lightgbm", 1, [("is_classifier", "true")], lmulti.save_model, "model.txt")
    expect["lgb_multi_class"] = lambda v: lmulti.predict(v).argmax(axis=1)
    lreg = lgb.train({"objective": "regression", **quiet}, lgb.Dataset(x, target), 20)
    add(repo, "lgb_reg", "lightgbm", 1, [("is_classifier", "false")], lreg.save_model, "model.txt")
    expect["lgb_reg"] = lambda v: lreg.predict(v)
    # a file under another name: Triton's default_model_filename
    add(repo, "lgb_named", "lightgbm", 1, [("is_classifier", "false")], lreg.save_model, "regressor.txt",
        extra='default_model_filename: "regressor.txt"')
    expect["lgb_named"] = lambda v: lreg.predict(v)

    try:
        import treelite
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    except ImportError:
        treelite = None
    if treelite is not None:  # FIL's scripts/convert_sklearn.py: pickle -> Treelite checkpoint
        dense = np.nan_to_num(x)
        forest = RandomForestClassifier(n_estimators=10, max_depth=6, random_state=0).fit(dense, y3)
        add(repo, "sk_proba", "treelite_checkpoint", 3, [("is_classifier", "true"), ("predict_proba", "true")],
            treelite.sklearn.import_model(forest).serialize, "checkpoint.tl")
        expect["sk_proba"] = lambda v: forest.predict_proba(v)
        add(repo, "sk_class", "treelite_checkpoint", 1, [("is_classifier", "true")],
            treelite.sklearn.import_model(forest).serialize, "checkpoint.tl")
        expect["sk_class"] = lambda v: forest.predict(v)
        two = RandomForestClassifier(n_estimators=10, max_depth=6, random_state=0).fit(dense, y2)
        add(repo, "sk_binary_proba", "treelite_checkpoint", 2, [("is_classifier", "true"), ("predict_proba", "true")],
            treelite.sklearn.import_model(two).serialize, "checkpoint.tl")
        expect["sk_binary_proba"] = lambda v: two.predict_proba(v)
        trees = RandomForestRegressor(n_estimators=10, max_depth=6, random_state=0).fit(dense, target)
        add(repo, "sk_reg", "treelite_checkpoint", 1, [("is_classifier", "false")],
            treelite.sklearn.import_model(trees).serialize, "checkpoint.tl")
        expect["sk_reg"] = lambda v: trees.predict(v)

    # broken: a file that is no model, a model_type FIL does not know, a config without is_classifier,
    # output dims that do not fit the model, a missing file
    add(repo, "bad_file", "xgboost_json", 1, [("is_classifier", "true")],
        lambda path: open(path, "w").write("not a model"), "xgboost.json")
    add(repo, "bad_type", "sklearn_pickle", 1, [("is_classifier", "true")], binary.save_model, "model.pkl")
    add(repo, "bad_config", "xgboost_json", 1, [("predict_proba", "false")], binary.save_model, "xgboost.json")
    add(repo, "bad_dims", "lightgbm", 2, [("is_classifier", "true"), ("predict_proba", "true")], lmulti.save_model,
        "model.txt")
    add(repo, "bad_missing", "lightgbm", 1, [("is_classifier", "false")], lreg.save_model, "other.txt")
    return repo, expect


@pytest.fixture(scope="module")
def server(fil_repo):
    """`gpuserve start REPO --http-port P --grpc-port G --metrics-port M`, the launch line users script."""
    repo, expect = fil_repo
    http, grpc, metrics = free_ports(3)
    proc = subprocess.Popen([sys.executable, "-m", "gpuserve.cli", "start", str(repo), "--http-port", str(http),
                             "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--host", "127.0.0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "GPUSERVE_DEVICE": "cpu"})
    try:
        wait_ready(http, proc, timeout=120)
        yield {"http": http, "grpc": grpc, "expect": expect}
    finally:
        stop(proc)


def infer_http(port, model, x):
    with httpclient.InferenceServerClient(f"127.0.0.1:{port}") as client:
        tensor = httpclient.InferInput("input__0", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        return client.infer(model, [tensor]).as_numpy("output__0")


def infer_grpc(port, model, x):
    with grpcclient.InferenceServerClient(f"127.0.0.1:{port}") as client:
        tensor = grpcclient.InferInput("input__0", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        return client.infer(model, [tensor]).as_numpy("output__0")


def fil_shape(rows, dims):
    """FIL's output shape: the batch dimension and output__0's dims without their 1s."""
    return (rows, *[d for d in dims if d != 1])


SERVED = {"xgb_class": [1], "xgb_threshold": [1], "xgb_proba": [2], "xgb_proba_one": [1], "xgb_multi": [1],
          "xgb_softmax_proba": [3], "xgb_reg": [1], "lgb_class": [1], "lgb_proba": [2], "lgb_multi": [3],
          "lgb_multi_class": [1], "lgb_reg": [1], "lgb_named": [1], "sk_proba": [3], "sk_class": [1],
          "sk_binary_proba": [2], "sk_reg": [1]}


@pytest.mark.parametrize("model", sorted(SERVED))
def test_outputs_equal_the_frameworks_own(server, model):
    if model not in server["expect"]:
        pytest.skip("treelite is not installed")
    for protocol, infer in (("http", infer_http), ("grpc", infer_grpc)):
        for rows in SIZES:
            x = data(rows, seed=rows, nan=0.0 if model.startswith("sk_") else 0.1)
            got = infer(server[protocol], model, x)
            want = np.asarray(server["expect"][model](x), dtype=np.float32).reshape(fil_shape(rows, SERVED[model]))
            assert got.dtype == np.float32 and got.shape == want.shape, (model, protocol, rows)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{model} {protocol} {rows} rows")


def test_nan_inputs_are_missing_values(server):
    """Rows of NaN alone, and rows differing only in which features are NaN, answer as the frameworks do."""
    x = np.full((4, FEATURES), np.nan, dtype=np.float32)
    x[1, 0], x[2, 1], x[3, :3] = 2.0, -2.0, 1.0
    for model in ("xgb_proba", "xgb_reg", "lgb_proba", "lgb_reg"):
        want = np.asarray(server["expect"][model](x), dtype=np.float32).reshape(fil_shape(4, SERVED[model]))
        np.testing.assert_allclose(infer_http(server["http"], model, x), want, rtol=1e-5, atol=1e-6)


def test_concurrent_requests_are_batched_with_the_same_answers(server):
    """Dynamic batching (`dynamic_batching {}`) merges concurrent requests; each gets its own rows back."""
    batches = [data(rows, seed=100 + rows, nan=0.1) for rows in (1, 3, 5, 2, 8, 1, 4, 6) * 3]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda x: infer_grpc(server["grpc"], "lgb_multi", x), batches))
    for x, got in zip(batches, results):
        np.testing.assert_allclose(got, server["expect"]["lgb_multi"](x), rtol=1e-5, atol=1e-6)
    with httpclient.InferenceServerClient(f"127.0.0.1:{server['http']}") as client:
        stats = client.get_inference_statistics("lgb_multi")["model_stats"][0]
    assert int(stats["inference_count"]) >= sum(len(x) for x in batches)


def test_config_is_shown_as_written(server):
    with httpclient.InferenceServerClient(f"127.0.0.1:{server['http']}") as client:
        cfg = client.get_model_config("xgb_multi")
        meta = client.get_model_metadata("xgb_multi")
        named = client.get_model_config("lgb_named")
    assert cfg["backend"] == "fil" and cfg["platform"] == "" and cfg["max_batch_size"] == 8192
    assert cfg["parameters"]["output_class"] == {"string_value": "true"}
    assert cfg["parameters"]["storage_type"] == {"string_value": "SPARSE"}
    assert cfg["input"][0]["dims"] == ["6"] or cfg["input"][0]["dims"] == [6]
    assert "dynamic_batching" in cfg
    assert meta["platform"] == "fil" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "input__0", "datatype": "FP32", "shape": [-1, FEATURES]}]
    assert named["default_model_filename"] == "regressor.txt"


def test_broken_models_are_unavailable_with_their_reason(server):
    with httpclient.InferenceServerClient(f"127.0.0.1:{server['http']}") as client:
        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert client.is_model_ready("xgb_class") and client.is_server_live()
    reasons = {name: index[name].get("reason", "") for name in index if name.startswith("bad_")}
    assert all(index[name]["state"] == "UNAVAILABLE" for name in reasons), index
    assert "xgboost.json" in reasons["bad_file"] and "XGBoost" in reasons["bad_file"]
    assert "sklearn_pickle not recognized as a valid serialization format" in reasons["bad_type"]
    assert "Required parameter is_classifier not found in config" in reasons["bad_config"]
    assert "dims [2] do not fit probabilities of this 3-class model" in reasons["bad_dims"]
    assert "other.txt" not in reasons["bad_missing"] and "model.txt" in reasons["bad_missing"]


def test_config_refusals_without_a_server():
    from gpuserve.errors import InvalidSettings
    from gpuserve.triton_config import parse_pbtxt
    from gpuserve.triton_fil_config import fil_options

    def options(text):
        cfg = parse_pbtxt(text)
        cfg.setdefault("name", "m")
        return fil_options(cfg)

    base = config("m", "lightgbm", 1, [("is_classifier", "true")])
    assert options(base).threshold == 0.5  # FIL's documented default
    assert options(base).model_type == "lightgbm" and options(base).features == FEATURES
    assert options(config("m", "lightgbm", 1, [("output_class", "false")])).is_classifier is False
    # FIL reads predict_proba with a default: a word other than true/false is that default
    assert options(config("m", "lightgbm", 1, [("is_classifier", "true"), ("predict_proba", "yes")])).predict_proba \
        is False
    refusals = {
        config("m", "lightgbm", 1, [("is_classifier", "maybe")]): "Bad input for parameter is_classifier",
        config("m", "lightgbm", 1, [("is_classifier", "true"), ("threshold", "high")]):
            "Bad input for parameter threshold",
        config("m", "lightgbm", 1, [("is_classifier", "true")], max_batch_size=0): "max_batch_size",
        config("m", "lightgbm", 1, [("is_classifier", "true")]).replace("input__0", "x"): "input named 'input__0'",
        config("m", "lightgbm", 1, [("is_classifier", "true")]).replace(
            "dims: [ 1 ]\n  }\n]", 'dims: [ 1 ]\n  },\n  { name: "treeshap_output" data_type: TYPE_FP32 '
                                   'dims: [ 7 ] }\n]'): "treeshap_output",
        config("m", "lightgbm", 1, [("is_classifier", "true")]).replace("TYPE_FP32", "TYPE_FP64", 1): "TYPE_FP32",
        config("m", "cuml", 1, [("is_classifier", "true")]): "cuml not recognized as a valid serialization format",
    }
    for text, words in refusals.items():
        with pytest.raises(InvalidSettings, match=words.replace("[", r"\[")):
            options(text)


def test_fil_is_a_builtin_runtime_that_leaves_sys_path_alone(tmp_path):
    """A FIL model is served by a built-in runtime: nothing of the model's folder is put on sys.path (an import
    path would, and a module there could shadow one the server uses)."""
    import sys

    from gpuserve.repository import runtime_for
    from gpuserve.settings import ModelSettings
    from gpuserve.triton_fil import FilModel

    before = list(sys.path)
    assert runtime_for(ModelSettings(name="f", implementation="fil", folder=str(tmp_path))) is FilModel
    assert sys.path == before
