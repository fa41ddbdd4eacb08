"""Load shedding: beyond ``max_concurrent_rpcs`` Recommender calls in flight, a new one gets
RESOURCE_EXHAUSTED at once instead of queueing without bound. Health checks and reflection are
never shed, so an overloaded gateway still tells the truth about itself."""

from __future__ import annotations

from typing import Any

import grpc

SHED_SERVICES = ("/musicrec.v1.Recommender/",)


class LoadShedder(grpc.aio.ServerInterceptor):
    """Counts the service's calls in flight; refuses new ones over ``limit`` (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        shed = handler_call_details.method.startswith(SHED_SERVICES)
        if handler is None or handler.unary_unary is None or not self.limit or not shed:
            return handler
        behaviour = handler.unary_unary

        async def limited(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if self.in_flight >= self.limit:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                     f"the gateway is at its limit of {self.limit} requests in "
                                     "flight; retry with backoff")  # fmt: skip
            self.in_flight += 1
            try:
                return await behaviour(request, context)
            finally:
                self.in_flight -= 1

        return grpc.unary_unary_rpc_method_handler(
            limited, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )  # fmt: skip
