"""Who may call: TLS and mutual TLS credentials for the server, and a bearer-token check.

With ``--token-file``, every call but a health check must carry ``authorization: Bearer
<token>`` (server reflection included: it lists the API); the comparison takes constant time.
Health stays open so that probes and load balancers need no secret. The certificate and key
are checked as a matching pair before the server binds, so a swapped or mismatched pair is a
one-line error naming the files.
"""

from __future__ import annotations

import hmac
import ssl
from pathlib import Path
from typing import Any

import grpc

OPEN_SERVICES = ("/grpc.health.v1.Health/",)
REFUSED = "missing or wrong bearer token (authorization: Bearer ...)"


def server_credentials(cert: Path, key: Path, client_ca: Path | None) -> grpc.ServerCredentials:
    """TLS with ``cert``/``key``; mutual TLS when ``client_ca`` is given. Raises ValueError
    naming the files when they are not a PEM certificate chain and its private key."""
    check_key_pair(cert, key)
    if client_ca is not None:
        try:
            ssl.create_default_context(cafile=str(client_ca))
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"tls client CA file {client_ca}: not a PEM certificate ({exc})"
                             ) from None  # fmt: skip
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=client_ca.read_bytes() if client_ca else None,
        require_client_auth=client_ca is not None,
    )


def check_key_pair(cert: Path, key: Path) -> None:
    """That ``cert`` is a PEM certificate chain and ``key`` its private key (the standard
    library's TLS loads them as a server would); ValueError naming both files otherwise."""
    for path in (cert, key):
        if not path.is_file():
            raise ValueError(f"TLS file {path} does not exist")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except ssl.SSLError as exc:
        reason = ("the private key does not match the certificate"
                  if "KEY_VALUES_MISMATCH" in str(exc)
                  else "they are not a PEM certificate and its PEM private key "
                       "(swapped, or another format?)")  # fmt: skip
        raise ValueError(f"--tls-cert-file {cert} and --tls-key-file {key}: {reason} "
                         f"({exc.reason or exc})") from None  # fmt: skip


def read_token(path: Path) -> str:
    token = path.read_text().strip()
    if len(token) < 16:
        raise ValueError(f"the token in {path} is shorter than 16 characters")
    return token


class TokenAuth(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED unless the call carries the bearer token (health checks excepted)."""

    def __init__(self, token: str) -> None:
        self.expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_SERVICES):
            return handler
        offered = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(str(offered).encode(), self.expected):
            return handler

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSED)

        # Every kind of call (reflection is a bidirectional stream) gets the refusal.
        if handler.unary_unary is not None:
            make = grpc.unary_unary_rpc_method_handler
        elif handler.unary_stream is not None:
            make = grpc.unary_stream_rpc_method_handler
        elif handler.stream_unary is not None:
            make = grpc.stream_unary_rpc_method_handler
        else:
            make = grpc.stream_stream_rpc_method_handler
        return make(refuse, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)  # fmt: skip
