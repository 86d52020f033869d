"""KServe 0.21's ModelServer options a KServe script may use: HTTPS (`ssl_certfile`/`ssl_keyfile`, the
KSERVE_TLS_* environment, port 8443 when the HTTP port was left at 8080), `timeout_keep_alive`, `event_loop`,
its loop-exception form of `register_exception_handler`, and `setup_event_loop`/`register_signal_handler`/
`stop(sig)` (names and defaults read off kserve 0.21.0)."""

import asyncio
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time

import httpx
import pytest

from conftest import running_server
from gpuserve import Model
from gpuserve.errors import InvalidSettings
from gpuserve.server import model_server as kserve_model_server
from gpuserve.server.model_server import ModelServer, kserve_parser, loop_runner
from gpuserve.settings import ServerSettings


class Doubler(Model):
    def load(self):
        self.ready = True

    async def predict(self, payload, headers=None):
        return {"predictions": [x * 2 for x in payload["instances"]]}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("no openssl here to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return str(cert), str(key)


def test_the_parser_has_kserve_021s_flags_and_defaults(monkeypatch):
    args = kserve_parser().parse_args([])
    assert (args.event_loop, args.timeout_keep_alive, args.ssl_certfile, args.ssl_keyfile) == ("auto", 65, None, None)
    monkeypatch.setenv("KSERVE_TLS_CERT_FILE", "/c.pem")
    monkeypatch.setenv("KSERVE_TLS_KEY_FILE", "/k.pem")
    args = kserve_parser().parse_args(["--event-loop", "asyncio", "--timeout-keep-alive", "9"])
    assert (args.event_loop, args.timeout_keep_alive, args.ssl_certfile, args.ssl_keyfile) == \
        ("asyncio", 9, "/c.pem", "/k.pem")
    with pytest.raises(SystemExit):
        kserve_parser().parse_args(["--event-loop", "trio"])


def test_a_script_with_a_certificate_listens_on_8443(monkeypatch, certificate):
    cert, key = certificate
    monkeypatch.setattr(sys, "argv", ["model.py", "--ssl_certfile", cert, "--ssl_keyfile", key,
                                      "--timeout-keep-alive", "7"])
    server = ModelServer()
    assert (server.http_port, server.ssl_certfile, server.ssl_keyfile) == (8443, cert, key)
    assert server.timeout_keep_alive == 7 and server.event_loop == "auto"
    monkeypatch.setattr(sys, "argv", ["model.py", "--http_port", "9000"])
    monkeypatch.setenv("KSERVE_TLS_CERT_FILE", cert)
    monkeypatch.setenv("KSERVE_TLS_KEY_FILE", key)
    server = ModelServer()
    assert (server.http_port, server.ssl_certfile) == (9000, cert)  # a port asked for stays
    monkeypatch.setattr(sys, "argv", ["model.py"])
    monkeypatch.delenv("KSERVE_TLS_CERT_FILE")
    monkeypatch.delenv("KSERVE_TLS_KEY_FILE")
    server = ModelServer()
    assert (server.http_port, server.ssl_certfile, server.timeout_keep_alive) == (8080, None, 65)


@pytest.mark.parametrize("http_server", ["gpuserve", "uvicorn"])
def test_https_serves_with_the_certificate(certificate, http_server):
    cert, key = certificate
    with running_server([Doubler("doubler")], http_server=http_server, http_ssl_certfile=cert,
                        http_ssl_keyfile=key) as server:
        base = f"https://127.0.0.1:{server.ports['http']}"
        with httpx.Client(verify=ssl.create_default_context(cafile=cert)) as client:
            assert client.get(f"{base}/v2/health/live").status_code == 200
            answer = client.post(f"{base}/v1/models/doubler:predict", json={"instances": [1, 2]})
            assert answer.json() == {"predictions": [2, 4]}
        with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port gets no answer
            httpx.get(f"http://127.0.0.1:{server.ports['http']}/v2/health/live", timeout=2)


def test_a_certificate_without_its_key_is_refused(certificate):
    with pytest.raises(InvalidSettings, match="both a certificate and its key"):
        with running_server([Doubler("doubler")], http_ssl_certfile=certificate[0]):
            pass


@pytest.mark.parametrize("http_server, keep_alive_s", [("gpuserve", 0.5), ("uvicorn", 1.0)])
def test_an_idle_connection_closes_after_the_keep_alive_timeout(http_server, keep_alive_s):
    with running_server([Doubler("doubler")], http_server=http_server, http_keep_alive_s=keep_alive_s) as server:
        with socket.create_connection(("127.0.0.1", server.ports["http"]), timeout=10) as sock:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b'{"live":true}'):  # uvicorn writes the head and the body apart
                piece = sock.recv(4096)
                assert piece, answer
                answer += piece
            assert answer.startswith(b"HTTP/1.1 200")
            time.sleep(keep_alive_s + 1.5)
            assert sock.recv(4096) == b""  # the server closed it


def test_event_loop_choice():
    import uvloop

    assert loop_runner("asyncio") is asyncio.run
    assert loop_runner("uvloop") is uvloop.run and loop_runner("auto") is uvloop.run
    with pytest.raises(InvalidSettings, match="event_loop"):
        ServerSettings.load(None, event_loop="trio")


def test_kserve_form_of_register_exception_handler_handles_the_loops_errors():
    seen = []
    server = ModelServer(settings=ServerSettings.load(None, host="127.0.0.1", http_port=0, grpc_port=0,
                                                      metrics_port=0))
    server.register_exception_handler(lambda loop, context: seen.append(context.get("message")))
    server.register_model(Doubler("doubler"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    assert server.started.wait(30)
    try:
        loop.call_soon_threadsafe(loop.call_exception_handler, {"message": "from a test"})
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen == ["from a test"]
    finally:
        server.stop(15)  # KServe's stop(sig)
        thread.join(30)
    assert not thread.is_alive()


def test_kserve_021_methods_exist_with_its_arguments():
    server = ModelServer(settings=ServerSettings.load(None, http_port=0, grpc_port=0, metrics_port=0))
    loop = asyncio.new_event_loop()
    try:
        server.setup_event_loop(loop)
        assert loop.get_exception_handler() == server.default_exception_handler
    finally:
        loop.close()
    assert callable(server.register_signal_handler)
    assert kserve_model_server.DEFAULT_HTTPS_PORT == 8443
