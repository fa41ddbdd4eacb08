"""Python client for the musicrec gateway: sync and asyncio, typed results, one error type,
and the ``musicrec-client`` command. Imports nothing of the project but the generated API
(``musicrec``), so other services can vendor it alone.

from client import RecommenderClient
with RecommenderClient("127.0.0.1:50051") as rec:
    print(rec.recommend(artists=["Radiohead", "Coldplay"], k=5).names())
"""

from client._client import AsyncRecommenderClient, RecommenderClient
from client.types import (
    Artist,
    Credentials,
    Recommendation,
    RecommenderError,
    ServingInfo,
    SimilarUser,
    SimilarUsers,
)

__all__ = [
    "Artist",
    "AsyncRecommenderClient",
    "Credentials",
    "Recommendation",
    "RecommenderClient",
    "RecommenderError",
    "ServingInfo",
    "SimilarUser",
    "SimilarUsers",
]
