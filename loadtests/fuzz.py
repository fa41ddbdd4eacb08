"""Requests across the gateway's whole field space, for the fuzz test and the reliability
benchmark (hypothesis strategies), and how an answer is judged."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc
from hypothesis import strategies as st

from musicrec.v1 import recommender_pb2 as pb

# Every status the gateway documents; INTERNAL and UNKNOWN would mean it failed itself.
DOCUMENTED = frozenset({
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
})  # fmt: skip
METHODS = ("/musicrec.v1.Recommender/Recommend", "/musicrec.v1.Recommender/SimilarUsers",
           "/musicrec.v1.Recommender/ServingInfo", "/grpc.health.v1.Health/Check")  # fmt: skip


def _text(words: Sequence[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(list(words)), st.text(max_size=40),
                     st.text(min_size=1000, max_size=1100), st.just(""), st.just("  "))  # fmt: skip


def request_fields(words: Sequence[str]) -> st.SearchStrategy[dict]:
    """Fields of a Recommend / SimilarUsers request; ``words`` are real ids and names, so some
    requests are valid."""
    plays = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                      st.sampled_from([0.0, 1.0, 3e38, -1.0]))  # fmt: skip
    item = st.builds(lambda key, value, p: pb.ArtistPlay(**({key: value} if key else {}), plays=p),
                     st.sampled_from(["id", "name", None]), _text(words), plays)  # fmt: skip
    listener = st.one_of(
        st.builds(lambda u: {"user_id": u}, _text(words)),
        st.builds(
            lambda items: {"history": pb.History(items=items)}, st.lists(item, max_size=30)
        ),  # fmt: skip
        st.just({}),
    )
    count = st.one_of(st.integers(0, 600), st.integers(0, 2**32 - 1))
    return st.fixed_dictionaries({
        "listener": listener, "k": count, "neighbours": count,
        "scoring": st.integers(-3, 6), "strict": st.booleans(),
        "exclude": st.one_of(st.none(), st.booleans()),
    })  # fmt: skip


def recommend_request(r: dict) -> pb.RecommendRequest:
    request = pb.RecommendRequest(**r["listener"], k=r["k"], neighbours=r["neighbours"],
                                  scoring=r["scoring"], strict=r["strict"])  # fmt: skip
    if r["exclude"] is not None:
        request.exclude_played = r["exclude"]
    return request


def similar_users_request(r: dict) -> pb.SimilarUsersRequest:
    return pb.SimilarUsersRequest(**r["listener"], n=r["neighbours"])


def answer(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    """The status and message a call ends with."""
    try:
        call()
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, "ok"
