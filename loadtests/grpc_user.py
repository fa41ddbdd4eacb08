"""An abstract Locust user for gRPC, after Locust's own gRPC example.

gevent is initialised for gRPC before any channel exists; a client interceptor fires one
Locust request event per call (timing, response size, exception); the channel is closed in
``on_stop``. Calls that must fail with a given status go through :meth:`GrpcUser.expect`.

A share of the answered ``Recommend`` calls (``--feedback-percent``, default
:data:`FEEDBACK_PERCENT`) is followed by a ``Feedback`` call for that answer, as a listener's
player would send it: one artist of the list played, the first one skipped when it is another.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, events
from locust.env import Environment

from client.types import Credentials
from musicrec.v1 import recommender_pb2 as pb
from musicrec.v1 import recommender_pb2_grpc as pb_grpc

grpc_gevent.init_gevent()  # before any channel: gRPC must cooperate with gevent
FEEDBACK_PERCENT = 20.0  # of answered Recommend calls, followed by a Feedback call


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
    parser.add_argument("--feedback-percent", type=float, default=FEEDBACK_PERCENT,
                        env_var="MUSICREC_FEEDBACK_PERCENT",
                        help="percent of Recommend answers followed by Feedback")  # fmt: skip


def feedback_for(answer: pb.RecommendResponse, rng: random.Random) -> pb.FeedbackRequest | None:
    """A listener's feedback on ``answer``: one artist played, the first skipped when it is
    another (None for an answer without an id or artists)."""
    if not answer.recommendation_id or not answer.artists:
        return None
    played = rng.randrange(len(answer.artists))
    events = [pb.FeedbackEvent(id=answer.artists[played].id, action=pb.FEEDBACK_ACTION_PLAYED)]
    if played:
        events.append(pb.FeedbackEvent(id=answer.artists[0].id, action=pb.FEEDBACK_ACTION_SKIPPED))
    return pb.FeedbackRequest(recommendation_id=answer.recommendation_id, events=events)


def credentials(options: Any) -> Credentials:
    """:class:`client.types.Credentials` from Locust's parsed options (plaintext when unset)."""
    get = lambda name: getattr(options, name, None)  # noqa: E731
    token = get("grpc_token_file")
    return Credentials(get("grpc_tls_ca"), get("grpc_tls_cert"), get("grpc_tls_key"),
                       open(token).read().strip() if token else None)  # fmt: skip


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Reports every unary call to Locust as a request event."""

    def __init__(self, environment: Environment,
                 on_answer: Callable[[str, Any], None] | None = None) -> None:  # fmt: skip
        self.env = environment
        self.on_answer = on_answer  # (method, response) of each successful call

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
        if response is not None and self.on_answer is not None:
            self.on_answer(client_call_details.method, response)
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
        interceptor = LocustInterceptor(environment, self._answered)
        intercepted = grpc.intercept_channel(self._channel, interceptor)
        self.stub = self.stub_class(intercepted)
        self._feedback_stub = pb_grpc.RecommenderStub(intercepted)
        self.feedback_percent = float(getattr(environment.parsed_options, "feedback_percent",
                                              FEEDBACK_PERCENT) or 0.0)  # fmt: skip
        self._rng = random.Random()

    def _answered(self, method: str, response: Any) -> None:
        """After an answered Recommend: Feedback for ``feedback_percent`` of them (reported
        to Locust as ``Feedback``)."""
        if not method.endswith("/Recommend") or self._rng.random() * 100 >= self.feedback_percent:
            return
        request = feedback_for(response, self._rng)
        if request is None:
            return
        with contextlib.suppress(grpc.RpcError):  # already reported to Locust by the interceptor
            self._feedback_stub.Feedback(request, metadata=self.metadata)

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
