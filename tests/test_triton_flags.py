"""A tritonserver launch line starts gpuserve unchanged: every flag Triton 2.51 takes is accepted, and those with
a gpuserve meaning act (bind addresses, --allow-http/--allow-grpc, --log-file, keepalive flags on grpc.aio)."""

import contextlib
import io
import socket
import subprocess
import sys
import time

import httpx
import pytest

from conftest import free_ports, running_server
from gpuserve.cli import _parser
from gpuserve import triton_flags

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]

# every option of tritonserver 2.51's command line (src/command_line_parser.cc), with a value it takes
TRITON_FLAGS = {
    "--allow-client-shm": "true", "--allow-cpu-metrics": "false", "--allow-gpu-metrics": "false",
    "--allow-grpc": "true", "--allow-http": "true", "--allow-metrics": "true", "--allow-sagemaker": "false",
    "--allow-vertex-ai": "false", "--backend-config": "python,shm-default-byte-size=1048576",
    "--backend-directory": "/opt/tritonserver/backends", "--buffer-manager-thread-count": "2",
    "--cache-config": "local,size=1048576", "--cache-directory": "/opt/tritonserver/caches",
    "--cuda-memory-pool-byte-size": "0:67108864", "--cuda-virtual-address-size": "0:1073741824",
    "--enable-peer-access": "true", "--exit-on-error": "true", "--exit-timeout-secs": "30",
    "--grpc-address": "0.0.0.0", "--grpc-header-forward-pattern": "x-.*",
    "--grpc-http2-max-ping-strikes": "2", "--grpc-http2-max-pings-without-data": "2",
    "--grpc-http2-min-recv-ping-interval-without-data": "300000", "--grpc-infer-allocation-pool-size": "8",
    "--grpc-infer-response-compression-level": "none", "--grpc-infer-thread-count": "2",
    "--grpc-keepalive-permit-without-calls": "0", "--grpc-keepalive-time": "7200000",
    "--grpc-keepalive-timeout": "20000", "--grpc-max-connection-age": "600000",
    "--grpc-max-connection-age-grace": "60000", "--grpc-max-response-pool-size": "100", "--grpc-port": "8001",
    "--grpc-restricted-protocol": "model-repository:k=v", "--grpc-root-cert": "ca.crt",
    "--grpc-server-cert": "server.crt", "--grpc-server-key": "server.key", "--grpc-use-ssl": "false",
    "--grpc-use-ssl-mutual": "false", "--host-policy": "numa,numa-node=0", "--http-address": "0.0.0.0",
    "--http-header-forward-pattern": "x-.*", "--http-max-input-size": "67108864", "--http-port": "8000",
    "--http-restricted-api": "model-repository:k=v", "--http-thread-count": "8", "--id": "triton",
    "--load-model": "simple", "--log-error": "true", "--log-file": "/tmp/x.log", "--log-format": "default",
    "--log-info": "true", "--log-verbose": "0", "--log-warning": "true", "--metrics-address": "0.0.0.0",
    "--metrics-config": "summary_latencies=true", "--metrics-interval-ms": "2000", "--metrics-port": "8002",
    "--min-supported-compute-capability": "6.0", "--model-config-name": "h100",
    "--model-control-mode": "explicit", "--model-load-gpu-limit": "0:0.9", "--model-load-retry-count": "1",
    "--model-load-thread-count": "4", "--model-namespacing": "false", "--model-repository": "/models",
    "--model-store": "/models", "--rate-limit": "execution_count", "--rate-limit-resource": "R1:2:0",
    "--pinned-memory-pool-byte-size": "268435456", "--repoagent-directory": "/opt/tritonserver/repoagents",
    "--repository-poll-secs": "15", "--response-cache-byte-size": "1048576", "--reuse-grpc-port": "false",
    "--reuse-http-port": "false", "--sagemaker-port": "8080", "--sagemaker-safe-port-range": "8000-9000",
    "--sagemaker-thread-count": "8", "--strict-model-config": "false", "--strict-readiness": "true",
    "--trace-config": "rate=100", "--trace-count": "-1", "--trace-file": "/tmp/trace.json",
    "--trace-level": "OFF", "--trace-log-frequency": "0", "--trace-rate": "1000", "--vertex-ai-default-model": "m",
    "--vertex-ai-port": "8080", "--vertex-ai-thread-count": "8",
}
FLAGS_WITHOUT_VALUE = ("--disable-auto-complete-config",)


@pytest.mark.parametrize("flag", sorted(TRITON_FLAGS) + list(FLAGS_WITHOUT_VALUE))
def test_every_tritonserver_flag_is_taken(flag):
    words = ["start", "repo", flag] if flag in FLAGS_WITHOUT_VALUE else ["start", "repo", f"{flag}={TRITON_FLAGS[flag]}"]
    with contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            _parser().parse_args(words)
        except SystemExit:
            pytest.fail(f"{flag} refused: {err.getvalue()}")


def test_flags_with_a_meaning_become_settings():
    args = _parser().parse_args(["start", "repo", "--http-address=127.0.0.1", "--grpc-address", "::1",
                                 "--allow-grpc=false", "--allow-http", "0", "--reuse-grpc-port=1",
                                 "--log-file=/tmp/l.log", "--http-max-input-size=1024",
                                 "--grpc-keepalive-time=1000", "--grpc-max-connection-age-grace=5"])
    assert triton_flags.settings_from(args) == {
        "http_host": "127.0.0.1", "grpc_host": "::1", "enable_grpc": False, "enable_http": False,
        "reuse_grpc_port": True, "log_file": "/tmp/l.log", "max_request_bytes": 1024,
        "grpc_arguments": {"grpc.keepalive_time_ms": 1000, "grpc.max_connection_age_grace_ms": 5}}
    assert triton_flags.settings_from(_parser().parse_args(["start", "repo"])) == {}


