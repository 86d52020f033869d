"""What Triton's client-facing qa suites (L0_socket, L0_repoagent_checksum, L0_client_nobatch, ...) found
different in gpuserve, each checked against what tritonserver 2.51 does."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from conftest import free_ports, running_server
from gpuserve.errors import InvalidSettings


def _live(url: str, proc: subprocess.Popen, seconds: float = 60) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def test_a_disabled_endpoints_port_is_not_read(tmp_path):
    """L0_socket starts `--http-port -47 --allow-http 0`: tritonserver never reads a disabled endpoint's port,
    so the start goes on (gpuserve refused the port as out of range)."""
    http, metrics = free_ports(2)
    proc = subprocess.Popen([sys.executable, "-m", "gpuserve.cli", "start", f"--model-repository={tmp_path}",
                             "--grpc-port", "-47", "--allow-grpc", "0", "--http-port", str(http),
                             "--metrics-port", str(metrics), "--http-address", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert _live(f"http://127.0.0.1:{http}/v2/health/live", proc), proc.stderr.read().decode()[-2000:]
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize("flag, words", [
    ("--metrics-port", "The server cannot listen to HTTP requests and metrics requests at the same "
                       "address and port 0.0.0.0:{}"),
    ("--grpc-port", "The server cannot listen to HTTP requests and GRPC requests at the same "
                    "address and port 0.0.0.0:{}"),
])
def test_two_endpoints_on_one_port_stop_a_tritonserver_start(tmp_path, flag, words):
    """As tritonserver's start-up check: metrics on the HTTP port is refused on its launch line (gpuserve's own
    line serves /metrics on the HTTP endpoint then), and HTTP and gRPC on one port are refused in its words,
    not as a socket 'already in use' by some other process."""
    http, grpc, metrics = free_ports(3)
    line = [sys.executable, "-m", "gpuserve.cli", "start", f"--model-repository={tmp_path}", "--http-port", str(http),
            "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    done = subprocess.run(line + [flag, str(http)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert words.format(http) in done.stderr


def test_reuse_http_port_shares_the_http_port_alone(tmp_path):
    """--reuse-http-port lets a second server listen on the HTTP port; its gRPC port stays its own, so a second
    server on both ports is refused (gpuserve shared every port on either flag)."""
    http, grpc, metrics, grpc2, metrics2, metrics3 = free_ports(6)
    with running_server(reuse_http_port=True, http_port=http, grpc_port=grpc, metrics_port=metrics):
        with pytest.raises(InvalidSettings, match="GRPC"):
            with running_server(reuse_http_port=True, http_port=http, grpc_port=grpc, metrics_port=metrics3):
                pass
        with running_server(reuse_http_port=True, http_port=http, grpc_port=grpc2, metrics_port=metrics2) as other:
            assert other.ports["http"] == http
            assert httpx.get(f"http://127.0.0.1:{http}/v2/health/live").status_code == 200


def test_reuse_grpc_port_shares_the_grpc_port_alone():
    http, grpc, metrics, http2, metrics2 = free_ports(5)
    ports = dict(http_port=http, grpc_port=grpc, metrics_port=metrics)
    with running_server(reuse_grpc_port=True, **ports):
        with pytest.raises(InvalidSettings, match="HTTP"):
            with running_server(reuse_grpc_port=True, **ports):
                pass
        with running_server(reuse_grpc_port=True, http_port=http2, grpc_port=grpc, metrics_port=metrics2) as other:
            assert other.ports["grpc"] == grpc


CHECKSUM_CONFIG = """
name: "identity_int32"
backend: "identity"
max_batch_size: 0
input [ { name: "INPUT0", data_type: TYPE_INT32, dims: [ -1 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_INT32, dims: [ -1 ] } ]
model_repository_agents { agents [ { name: "checksum", parameters [
  { key: "MD5:1/libtriton_identity.so", value: "invalid_checksum" } ] } ] }
"""


def test_checksum_refusal_is_said_in_tritonservers_log_line(tmp_path, caplog):
    """qa/L0_repoagent_checksum greps the log for "'identity_int32': Mismatched MD5 hash for file ...": Triton's
    "Poll failed for model directory" line. Said once, though the repository is read more than once."""
    from gpuserve import ModelRepository
    from gpuserve.repository import DiskRepository

    folder = tmp_path / "identity_int32"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "libtriton_identity.so").write_bytes(b"not the library")
    (folder / "config.pbtxt").write_text(CHECKSUM_CONFIG)
    caplog.set_level("ERROR", logger="gpuserve")
    repository = DiskRepository(tmp_path)
    repository.catalog()
    registry = repository.populate(ModelRepository())
    said = [r.getMessage() for r in caplog.records if "Poll failed" in r.getMessage()]
    assert len(said) == 1
    assert said[0].startswith("Poll failed for model directory 'identity_int32': Mismatched MD5 hash for file "
                              "1/libtriton_identity.so, expect: invalid_checksum, got: ")
    assert not any(m.ready for _, _, m in registry.all_versions())


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
@pytest.mark.parametrize("address", ["ipv6:[::1]", "ipv6:::1", "[::1]"])
def test_tritonservers_ipv6_address_forms(address):
    """Triton documents `--http-address ipv6:[::1]` for IPv6 (the metrics endpoint follows it); gpuserve took
    the text as a host name and stopped the start. gRPC takes the bracketed literal, as grpc does."""
    grpcclient = pytest.importorskip("tritonclient.grpc")
    grpc_address = "[::1]" if address.startswith("[") else "::1"
    with running_server(http_host=address, metrics_host=address, grpc_host=grpc_address) as server:
        assert httpx.get(f"http://[::1]:{server.ports['http']}/v2/health/live").status_code == 200
        assert httpx.get(f"http://[::1]:{server.ports['metrics']}/metrics").status_code == 200
        assert grpcclient.InferenceServerClient(f"[::1]:{server.ports['grpc']}").is_server_live()


def test_a_unix_address_is_refused_clearly():
    with pytest.raises(InvalidSettings, match="TCP addresses only"):
        with running_server(http_host="unix:/tmp/gpuserve-h5.sock"):
            pass


def test_metrics_listen_at_the_http_address_unless_told():
    """As tritonserver: --http-address without --metrics-address puts metrics there too (gpuserve left them on
    0.0.0.0, open to the network where a user had kept HTTP on loopback)."""
    from gpuserve import triton_flags
    from gpuserve.cli import _parser

    given = triton_flags.settings_from(_parser().parse_args(["start", "repo", "--http-address", "127.0.0.1"]))
    assert given["metrics_host"] == "127.0.0.1"
    given = triton_flags.settings_from(_parser().parse_args(["start", "repo", "--http-address", "127.0.0.1",
                                                             "--metrics-address", "0.0.0.0"]))
    assert given["metrics_host"] == "0.0.0.0"
    # a disabled endpoint's address is not read (qa/L0_socket: --http-address -47 --allow-http 0 starts)
    given = triton_flags.settings_from(_parser().parse_args(["start", "repo", "--http-address", "-47",
                                                             "--allow-http", "0"]))
    assert "metrics_host" not in given


@pytest.mark.parametrize("transport", ["native", "grpcio"])
def test_grpc_over_a_unix_socket(tmp_path, transport):
    """tritonserver's `--grpc-address unix:PATH --grpc-port P` serves gRPC on the Unix socket `PATH:P`, which
    tritonclient reaches as `unix:PATH:P` (a sidecar's way); gpuserve took `unix:PATH` for a host name."""
    grpcclient = pytest.importorskip("tritonclient.grpc")
    path = tmp_path / "g.sock"
    with running_server(grpc_host=f"unix:{path}", grpc_port=9537, grpc_transport=transport) as server:
        assert server.ports["grpc"] == 9537
        assert (tmp_path / "g.sock:9537").exists()
        assert grpcclient.InferenceServerClient(f"unix:{path}:9537").is_server_live()
