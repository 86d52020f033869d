"""Triton's PyTorch backend qa suites (qa/L0_torch_aoti, L0_libtorch_*) against gpuserve, with models built here.

- L0_torch_aoti: `platform: "torch_aoti"` with `backend: "pytorch"` loads an AOTInductor package (it was refused
  as an unexpected platform and backend pair), its tensors named by forward's arguments and result (ARGS[0],
  ARGS[2][key], KWARGS[key], RESULT[key][0]) or by position (INPUT__N / OUTPUT__N), one row as well as a batch;
  a config that contradicts the compiled dtypes or dimensions fails the load with the reason, a request that
  would not fit the compiled code is refused (the code itself does not check, and would read past its
  buffers), a TYPE_STRING tensor fails the load. An exported program's model.pt2 keeps serving, and a file
  that is neither says so.
- L0_custom_ops (libtorch): `model_operations { op_library_filename }` in a pytorch model's config loads the
  operator library (Triton's libtorch backend needs it LD_PRELOADed), probed in a child process first; a
  missing operator says how to name its library.
- L0_backend_identity: gpuserve's stand-in for Triton's identity backend answers with the backend's example
  response parameters, counts input bytes in input_byte_size_counter, logs each input with its byte size, and
  passes BF16 through (the client test failed on all four).

One package is compiled for the whole file (AOTInductor runs a C++ compiler: about 15 s here); the tests that
compile more (a sequence package, a torch C++ operator) run with GPUSERVE_SLOW_TESTS=1.
"""

import logging
import shutil
import textwrap

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

torch = pytest.importorskip("torch")

def _serve(root):
    return running_server(repository=DiskRepository(root).populate(ModelRepository()))


class _Net(torch.nn.Module):
    def forward(self, a, b, opts, *, k):
        return {"ZZZ": a - b, "AAA": a + b + k, "BBB": (opts["x"] * 2, opts["y"] - a)}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    path = tmp_path_factory.mktemp("aoti") / "model.pt2"
    batch = torch.export.Dim("batch", min=1, max=8)
    rows = {0: batch}
    a, b, x, y, k = (torch.zeros(2, 4) for _ in range(5))  # distinct: export takes one tensor given twice as one
    program = torch.export.export(_Net().eval(), (a, b, {"x": x, "y": y}), {"k": k},
                                  dynamic_shapes={"a": rows, "b": rows, "opts": {"x": rows, "y": rows}, "k": rows})
    torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    return path


def _model(root, name, package, inputs, outputs, extra=""):
    (root / name / "1").mkdir(parents=True)
    shutil.copy(package, root / name / "1" / "model.pt2")
    tensors = lambda entries: ", ".join(f'{{ name: "{n}" data_type: {t} dims: [ {d} ] }}' for n, t, d in entries)
    (root / name / "config.pbtxt").write_text(textwrap.dedent(f"""
        backend: "pytorch"
        platform: "torch_aoti"
        max_batch_size: 8
        input [ {tensors(inputs)} ]
        output [ {tensors(outputs)} ]
        instance_group [ {{ kind: KIND_CPU }} ]
        """) + extra)


def _infer(client, model, arrays, outputs):
    inputs = []
    for name, array in arrays.items():
        inputs.append(httpclient.InferInput(name, list(array.shape), "FP32"))
        inputs[-1].set_data_from_numpy(array)
    result = client.infer(model, inputs, outputs=[httpclient.InferRequestedOutput(n) for n in outputs])
    return {name: result.as_numpy(name) for name in outputs}


def _data(rows):
    rng = np.random.default_rng(rows)
    return [rng.standard_normal((rows, 4)).astype(np.float32) for _ in range(5)]


