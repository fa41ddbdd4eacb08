"""An abstract Locust user for gRPC, after Locust's own gRPC example.

gevent is initialised for gRPC before any channel exists; a client interceptor fires one
Locust request event per call (timing, response size, exception); the channel is closed in
``on_stop``. Calls that must fail with a given status go through :meth:`GrpcUser.expect`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, events
from locust.env import Environment

from client.types import Credentials

grpc_gevent.init_gevent()  # before any channel: gRPC must cooperate with gevent


@events.init_command_line_parser.add_listener
def _security_flags(parser) -> None:
    """The client library's TLS / mutual TLS / bearer-token options, for a secured gateway
    (``--grpc-`` prefixed: Locust's own ``--tls-cert`` is its web UI's)."""
    for flag, env, what in (
        ("--grpc-tls-ca", "MUSICREC_GATEWAY_TLS_CA", "the gateway's CA certificate (TLS)"),
        ("--grpc-tls-cert", "MUSICREC_GATEWAY_TLS_CERT", "this client's certificate (mTLS)"),
        ("--grpc-tls-key", "MUSICREC_GATEWAY_TLS_KEY", "this client's private key (mTLS)"),
        ("--grpc-token-file", "MUSICREC_GATEWAY_TOKEN_FILE", "a file holding the bearer token"),
    ):
        parser.add_argument(flag, default=None, env_var=env, help=what)


def credentials(options: Any) -> Credentials:
    """:class:`client.types.Credentials` from Locust's parsed options (plaintext when unset)."""
    get = lambda name: getattr(options, name, None)  # noqa: E731
    token = get("grpc_token_file")
    return Credentials(get("grpc_tls_ca"), get("grpc_tls_cert"), get("grpc_tls_key"),
                       open(token).read().strip() if token else None)  # fmt: skip


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Reports every unary call to Locust as a request event."""

    def __init__(self, environment: Environment) -> None:
        self.env = environment

    def intercept_unary_unary(self, continuation, client_call_details, request):
        start = time.perf_counter()
        call = continuation(client_call_details, request)
        exception = call.exception()  # blocks (cooperatively) until the call completes
        response = None if exception else call.result()
        self.env.events.request.fire(
            request_type="grpc",
            name=client_call_details.method.rsplit("/", 1)[-1],
            response_time=(time.perf_counter() - start) * 1000,
            response_length=response.ByteSize() if response is not None else 0,
            response=response,
            context=None,
            exception=exception,
        )
        return call


class GrpcUser(User):
    """Subclasses set ``stub_class``; ``self.stub`` calls are reported to Locust."""

    abstract = True
    stub_class: type | None = None

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        if self.stub_class is None or not self.host:
            raise ValueError("set stub_class and --host host:port")
        creds = credentials(environment.parsed_options)
        self.metadata = (("authorization", f"Bearer {creds.token}"),) if creds.token else ()
        self._channel = (grpc.secure_channel(self.host, creds.channel_credentials())
                         if creds.uses_tls else grpc.insecure_channel(self.host))  # fmt: skip
        self._raw_stub = self.stub_class(self._channel)
        intercepted = grpc.intercept_channel(self._channel, LocustInterceptor(environment))
        self.stub = self.stub_class(intercepted)

    def expect(self, name: str, call: Callable[[Any], Any], code: grpc.StatusCode) -> None:
        """Run ``call(raw_stub)``, which must fail with ``code``: a success when it does."""
        start = time.perf_counter()
        exception: Exception | None = None
        try:
            call(self._raw_stub)
            exception = AssertionError(f"expected {code.name}, got OK")
        except grpc.RpcError as err:
            if err.code() != code:
                exception = AssertionError(f"expected {code.name}, got {err.code().name}")
        self.environment.events.request.fire(
            request_type="grpc", name=name, response_time=(time.perf_counter() - start) * 1000,
            response_length=0, response=None, context=None, exception=exception,
        )  # fmt: skip

    def on_stop(self) -> None:
        self._channel.close()
