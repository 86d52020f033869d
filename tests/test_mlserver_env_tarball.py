"""MLServer's custom environments (`parameters.environment_tarball`): a model's parallel workers import
from the tarball's site-packages first and find its bin on PATH, the server process never does, one
unpacked folder serves every model (and every start) with the same tarball, and a tarball that would
write outside its folder leaves its model not ready with the reason while the others serve."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Tuple

import httpx
import joblib
import pytest

from gpuserve.environments import EnvironmentSource, source_for, unpack
from gpuserve.errors import ModelLoadError
from gpuserve.mlserver.settings import mlserver_overrides
from gpuserve.parallel import ParallelModel
from gpuserve.repository import DiskRepository
from gpuserve.settings import ModelParameters
from conftest import free_ports
from test_cli import stop, wait_ready

GPUSERVE = str(Path(sys.executable).with_name("gpuserve"))
PYTHON_DIR = f"python{sys.version_info.major}.{sys.version_info.minor}"
SHADOW_VERSION = "0.0.env-shadow"

PROBE = '''
import json, os, shutil, sys
from mlserver import MLModel
from mlserver.codecs import StringCodec
from mlserver.types import InferenceResponse


class Probe(MLModel):
    async def load(self):
        return True

    async def predict(self, payload):
        try:
            import envonly_probe
            envonly = envonly_probe.VERSION
        except ImportError:
            envonly = None
        import joblib
        report = {"envonly": envonly, "joblib": joblib.__version__, "tool": shutil.which("envprobe-tool"),
                  "path0": os.environ["PATH"].split(os.pathsep)[0], "sys_path": sys.path,
                  "executable": sys.executable, "pid": os.getpid()}
        return InferenceResponse(model_name=self.name, outputs=[StringCodec.encode_output("report", [json.dumps(report)])])
'''
# The environment's runtime imports its package at the top: the server process must never import it.
ENV_PROBE = "import envonly_probe  # only the environment has it\n" + PROBE


def _add(tar: tarfile.TarFile, name: str, text: str = "", mode: int = 0o644, kind=tarfile.REGTYPE, link: str = ""):
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.type, info.linkname = len(data), mode, kind, link
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def env_tarball(path: Path, members=(), python_dir: str = PYTHON_DIR) -> Path:
    """A conda-pack-like tarball: a package the server lacks, a `joblib` that shadows the server's, a program."""
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, f"lib/{python_dir}/site-packages/envonly_probe/__init__.py", "VERSION = 'env-1'\n")
        _add(tar, f"lib/{python_dir}/site-packages/joblib/__init__.py", f"__version__ = '{SHADOW_VERSION}'\n")
        _add(tar, "bin/envprobe-tool", "#!/bin/sh\necho probe\n", 0o755)
        for member in members:
            _add(tar, **member)
    return path


def _model(root: Path, name: str, runtime: str = PROBE, **settings) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "runtime.py").write_text(runtime)
    (folder / "model-settings.json").write_text(json.dumps({"name": name, "implementation": "runtime.Probe",
                                                            **settings}))
    return folder