def test_an_aoti_package_serves_under_forward_names_and_ordinal_names(tmp_path, package):
    fp32 = "TYPE_FP32"
    _model(tmp_path, "named", package,  # listed out of forward's order: the names place them
           [("KWARGS[k]", fp32, 4), ("ARGS[2][y]", fp32, 4), ("ARGS[0]", fp32, 4), ("ARGS[1]", fp32, 4),
            ("ARGS[2][x]", fp32, 4)],
           [("RESULT[BBB][1]", fp32, 4), ("RESULT[AAA]", fp32, 4)])
    _model(tmp_path, "ordinal", package, [(f"INPUT__{i}", fp32, 4) for i in (4, 3, 2, 1, 0)],
           [(f"OUTPUT__{i}", fp32, 4) for i in range(4)])
    with _serve(tmp_path) as server, httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
        for rows in (1, 3):  # one row too: torch's export refines the batch dimension to start at 2
            a, b, x, y, k = _data(rows)
            got = _infer(client, "named", {"ARGS[0]": a, "ARGS[1]": b, "ARGS[2][x]": x, "ARGS[2][y]": y,
                                           "KWARGS[k]": k}, ["RESULT[AAA]", "RESULT[BBB][1]"])
            np.testing.assert_allclose(got["RESULT[AAA]"], a + b + k, rtol=1e-6)
            np.testing.assert_allclose(got["RESULT[BBB][1]"], y - a, rtol=1e-6)
            got = _infer(client, "ordinal", {f"INPUT__{i}": v for i, v in enumerate((a, b, x, y, k))},
                         [f"OUTPUT__{i}" for i in range(4)])
            for index, want in enumerate((a - b, a + b + k, x * 2, y - a)):  # the result dict's own order
                np.testing.assert_allclose(got[f"OUTPUT__{index}"], want, rtol=1e-6)
        config = client.get_model_config("named")
        assert (config["backend"], config["platform"], config["default_model_filename"]) == \
            ("pytorch", "torch_aoti", "model.pt2")


def test_a_config_the_package_contradicts_fails_the_load_with_the_reason(tmp_path, package):
    fp32, names = "TYPE_FP32", ("ARGS[0]", "ARGS[1]", "ARGS[2][x]", "ARGS[2][y]", "KWARGS[k]")
    good = [(n, fp32, 4) for n in names]
    _model(tmp_path, "dtype", package, [("ARGS[0]", "TYPE_FP16", 4)] + good[1:], [("RESULT[AAA]", fp32, 4)])
    _model(tmp_path, "dims", package, [("ARGS[0]", fp32, 5)] + good[1:], [("RESULT[AAA]", fp32, 4)])
    _model(tmp_path, "unknown", package, [("ARGS[9]", fp32, 4)] + good[1:], [("RESULT[AAA]", fp32, 4)])
    _model(tmp_path, "past_end", package, [(f"INPUT__{i}", fp32, 4) for i in (0, 1, 2, 3, 9)],
           [("OUTPUT__0", fp32, 4)])
    _model(tmp_path, "count", package, good[:4], [("RESULT[AAA]", fp32, 4)])
    _model(tmp_path, "bad_output", package, good, [("RESULT[QQQ]", fp32, 4)])
    _model(tmp_path, "string_corrid", package, [("INPUT__0", fp32, 1)], [("OUTPUT__0", fp32, 1)], """
        sequence_batching {
          control_input [ { name: "INPUT__2" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] },
                          { name: "INPUT__3" control [ { kind: CONTROL_SEQUENCE_READY fp32_false_true: [ 0, 1 ] } ] },
                          { name: "INPUT__4" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_STRING } ] } ]
          state [ { input_name: "INPUT__1" output_name: "OUTPUT__1" data_type: TYPE_FP32 dims: [ 1 ] } ]
        }
        """)
    (tmp_path / "bare" / "1").mkdir(parents=True)  # no config: nothing says the tensors' types
    shutil.copy(package, tmp_path / "bare" / "1" / "model.pt2")
    with _serve(tmp_path) as server, httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
        reasons = {e["name"]: e.get("reason", "") for e in client.get_model_repository_index()}
    assert "configuration expects datatype TYPE_FP16 for input 'ARGS[0]', model provides TYPE_FP32" \
        in reasons["dtype"]
    assert "input 'ARGS[0]' dimension 1 is 5 in the configuration, the model takes 4" in reasons["dims"]
    assert "input 'ARGS[9]' of model 'unknown' is neither one of forward's inputs (ARGS[0], ARGS[1]" \
        in reasons["unknown"]
    assert "input 'INPUT__9' of model 'past_end' refers to input 9; the package has 5 inputs" in reasons["past_end"]
    assert "configuration expects 4 inputs, model provides 5" in reasons["count"]
    assert "output 'RESULT[QQQ]' of model 'bad_output' is neither one of forward's outputs" in reasons["bad_output"]
    assert "unsupported datatype TYPE_STRING for input 'INPUT__4'" in reasons["string_corrid"]
    assert "declare its inputs (ARGS[0], ARGS[1], ARGS[2][x], ARGS[2][y], KWARGS[k])" in reasons["bare"]


