"""Loading a model that puts its folder on sys.path must not make imports on other threads fail (models
load on several threads: a Triton Python model beside an ONNX model whose onnxruntime import then
reported 'No module named onnxruntime')."""

import importlib
import sys
import threading

from gpuserve.import_path import move_on_path
from gpuserve.triton_python_config import import_model_file


def test_imports_on_other_threads_find_everything_while_model_files_import(tmp_path):
    model = tmp_path / "model" / "model.py"
    model.parent.mkdir()
    model.write_text("class TritonPythonModel:\n    pass\n")
    late = tmp_path / "late"
    late.mkdir()
    count = 2000
    for i in range(count):
        (late / f"gpuserve_path_probe_{i}.py").write_text("x = 1\n")
    saved = list(sys.path)
    sys.path = sys.path + [str(late)]  # at the end, as site-packages is after the models' folders
    stop = threading.Event()

    def churn():
        i = 0
        while not stop.is_set():
            import_model_file(model, f"gpuserve_path_probe_model_{i}")
            i += 1

    thread = threading.Thread(target=churn)
    thread.start()
    missing = []
    try:
        for i in range(count):
            try:
                importlib.import_module(f"gpuserve_path_probe_{i}")
            except ModuleNotFoundError as exc:
                missing.append(exc.name)
    finally:
        stop.set()
        thread.join()
        for name in [n for n in sys.modules if n.startswith("gpuserve_path_probe")]:
            del sys.modules[name]
        sys.path = saved
    assert missing == []


def test_move_on_path_binds_a_new_list(tmp_path):
    saved = sys.path
    try:
        before = sys.path
        move_on_path(str(tmp_path), first=True)
        assert sys.path is not before and sys.path[0] == str(tmp_path) and str(tmp_path) not in before
        move_on_path(str(tmp_path), first=False)
        assert sys.path[-1] == str(tmp_path) and sys.path.count(str(tmp_path)) == 1
    finally:
        sys.path = saved