def _report(port: int, name: str) -> dict:
    answer = httpx.post(f"http://127.0.0.1:{port}/v2/models/{name}/infer", timeout=30,
                        json={"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [1]}]})
    assert answer.status_code == 200, answer.text
    return json.loads(answer.json()["outputs"][0]["data"][0])


def _start(root: Path, log: Path) -> Tuple[subprocess.Popen, int]:
    """The server and its HTTP port."""
    port, grpc, metrics = free_ports(3)
    with open(log, "ab") as out:
        proc = subprocess.Popen([GPUSERVE, "start", str(root), "--http-port", str(port), "--grpc-port",
                                 str(grpc), "--metrics-port", str(metrics)], stdout=out, stderr=subprocess.STDOUT,
                                cwd=root.parent)
    try:
        wait_ready(port, proc)
    except AssertionError:
        proc.kill()
        raise AssertionError(log.read_text()[-3000:]) from None
    return proc, port


def test_models_run_in_their_environment_and_the_server_process_does_not(tmp_path):
    root = tmp_path / "models"
    envs = tmp_path / "envs"
    (root.mkdir())
    (root / "settings.json").write_text(json.dumps({"environments_dir": str(envs)}))  # MLServer's name
    # no parallel_workers anywhere: as MLServer's default (1), a model with an environment gets a worker
    tarball = env_tarball(_model(root, "env-a", ENV_PROBE, parameters={"environment_tarball": "./env.tar.gz"})
                          / "env.tar.gz")
    _model(root, "env-b", ENV_PROBE, parameters={"environment_tarball": "../env-a/env.tar.gz"})
    _model(root, "plain")  # in the server process
    _model(root, "plain-worker", parallel_workers=1)  # a worker without an environment
    bad = _model(root, "bad", ENV_PROBE, parameters={"environment_tarball": "bad.tar.gz"})
    env_tarball(bad / "bad.tar.gz", [{"name": "../escaped.txt", "text": "outside\n"}])
    unpacked = envs / hashlib.sha256(tarball.read_bytes()).hexdigest()

    log = tmp_path / "server.log"
    proc, port = _start(root, log)
    try:
        a, b = _report(port, "env-a"), _report(port, "env-b")
        for seen in (a, b):
            assert seen["envonly"] == "env-1" and seen["joblib"] == SHADOW_VERSION
            assert seen["tool"] == str(unpacked / "bin" / "envprobe-tool")
            assert seen["path0"] == str(unpacked / "bin")
            site = str(unpacked / "lib" / PYTHON_DIR / "site-packages")
            assert site in seen["sys_path"] and seen["sys_path"].index(site) <= 1  # after the model's own folder
        assert a["pid"] != b["pid"]  # each model its own workers, one unpacked folder
        server = _report(port, "plain")
        worker = _report(port, "plain-worker")
        for seen in (server, worker):
            assert seen["envonly"] is None and seen["joblib"] == joblib.__version__ and seen["tool"] is None
            assert not any(str(envs) in entry for entry in seen["sys_path"]) and str(envs) not in seen["path0"]
        assert a["executable"] == server["executable"]  # the server's own interpreter
        assert server["pid"] != worker["pid"] != a["pid"]

        assert httpx.get(f"http://127.0.0.1:{port}/v2/models/bad/ready").status_code != 200
        index = {m["name"]: m for m in httpx.post(f"http://127.0.0.1:{port}/v2/repository/index").json()}
        assert index["bad"]["state"] == "UNAVAILABLE"
        assert "'../escaped.txt' would be written outside the environment folder" in index["bad"]["reason"]
        assert all(index[name]["state"] == "READY" for name in ("env-a", "env-b", "plain", "plain-worker"))
        assert sorted(p.name for p in envs.iterdir()) == [unpacked.name]  # no partial folder, nothing escaped
        assert not (tmp_path / "escaped.txt").exists()
    finally:
        stop(proc)
    text = log.read_text()
    assert text.count("unpacked into") == 1 and text.count("unpacked before") == 1

    # a restart finds the environment unpacked
    made = unpacked.stat().st_mtime_ns
    proc, port = _start(root, log)
    try:
        assert _report(port, "env-a")["joblib"] == SHADOW_VERSION
    finally:
        stop(proc)
    assert log.read_text().count("unpacked into") == 1 and unpacked.stat().st_mtime_ns == made


def test_parallel_workers_zero_runs_the_model_in_the_server_as_mlserver(tmp_path, caplog):
    _model(tmp_path, "m", parameters={"environment_tarball": "env.tar.gz"})
    env_tarball(tmp_path / "m" / "env.tar.gz")
    with caplog.at_level(logging.WARNING, logger="gpuserve"):
        model = DiskRepository(tmp_path, parallel_workers=0, environments_dir=str(tmp_path / "envs"))._build_one(
            DiskRepository(tmp_path).scan()["m"][0])
    assert not isinstance(model, ParallelModel)
    assert "environment_tarball" in caplog.text and "parallel workers are off" in caplog.text
    assert not (tmp_path / "envs").exists()  # not unpacked, as in MLServer
    # not given: one worker with the environment; the runtime's module is not imported here
    (tmp_path / "m" / "runtime.py").write_text(ENV_PROBE)
    model = DiskRepository(tmp_path, parallel_workers=None)._build_one(DiskRepository(tmp_path).scan()["m"][0])
    assert isinstance(model, ParallelModel) and model.workers == 1
    assert model.environment_source.tarball == str(tmp_path / "m" / "env.tar.gz")


def test_unpacked_once_by_content(tmp_path, caplog):
    one = env_tarball(tmp_path / "one.tar.gz")
    two = tmp_path / "copy.tar.gz"
    two.write_bytes(one.read_bytes())
    with caplog.at_level(logging.INFO, logger="gpuserve"):
        first, second = unpack(str(one), str(tmp_path / "envs")), unpack(str(two), str(tmp_path / "envs"))
    assert first == second == str(tmp_path / "envs" / hashlib.sha256(one.read_bytes()).hexdigest())
    assert caplog.text.count("unpacked into") == 1 and "unpacked before" in caplog.text
    assert os.access(Path(first) / "bin" / "envprobe-tool", os.X_OK)
    environment = EnvironmentSource(tarball=str(one), environments_dir=str(tmp_path / "envs")).prepare()
    assert environment.sys_path == (os.path.join(first, "lib", PYTHON_DIR, "site-packages"),)
    assert environment.bin == os.path.join(first, "bin")


@pytest.mark.parametrize("member, words", [
    ({"name": "../up.txt", "text": "x"}, "'../up.txt' would be written outside"),
    ({"name": "lib/../../up.txt", "text": "x"}, "would be written outside"),
    ({"name": "/abs.txt", "text": "x"}, "'/abs.txt' would be written outside"),
    ({"name": "out", "kind": tarfile.SYMTYPE, "link": "../.."}, "'out' would link to"),
    ({"name": "etc", "kind": tarfile.SYMTYPE, "link": "/etc"}, "'etc' is a link to an absolute path"),
    ({"name": "hard", "kind": tarfile.LNKTYPE, "link": "../outside"}, "'hard' would link to"),
    ({"name": "fifo", "kind": tarfile.FIFOTYPE}, "'fifo' is a device or pipe"),
    # each link alone stays inside; through the first, the second leads out
    ([{"name": "y", "kind": tarfile.SYMTYPE, "link": "."}, {"name": "x", "kind": tarfile.SYMTYPE, "link": "y/.."},
      {"name": "x/up.txt", "text": "x"}], "'x' would link to"),
])
def test_members_that_leave_the_folder_are_refused(tmp_path, member, words):
    tarball = env_tarball(tmp_path / "bad.tar.gz", [member] if isinstance(member, dict) else member)
    with pytest.raises(ModelLoadError, match="was refused") as refused:
        unpack(str(tarball), str(tmp_path / "envs"))
    assert words in str(refused.value)
    assert list((tmp_path / "envs").iterdir()) == []  # nothing kept, not even a partial folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar.gz", "envs"]


def test_unusable_tarballs_say_why(tmp_path):
    envs = str(tmp_path / "envs")
    with pytest.raises(ModelLoadError, match="does not exist"):
        unpack(str(tmp_path / "missing.tar.gz"), envs)
    (tmp_path / "junk.tar.gz").write_text("not a tarball")
    with pytest.raises(ModelLoadError, match="is not a tar archive"):
        unpack(str(tmp_path / "junk.tar.gz"), envs)
    whole = env_tarball(tmp_path / "whole.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ModelLoadError, match="damaged|not a tar archive"):
        unpack(str(tmp_path / "cut.tar.gz"), envs)
    assert [p for p in Path(envs).iterdir()] == []
    other = env_tarball(tmp_path / "py39.tar.gz", python_dir="python3.9")
    with pytest.raises(ModelLoadError, match=f"is for python3.9; the server runs {PYTHON_DIR}"):
        EnvironmentSource(tarball=str(other), environments_dir=envs).prepare()


def test_server_wide_tarball_and_environments_dir_from_mlserver_settings(tmp_path):
    assert mlserver_overrides(None, {"MLSERVER_ENV_TARBALL": "/mnt/models/env.tar.gz",
                                     "MLSERVER_ENVIRONMENTS_DIR": "/tmp/e"}) == {
        "environment_tarball": "/mnt/models/env.tar.gz", "environments_dir": "/tmp/e"}
    own = ModelParameters(environment_tarball="mine.tar.gz")
    assert source_for(own, "/models/m", "/e", "/server.tar.gz").tarball == "/models/m/mine.tar.gz"
    assert source_for(ModelParameters(), "/models/m", "/e", "/server.tar.gz").tarball == "/server.tar.gz"
    assert source_for(ModelParameters(), "/models/m", "/e") is None
    # MLServer 1.7.1's environment_path: a folder used as it is, before any tarball
    both = ModelParameters(environment_path=str(tmp_path), environment_tarball="x.tar.gz")
    assert source_for(both, "/models/m", "/e").path == str(tmp_path)