def test_a_request_the_compiled_code_cannot_take_is_refused_not_run(tmp_path, package):
    fp32, names = "TYPE_FP32", ("ARGS[0]", "ARGS[1]", "ARGS[2][x]", "ARGS[2][y]", "KWARGS[k]")
    _model(tmp_path, "loose", package, [(n, fp32, -1) for n in names], [("RESULT[ZZZ]", fp32, -1)])
    _model(tmp_path, "half_out", package, [(n, fp32, 4) for n in names], [("RESULT[ZZZ]", "TYPE_FP16", 4)])
    with _serve(tmp_path) as server, httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
        with pytest.raises(InferenceServerException, match="configuration expects datatype TYPE_FP16 for output "
                                                           "'RESULT\\[ZZZ\\]', model provides TYPE_FP32"):
            _infer(client, "half_out", dict(zip(names, _data(1))), ["RESULT[ZZZ]"])
        wide = {n: np.ones((1, 6), np.float32) for n in names}
        with pytest.raises(InferenceServerException, match="input 'ARGS\\[0\\]' dimension 1 is 6, the model takes 4"):
            _infer(client, "loose", wide, ["RESULT[ZZZ]"])
        a, b, x, y, k = _data(2)  # and the model still serves
        got = _infer(client, "loose", dict(zip(names, (a, b, x, y, k))), ["RESULT[ZZZ]"])
        np.testing.assert_allclose(got["RESULT[ZZZ]"], a - b, rtol=1e-6)


def test_an_exported_program_model_pt2_serves_and_an_unreadable_one_says_what_it_is_not(tmp_path):
    class Add(torch.nn.Module):
        def forward(self, x):
            return {"y": x + 1}

    (tmp_path / "exported" / "1").mkdir(parents=True)
    torch.export.save(torch.export.export(Add(), (torch.zeros(2, 3),)), str(tmp_path / "exported" / "1" / "model.pt2"))
    (tmp_path / "exported" / "config.pbtxt").write_text("max_batch_size: 0\n")
    (tmp_path / "garbage" / "1").mkdir(parents=True)
    (tmp_path / "garbage" / "1" / "model.pt2").write_bytes(b"not a zip archive")
    (tmp_path / "garbage" / "config.pbtxt").write_text('platform: "torch_aoti"\n')
    with _serve(tmp_path) as server, httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
        reasons = {e["name"]: e.get("reason", "") for e in client.get_model_repository_index()}
        assert "neither a torch.export program" in reasons["garbage"] and "nor an AOTInductor package" \
            in reasons["garbage"]
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        inputs = [httpclient.InferInput("x", [2, 3], "FP32")]
        inputs[0].set_data_from_numpy(x)
        np.testing.assert_array_equal(client.infer("exported", inputs).as_numpy("y"), x + 1)


def _identity(root, name, datatype, max_batch=8):
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(textwrap.dedent(f"""
        name: "{name}"
        backend: "identity"
        max_batch_size: {max_batch}
        input [ {{ name: "INPUT0" data_type: {datatype} dims: [ -1 ] }} ]
        output [ {{ name: "OUTPUT0" data_type: {datatype} dims: [ -1 ] }} ]
        instance_group [ {{ count: 1 kind: KIND_CPU }} ]
        """))


