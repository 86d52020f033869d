"""gRPC over TLS from Triton's --grpc-use-ssl / --grpc-use-ssl-mutual flags, on both transports: tritonclient
connects with `ssl=True` and the CA's certificate (as qa/L0_secure_grpc does), a plaintext client or (mutual)
one without a signed client certificate is refused, and missing files stop the start with their flag."""

import queue
import shutil
import subprocess

import numpy as np
import pytest

from conftest import onnx_reference, running_server
from gpuserve import ModelRepository
from gpuserve.errors import InvalidSettings
from gpuserve.repository import DiskRepository

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _openssl(folder, *args):
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for localhost and a client certificate, both signed by the CA, and a
    self-signed client certificate it did not sign."""
    folder = tmp_path_factory.mktemp("pki")
    _openssl(folder, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "2", "-subj", "/CN=gpuserve test CA")
    _openssl(folder, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "stranger.key", "-out",
             "stranger.crt", "-days", "2", "-subj", "/CN=localhost")
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for who in ("server", "client"):
        _openssl(folder, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{who}.key", "-out", f"{who}.csr",
                 "-subj", "/CN=localhost")
        _openssl(folder, "x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial",
                 "1" if who == "server" else "2", "-days", "2", "-out", f"{who}.crt", "-extfile", "san.ext")
    return folder


@pytest.fixture(scope="module")
def repo(simple_onnx_repo):
    return simple_onnx_repo


def _server(repo, pki, transport, **settings):
    root = repo[0]
    loaded = DiskRepository(str(root)).populate(ModelRepository())
    return running_server(repository=loaded, grpc_transport=transport, grpc_server_cert=str(pki / "server.crt"),
                          grpc_server_key=str(pki / "server.key"), **settings)


def _check_infer(client, repo):
    _, weight, bias = repo
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    infer_input = grpcclient.InferInput("input", [2, 4], "FP32")
    infer_input.set_data_from_numpy(x)
    result = client.infer("simple", [infer_input])
    np.testing.assert_allclose(result.as_numpy("output"), onnx_reference(x, weight, bias), rtol=1e-5)
    answers: "queue.Queue" = queue.Queue()
    client.start_stream(lambda result, error: answers.put((result, error)))
    client.async_stream_infer("simple", [infer_input])
    result, error = answers.get(timeout=30)
    client.stop_stream()
    assert error is None
    np.testing.assert_allclose(result.as_numpy("output"), onnx_reference(x, weight, bias), rtol=1e-5)


def _refused(url, **options):
    client = grpcclient.InferenceServerClient(url, **options)
    try:
        with pytest.raises(InferenceServerException):
            client.is_server_live(client_timeout=10)
    finally:
        client.close()


@pytest.mark.parametrize("transport", ["native", "grpcio"])
def test_tls_serves_clients_that_trust_the_ca_and_refuses_plaintext(repo, pki, transport):
    with _server(repo, pki, transport, grpc_use_ssl=True) as server:
        url = f"localhost:{server.ports['grpc']}"
        client = grpcclient.InferenceServerClient(url, ssl=True, root_certificates=str(pki / "ca.crt"))
        assert client.is_server_live() and client.is_model_ready("simple")
        _check_infer(client, repo)
        client.close()
        _refused(url)  # plaintext HTTP/2 against TLS


@pytest.mark.parametrize("transport", ["native", "grpcio"])
def test_mutual_tls_needs_a_client_certificate_from_the_root(repo, pki, transport):
    with _server(repo, pki, transport, grpc_use_ssl_mutual=True, grpc_root_cert=str(pki / "ca.crt")) as server:
        url = f"localhost:{server.ports['grpc']}"
        client = grpcclient.InferenceServerClient(url, ssl=True, root_certificates=str(pki / "ca.crt"),
                                                  private_key=str(pki / "client.key"),
                                                  certificate_chain=str(pki / "client.crt"))
        assert client.is_server_live()
        _check_infer(client, repo)
        client.close()
        _refused(url, ssl=True, root_certificates=str(pki / "ca.crt"))  # no client certificate
        _refused(url, ssl=True, root_certificates=str(pki / "ca.crt"), private_key=str(pki / "stranger.key"),
                 certificate_chain=str(pki / "stranger.crt"))  # a client certificate the root did not sign


@pytest.mark.parametrize("transport", ["native", "grpcio"])
def test_missing_tls_files_stop_the_start_naming_the_flag(repo, pki, transport, tmp_path):
    with pytest.raises(InvalidSettings, match="grpc-server-key"):
        with running_server(grpc_transport=transport, grpc_use_ssl=True, grpc_server_cert=str(pki / "server.crt")):
            pass
    with pytest.raises(InvalidSettings, match="grpc-root-cert"):
        with _server(repo, pki, transport, grpc_use_ssl_mutual=True):
            pass
    with pytest.raises(InvalidSettings, match="cannot read --grpc-server-cert"):
        with running_server(grpc_transport=transport, grpc_use_ssl=True, grpc_server_cert=str(tmp_path / "none"),
                            grpc_server_key=str(pki / "server.key")):
            pass