def _refused(host, port):
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=2).close()


def test_each_endpoint_binds_its_own_address():
    with running_server(host="127.0.0.2", http_host="127.0.0.1", grpc_host="127.0.0.3") as server:
        http, grpc_port, metrics = server.ports["http"], server.ports["grpc"], server.ports["metrics"]
        assert httpx.get(f"http://127.0.0.1:{http}/v2/health/live").status_code == 200
        _refused("127.0.0.2", http)
        socket.create_connection(("127.0.0.3", grpc_port), timeout=2).close()
        _refused("127.0.0.1", grpc_port)
        assert httpx.get(f"http://127.0.0.2:{metrics}/metrics").status_code == 200  # `host` as before


def test_without_http_the_other_endpoints_serve():
    grpcclient = pytest.importorskip("tritonclient.grpc")
    with running_server(enable_http=False) as server:
        assert "http" not in server.ports
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
        assert client.is_server_live()
        assert httpx.get(f"http://127.0.0.1:{server.ports['metrics']}/metrics").status_code == 200


def test_keepalive_flags_serve_grpc_on_grpc_aio_which_applies_them(caplog):
    grpc = pytest.importorskip("grpc")
    grpcclient = pytest.importorskip("tritonclient.grpc")
    with running_server(grpc_transport="native", grpc_arguments={"grpc.keepalive_time_ms": 60000}) as server:
        assert any(isinstance(s, grpc.aio.Server) for s in server.grpc_servers)
        assert grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}").is_server_live()
    assert "needs the hpack package" not in caplog.text  # hpack is there: the flags chose grpc.aio


def _wait_ready(proc, port):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    pytest.fail("not ready in time")


def test_a_triton_launch_line_starts_logs_to_its_file_and_notes_what_it_ignores(tmp_path):
    log = tmp_path / "server.log"
    ports = free_ports(3)
    proc = subprocess.Popen([sys.executable, "-m", "gpuserve.cli", "start", f"--model-repository={ROOT / 'configs' / 'demo'}",
                             f"--http-port={ports[0]}", f"--grpc-port={ports[1]}", f"--metrics-port={ports[2]}",
                             "--allow-grpc=false", f"--log-file={log}", "--buffer-manager-thread-count=4",
                             "--grpc-keepalive-time=7200000", "--http-address=127.0.0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_ready(proc, ports[0])
        _refused("127.0.0.1", ports[1])  # --allow-grpc=false
        text = log.read_text()
        assert "--buffer-manager-thread-count=4 is a tritonserver flag with no gpuserve meaning" in text
        assert "gpuserve listening" in text
    finally:
        proc.terminate()
        proc.wait(60)
    assert "gpuserve listening" not in proc.stderr.read()  # the log went to the file


class _Flaky:
    """A KServe-style model whose first load fails (Triton's qa retry_model fails its first initialize)."""

    @staticmethod
    def make(name):
        from gpuserve import Model

        class Flaky(Model):
            attempts = 0

            def load(self):
                Flaky.attempts += 1
                if Flaky.attempts == 1:
                    raise RuntimeError("not yet")
                self.ready = True
                return True

            async def predict(self, payload, headers=None):
                return {"predictions": [1]}

        return Flaky(name)


@pytest.mark.parametrize("retries, ready", [(0, False), (1, True)])
def test_model_load_retry_count_loads_a_failed_model_again(retries, ready):
    model = _Flaky.make("retry_model")
    with running_server([model], model_load_retry_count=retries) as server:
        answer = httpx.get(f"http://127.0.0.1:{server.ports['http']}/v2/models/retry_model/ready")
        assert (answer.status_code == 200) is ready
        assert type(model).attempts == (2 if ready else 1)
    args = _parser().parse_args(["start", "repo", "--model-load-retry-count=3"])
    assert triton_flags.settings_from(args)["model_load_retry_count"] == 3


def test_a_triton_launch_line_takes_tritons_ports_where_none_is_set(monkeypatch):
    from gpuserve.cli import TRITON_PORTS, triton_default_ports
    from gpuserve.settings import ServerSettings

    monkeypatch.setenv("GPUSERVE_GRPC_PORT", "9999")
    settings = ServerSettings.load(None, metrics_port=7777)
    triton_default_ports(settings)
    assert (settings.http_port, settings.grpc_port, settings.metrics_port) == (8000, 9999, 7777)
    assert TRITON_PORTS == {"http_port": 8000, "grpc_port": 8001, "metrics_port": 8002}


def test_the_tritonserver_command_runs_a_tritonserver_launch_line(tmp_path):
    """`tritonserver --model-repository=...` (a manifest's command) starts gpuserve; ports from GPUSERVE_*."""
    import importlib.metadata
    import os

    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts.get("tritonserver") == "gpuserve.cli:tritonserver_main"
    ports = free_ports(3)
    env = dict(os.environ, GPUSERVE_HTTP_PORT=str(ports[0]), GPUSERVE_GRPC_PORT=str(ports[1]),
               GPUSERVE_METRICS_PORT=str(ports[2]))
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from gpuserve.cli import tritonserver_main; "
                             "sys.exit(tritonserver_main())", f"--model-repository={ROOT / 'configs' / 'demo'}",
                             "--http-address=127.0.0.1", "--log-verbose=0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_ready(proc, ports[0])
        with socket.create_connection(("127.0.0.1", ports[1]), timeout=5):
            pass  # gRPC on the port GPUSERVE_GRPC_PORT names
    finally:
        proc.terminate()
        proc.wait(60)