def test_the_identity_backend_answers_with_its_parameters_counts_input_bytes_and_passes_bf16(tmp_path, caplog):
    """qa/L0_backend_identity: the backend's example response parameters (a double among them, which a Python
    model may not set), its input_byte_size_counter and its per-input log line; a BF16 input came back as an
    error (the stand-in read it with as_numpy())."""
    import urllib.request

    import grpc  # noqa: F401  (tritonclient.grpc needs it)
    import ml_dtypes
    import tritonclient.grpc as grpcclient

    _identity(tmp_path, "identity_uint32", "TYPE_UINT32")
    _identity(tmp_path, "identity_bf16", "TYPE_BF16")
    caplog.set_level(logging.INFO)
    with _serve(tmp_path) as server:
        ports = server.ports
        with httpclient.InferenceServerClient(f"127.0.0.1:{ports['http']}") as client:
            data = np.arange(4, dtype=np.uint32).reshape(2, 2)
            inputs = [httpclient.InferInput("INPUT0", [2, 2], "UINT32")]
            inputs[0].set_data_from_numpy(data)
            result = client.infer("identity_uint32", inputs)
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)
            assert result.get_response()["parameters"] == {"param0": "an example string parameter", "param1": 42,
                                                           "param2": False, "param3": 123.123}
            half = np.array([[1.5, -2.0, 3.25]], dtype=ml_dtypes.bfloat16)
            inputs = [httpclient.InferInput("INPUT0", [1, 3], "BF16")]
            inputs[0].set_data_from_numpy(half)
            np.testing.assert_array_equal(client.infer("identity_bf16", inputs).as_numpy("OUTPUT0"), half)
        with grpcclient.InferenceServerClient(f"127.0.0.1:{ports['grpc']}") as client:
            inputs = [grpcclient.InferInput("INPUT0", [2, 2], "UINT32")]
            inputs[0].set_data_from_numpy(data)
            parameters = client.infer("identity_uint32", inputs).get_response().parameters
            assert (parameters["param0"].string_param, parameters["param1"].int64_param,
                    parameters["param2"].bool_param, parameters["param3"].double_param) == \
                ("an example string parameter", 42, False, 123.123)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/metrics").read().decode()
    assert 'input_byte_size_counter{model="identity_uint32",version="1"} 32' in metrics
    assert "\tinput INPUT0: datatype = UINT32, shape = [2,2], byte_size = 16, buffer_count = 1" in caplog.text


def _script_model(root, name, module, extra=""):
    (root / name / "1").mkdir(parents=True)
    torch.jit.script(module).save(str(root / name / "1" / "model.pt"))
    (root / name / "config.pbtxt").write_text(textwrap.dedent(f"""
        platform: "pytorch_libtorch"
        max_batch_size: 0
        input [ {{ name: "INPUT__0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        output [ {{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        """) + extra)


class _Double(torch.nn.Module):
    def forward(self, x):
        return x * 2


