"""MLServer 1.7.1 and gpuserve side by side on `parameters.environment_tarball` model folders (the ones
tests/test_mlserver_env_tarball.py builds). Not a test; run by hand after `bash benchmarks/peers/setup.sh
mlserver` (with uvloop==0.21.0 in that venv):

    .venv/bin/python benchmarks/peers/env_tarball_compare.py

Each scenario is served by one server, then the other, from a fresh copy of the folder and an empty
environments_dir: per model, whether it is ready and what its runtime sees (a package only the tarball
has, a `joblib` the tarball shadows, the tarball's program on PATH); then which folders the
environments_dir holds while serving and after a clean stop, and whether anything was written outside.
The tarballs carry a `bin/python` that runs the MLServer venv's interpreter, as MLServer starts the
environment's own interpreter (without one, its workers cannot start; scenario `no-bin-python`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from test_mlserver_env_tarball import ENV_PROBE, PROBE, _model, env_tarball  # noqa: E402

MLSERVER = ROOT / ".peers" / "mlserver" / "bin"
PORT = 19600
WRAPPER = {"name": "bin/python", "text": f"#!/bin/sh\nexec {MLSERVER / 'python'} \"$@\"\n", "mode": 0o755}
ESCAPE = {"name": "../escaped.txt", "text": "outside\n"}


def scenario(root: Path, name: str) -> dict:
    """Writes the models; answers the server settings (MLServer's names)."""
    env = {"environment_tarball": "./env.tar.gz"}
    if name == "shared":  # two models, one tarball, plus models without an environment
        env_tarball(_model(root, "env-a", ENV_PROBE, parameters=env) / "env.tar.gz", [WRAPPER])
        _model(root, "env-b", ENV_PROBE, parameters={"environment_tarball": "../env-a/env.tar.gz"})
        _model(root, "plain", PROBE)
        return {}
    if name == "one":
        env_tarball(_model(root, "env-a", ENV_PROBE, parameters=env) / "env.tar.gz", [WRAPPER])
        _model(root, "plain", PROBE)
        return {}
    if name == "escape":
        env_tarball(_model(root, "bad", ENV_PROBE, parameters=env) / "env.tar.gz", [WRAPPER, ESCAPE])
        _model(root, "plain", PROBE)
        return {}
    if name == "corrupt":
        (_model(root, "broken", ENV_PROBE, parameters=env) / "env.tar.gz").write_text("not a tarball")
        _model(root, "plain", PROBE)
        return {}
    if name == "workers-0":
        env_tarball(_model(root, "env-a", PROBE, parameters=env) / "env.tar.gz", [WRAPPER])
        return {"parallel_workers": 0}
    if name == "no-bin-python":
        env_tarball(_model(root, "env-a", ENV_PROBE, parameters=env) / "env.tar.gz")
        return {}
    raise ValueError(name)


def serve(server: str, root: Path, log: Path) -> subprocess.Popen:
    if server == "mlserver":
        args = [str(MLSERVER / "mlserver"), "start", str(root)]
    else:
        args = [str(ROOT / ".venv" / "bin" / "gpuserve"), "start", str(root), "--http-port", str(PORT),
                "--grpc-port", str(PORT + 1), "--metrics-port", str(PORT + 2)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=root.parent, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{PORT}/v2/health/live", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    time.sleep(5)  # models load after the server is live (MLServer)
    return proc


def probe(name: str, envs: Path) -> str:
    try:
        ready = httpx.get(f"http://127.0.0.1:{PORT}/v2/models/{name}/ready", timeout=5).status_code
        answer = httpx.post(f"http://127.0.0.1:{PORT}/v2/models/{name}/infer", timeout=30, json={
            "inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [1]}]})
    except httpx.HTTPError as exc:
        return f"no answer ({type(exc).__name__})"
    if answer.status_code != 200:
        return f"ready {ready}; {answer.status_code} {answer.text[:160]}"
    seen = json.loads(answer.json()["outputs"][0]["data"][0])
    where = lambda p: p and p.replace(str(envs), "ENVS")  # noqa: E731
    return (f"ready {ready}; envonly={seen['envonly']} joblib={seen['joblib']} tool={where(seen['tool'])} "
            f"PATH[0]={where(seen['path0'])}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def listing(envs: Path) -> list:
    return sorted(p.name[:12] + ("..." if len(p.name) > 12 else "") for p in envs.iterdir()) if envs.exists() else []


def main() -> None:
    names = sys.argv[1:] or ["one", "shared", "escape", "corrupt", "workers-0", "no-bin-python"]
    for name in names:
        print(f"\n## {name}")
        for server in ("mlserver", "gpuserve"):
            work = Path(tempfile.mkdtemp(prefix=f"envcmp-{server}-"))
            root, envs = work / "models", work / "envs"
            root.mkdir()
            settings = {"http_port": PORT, "grpc_port": PORT + 1, "metrics_port": PORT + 2,
                        "environments_dir": str(envs), **scenario(root, name)}
            (root / "settings.json").write_text(json.dumps(settings))
            proc = serve(server, root, work / "server.log")
            try:
                for model in sorted(p.name for p in root.iterdir() if p.is_dir()):
                    print(f"{server:9} {model:7} {probe(model, envs)}")
                during = listing(envs)
                running = proc.poll() is None
            finally:
                stop(proc)
            print(f"{server:9} running after load: {running}; envs while serving {during}, after stop "
                  f"{listing(envs)}; escaped: {sorted(p.name for p in work.rglob('escaped.txt'))}")
            problems = [line for line in (work / "server.log").read_text(errors="replace").splitlines()
                        if "stopped unexpectedly" in line or "failed to load during startup" in line]
            if problems:
                print(f"{server:9} log: {problems[0][:200]}")
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
