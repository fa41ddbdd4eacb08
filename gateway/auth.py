"""Who may call: TLS and mutual TLS credentials for the server, and a bearer-token check.

With ``--token-file``, every call but a health check must carry ``authorization: Bearer
<token>``; the comparison takes constant time. Health stays open so that probes and load
balancers need no secret.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

import grpc

OPEN_SERVICES = ("/grpc.health.v1.Health/",)
REFUSED = "missing or wrong bearer token (authorization: Bearer ...)"


def server_credentials(cert: Path, key: Path, client_ca: Path | None) -> grpc.ServerCredentials:
    """TLS with ``cert``/``key``; mutual TLS when ``client_ca`` is given."""
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=client_ca.read_bytes() if client_ca else None,
        require_client_auth=client_ca is not None,
    )


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
        if handler is None or handler.unary_unary is None:
            return handler
        if handler_call_details.method.startswith(OPEN_SERVICES):
            return handler
        offered = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(str(offered).encode(), self.expected):
            return handler

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSED)

        return grpc.unary_unary_rpc_method_handler(
            refuse, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )  # fmt: skip