def test_a_pytorch_models_op_library_loads_from_its_config_and_a_missing_operator_says_how(tmp_path, monkeypatch):
    """qa/L0_custom_ops (libtorch): Triton needs the op library LD_PRELOADed; gpuserve loads the library a
    pytorch model's config names (model_operations, as ONNX models name theirs) before the model, found beside
    the model, after a child process has loaded it (a library that aborts takes only the child down). A
    TorchScript file using an operator nobody registered failed with torch's text only."""
    import subprocess

    marker = tmp_path / "loaded"
    source = tmp_path / "probe.c"
    source.write_text('#include <stdio.h>\n#include <stdlib.h>\n#include <unistd.h>\n__attribute__((constructor)) '
                      'static void hello(void) { FILE *f = fopen(getenv("H6_PROBE_MARKER"), "a"); '
                      'if (f) { fprintf(f, "%d\\n", (int)getpid()); fclose(f); } }\n')
    repo = tmp_path / "repo"
    _script_model(repo, "with_library", _Double(), 'model_operations { op_library_filename: "libprobe.so" }\n')
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(repo / "with_library" / "libprobe.so"), str(source)],
                   check=True)
    monkeypatch.setenv("H6_PROBE_MARKER", str(marker))
    _script_model(repo, "aborting_library", _Double(), 'model_operations { op_library_filename: "libabort.so" }\n')
    (tmp_path / "abort.c").write_text("#include <stdlib.h>\n__attribute__((constructor)) static void die(void) "
                                      "{ abort(); }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(repo / "aborting_library" / "libabort.so"),
                    str(tmp_path / "abort.c")], check=True)
    _script_model(repo, "missing_library", _Double(), 'model_operations { op_library_filename: "nowhere.so" }\n')

    library = torch.library.Library("gpuserve_qa_probe", "DEF")  # registered while the model is saved only
    library.define("twice(Tensor x) -> Tensor")
    library.impl("twice", lambda x: x * 2, "CompositeExplicitAutograd")

    class UsesOp(torch.nn.Module):
        def forward(self, x):
            return torch.ops.gpuserve_qa_probe.twice(x)

    _script_model(repo, "unknown_op", UsesOp())
    library._destroy()
    with _serve(repo) as server, httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
        reasons = {e["name"]: (e.get("state"), e.get("reason", "")) for e in client.get_model_repository_index()}
        x = np.arange(4, dtype=np.float32)
        inputs = [httpclient.InferInput("INPUT__0", [4], "FP32")]
        inputs[0].set_data_from_numpy(x)
        np.testing.assert_array_equal(client.infer("with_library", inputs).as_numpy("OUTPUT__0"), x * 2)
    assert str(__import__("os").getpid()) in marker.read_text().split()  # in the server's process (and the probe's)
    assert reasons["with_library"][0] == "READY"
    assert "custom operator library 'nowhere.so' not found" in reasons["missing_library"][1]
    assert "custom operator library 'libabort.so' could not be loaded" in reasons["aborting_library"][1]
    assert "uses an operator torch does not know (Unknown builtin op: gpuserve_qa_probe::twice.)" \
        in reasons["unknown_op"][1]
    assert 'model_operations { op_library_filename: "LIBRARY.so" }' in reasons["unknown_op"][1]


@pytest.mark.skipif(not __import__("os").environ.get("GPUSERVE_SLOW_TESTS"),
                    reason="compiles a torch C++ operator (~30 s here); set GPUSERVE_SLOW_TESTS=1")
def test_qa_custom_modulo_operator_serves_through_model_operations(tmp_path):
    """qa/L0_custom_ops mod_op_test end to end: its custom_modulo operator, compiled here, named in the config.
    Compiling it also registers the operator in this process, so the server's copy of the library is one that
    would abort the process were it loaded again (c10 refuses an operator registered twice)."""
    from torch.utils import cpp_extension

    build = tmp_path / "build"
    build.mkdir()
    cpp_extension.load_inline(name="custom_modulo", is_python_module=False, build_directory=str(build),
                              cpp_sources='#include <torch/script.h>\ntorch::Tensor custom_modulo(torch::Tensor a, '
                                          'torch::Tensor b) { return torch::fmod(a, b).clone(); }\nstatic auto '
                                          'registry = torch::RegisterOperators("my_ops::custom_modulo", '
                                          '&custom_modulo);\n')

    class Modulo(torch.nn.Module):
        def forward(self, input0, input1):
            return torch.ops.my_ops.custom_modulo(input0, input1)

    repo = tmp_path / "repo"
    (repo / "libtorch_modulo" / "1").mkdir(parents=True)
    torch.jit.trace(Modulo(), (torch.arange(1, 11.0), torch.full((10,), 2.0))).save(
        str(repo / "libtorch_modulo" / "1" / "model.pt"))
    shutil.copy(build / "custom_modulo.so", repo / "libtorch_modulo" / "custom_modulo.so")
    (repo / "libtorch_modulo" / "config.pbtxt").write_text(textwrap.dedent("""
        platform: "pytorch_libtorch"
        max_batch_size: 0
        input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 10 ] },
                { name: "INPUT__1" data_type: TYPE_FP32 dims: [ 10 ] } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 10 ] } ]
        model_operations { op_library_filename: "custom_modulo.so" }
        """))
    with _serve(repo) as server, httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
        a, b = np.arange(1, 11, dtype=np.float32), np.full(10, 2, np.float32)
        inputs = [httpclient.InferInput(f"INPUT__{i}", [10], "FP32") for i in range(2)]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        np.testing.assert_array_equal(client.infer("libtorch_modulo", inputs).as_numpy("OUTPUT__0"), np.fmod(a, b))


