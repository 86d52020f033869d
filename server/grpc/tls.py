"""TLS for the gRPC endpoint, from Triton's flags: --grpc-use-ssl serves TLS with --grpc-server-cert and
--grpc-server-key; --grpc-use-ssl-mutual (which implies it) also requires a client certificate signed by
--grpc-root-cert. tritonclient.grpc's `ssl=True, root_certificates=, private_key=, certificate_chain=`
connect to it. Both transports read the same files: grpc.aio through its server credentials, the native
HTTP/2 transport through an `ssl.SSLContext` offering ALPN "h2" (what gRPC clients insist on).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Optional, Tuple

from gpuserve.errors import InvalidSettings
from gpuserve.settings import ServerSettings


def wanted(settings: ServerSettings) -> bool:
    return bool(settings.grpc_use_ssl or settings.grpc_use_ssl_mutual)


def _read(path: Optional[str], flag: str) -> bytes:
    if not path:
        raise InvalidSettings(f"gRPC TLS needs --{flag} (setting {flag.replace('-', '_')})")
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidSettings(f"cannot read --{flag} '{path}': {exc.strerror or exc}") from None


def pem_files(settings: ServerSettings) -> Tuple[bytes, bytes, Optional[bytes]]:
    """(certificate chain, private key, root certificates or None), each read now so a missing file stops the
    start with its name."""
    cert = _read(settings.grpc_server_cert, "grpc-server-cert")
    key = _read(settings.grpc_server_key, "grpc-server-key")
    mutual = bool(settings.grpc_use_ssl_mutual)
    root = _read(settings.grpc_root_cert, "grpc-root-cert") if mutual or settings.grpc_root_cert else None
    return cert, key, root


def grpcio_credentials(settings: ServerSettings):
    import grpc

    cert, key, root = pem_files(settings)
    try:
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=root,
                                           require_client_auth=bool(settings.grpc_use_ssl_mutual))
    except Exception as exc:  # grpc checks the PEM text itself
        raise InvalidSettings(f"gRPC TLS: {exc}") from None


def ssl_context(settings: ServerSettings) -> ssl.SSLContext:
    """The native transport's server context: TLS 1.2 or later, ALPN h2, client certificates verified
    against the root certificates when mutual."""
    pem_files(settings)  # the same checks and messages as grpc.aio's
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.grpc_server_cert, settings.grpc_server_key)
        if settings.grpc_root_cert:
            context.load_verify_locations(settings.grpc_root_cert)
    except (ssl.SSLError, OSError) as exc:
        raise InvalidSettings(f"gRPC TLS: cannot use the certificate files: {exc}") from None
    if settings.grpc_use_ssl_mutual:
        context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])
    return context
