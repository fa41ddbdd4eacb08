"""Python client for the musicrec gateway: sync and asyncio, typed results, one error type,
and the ``musicrec-client`` command. Imports nothing of the project but the generated API
(``musicrec``), so other services can vendor it alone.

from client import FeedbackEvent, RecommenderClient
with RecommenderClient("127.0.0.1:50051") as rec:
    answer = rec.recommend(artists=["Radiohead", "Coldplay"], k=5)
    rec.feedback(answer.recommendation_id, [FeedbackEvent("played", answer.artists[0].id)])
"""

from client._client import AsyncRecommenderClient, RecommenderClient
from client.types import (
    Artist,
    Attribution,
    Credentials,
    FeedbackEvent,
    Recommendation,
    RecommenderError,
    ServingInfo,
    SimilarUser,
    SimilarUsers,
)

__all__ = [
    "Artist",
    "AsyncRecommenderClient",
    "Attribution",
    "Credentials",
    "FeedbackEvent",
    "Recommendation",
    "RecommenderClient",
    "RecommenderError",
    "ServingInfo",
    "SimilarUser",
    "SimilarUsers",
]