class _Running(torch.nn.Module):
    def forward(self, x, state, start, ready, corrid):
        new_state = x + state * (1 - start)
        return (new_state + corrid.to(new_state.dtype)) * ready, new_state


@pytest.mark.skipif(not __import__("os").environ.get("GPUSERVE_SLOW_TESTS"),
                    reason="compiles a second AOTInductor package (~20-30 s here); set GPUSERVE_SLOW_TESTS=1")
def test_an_aoti_sequence_model_gets_its_controls_and_state_by_ordinal_or_forward_name(tmp_path):
    """qa/L0_torch_aoti's sequence models: START, READY, CORRID and the implicit state reach the package's
    arguments named INPUT__2..4 / INPUT__1 or ARGS[2..4] / ARGS[1], the state coming back from OUTPUT__1 or
    RESULT[1]."""
    batch = torch.export.Dim("batch", min=1, max=8)
    sample = tuple(torch.zeros(2, 1, dtype=torch.int32 if i == 4 else torch.float32) for i in range(5))
    program = torch.export.export(_Running().eval(), sample, dynamic_shapes=tuple({0: batch} for _ in range(5)))
    package = tmp_path / "running.pt2"
    torch._inductor.aoti_compile_and_package(program, package_path=str(package))
    for name, (data, state, start, ready, corrid, out, new_state) in {
            "ordinal": ("INPUT__0", "INPUT__1", "INPUT__2", "INPUT__3", "INPUT__4", "OUTPUT__0", "OUTPUT__1"),
            "forward": ("ARGS[0]", "ARGS[1]", "ARGS[2]", "ARGS[3]", "ARGS[4]", "RESULT[0]", "RESULT[1]")}.items():
        _model(tmp_path / "repo", name, package, [(data, "TYPE_FP32", 1)], [(out, "TYPE_FP32", 1)], f"""
            sequence_batching {{
              control_input [
                {{ name: "{start}" control [ {{ kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] }} ] }},
                {{ name: "{ready}" control [ {{ kind: CONTROL_SEQUENCE_READY fp32_false_true: [ 0, 1 ] }} ] }},
                {{ name: "{corrid}" control [ {{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_INT32 }} ] }} ]
              state [ {{ input_name: "{state}" output_name: "{new_state}" data_type: TYPE_FP32 dims: [ 1 ] }} ]
            }}
            """.replace("\n            ", "\n"))
    with _serve(tmp_path / "repo") as server, \
            httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
        for name, (data, out) in {"ordinal": ("INPUT__0", "OUTPUT__0"), "forward": ("ARGS[0]", "RESULT[0]")}.items():
            total = 0.0
            for step, value in enumerate((2.0, 3.0, 4.0)):
                total += value
                inputs = [httpclient.InferInput(data, [1, 1], "FP32")]
                inputs[0].set_data_from_numpy(np.full((1, 1), value, np.float32))
                result = client.infer(name, inputs, sequence_id=100, sequence_start=step == 0, sequence_end=step == 2)
                assert float(result.as_numpy(out)[0, 0]) == total + 100, (name, step)
