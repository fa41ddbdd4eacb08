"""Failures the gateway reports, each with the gRPC status code it leaves as."""

from __future__ import annotations

import grpc


class GatewayError(Exception):
    """Base class: ``code`` is the status the caller receives, the message its details."""

    code = grpc.StatusCode.INTERNAL


class InvalidArgument(GatewayError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(GatewayError):
    code = grpc.StatusCode.NOT_FOUND


class Unavailable(GatewayError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(GatewayError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class VersionRetired(Unavailable):
    """Triton no longer serves the version a request was pinned to (a swap raced it)."""
