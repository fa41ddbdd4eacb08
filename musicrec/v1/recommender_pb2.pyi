from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScoringMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCORING_MODE_UNSPECIFIED: _ClassVar[ScoringMode]
    SCORING_MODE_ALL_ARTISTS: _ClassVar[ScoringMode]
    SCORING_MODE_PAIRWISE: _ClassVar[ScoringMode]
    SCORING_MODE_TWO_STAGE: _ClassVar[ScoringMode]
    SCORING_MODE_RANKED: _ClassVar[ScoringMode]

class Fallback(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FALLBACK_NONE: _ClassVar[Fallback]
    FALLBACK_POPULARITY: _ClassVar[Fallback]

class FeedbackAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_ACTION_UNSPECIFIED: _ClassVar[FeedbackAction]
    FEEDBACK_ACTION_PLAYED: _ClassVar[FeedbackAction]
    FEEDBACK_ACTION_SKIPPED: _ClassVar[FeedbackAction]
    FEEDBACK_ACTION_SAVED: _ClassVar[FeedbackAction]
    FEEDBACK_ACTION_DISMISSED: _ClassVar[FeedbackAction]
SCORING_MODE_UNSPECIFIED: ScoringMode
SCORING_MODE_ALL_ARTISTS: ScoringMode
SCORING_MODE_PAIRWISE: ScoringMode
SCORING_MODE_TWO_STAGE: ScoringMode
SCORING_MODE_RANKED: ScoringMode
FALLBACK_NONE: Fallback
FALLBACK_POPULARITY: Fallback
FEEDBACK_ACTION_UNSPECIFIED: FeedbackAction
FEEDBACK_ACTION_PLAYED: FeedbackAction
FEEDBACK_ACTION_SKIPPED: FeedbackAction
FEEDBACK_ACTION_SAVED: FeedbackAction
FEEDBACK_ACTION_DISMISSED: FeedbackAction

class ArtistPlay(_message.Message):
    __slots__ = ("id", "name", "plays")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PLAYS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    plays: float
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., plays: _Optional[float] = ...) -> None: ...

class History(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ArtistPlay]
    def __init__(self, items: _Optional[_Iterable[_Union[ArtistPlay, _Mapping]]] = ...) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("user_id", "history", "k", "exclude_played", "strict", "scoring", "neighbours")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_PLAYED_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    SCORING_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    history: History
    k: int
    exclude_played: bool
    strict: bool
    scoring: ScoringMode
    neighbours: int
    def __init__(self, user_id: _Optional[str] = ..., history: _Optional[_Union[History, _Mapping]] = ..., k: _Optional[int] = ..., exclude_played: _Optional[bool] = ..., strict: _Optional[bool] = ..., scoring: _Optional[_Union[ScoringMode, str]] = ..., neighbours: _Optional[int] = ...) -> None: ...

class ScoredArtist(_message.Message):
    __slots__ = ("id", "name", "score")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    score: float
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class SimilarUser(_message.Message):
    __slots__ = ("user_id", "similarity")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    similarity: float
    def __init__(self, user_id: _Optional[str] = ..., similarity: _Optional[float] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("artists", "model_version", "similar_users", "fallback", "unknown_artists", "scoring", "unknown_artist_count", "all_played", "recommendation_id")
    ARTISTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SIMILAR_USERS_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ARTISTS_FIELD_NUMBER: _ClassVar[int]
    SCORING_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ARTIST_COUNT_FIELD_NUMBER: _ClassVar[int]
    ALL_PLAYED_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATION_ID_FIELD_NUMBER: _ClassVar[int]
    artists: _containers.RepeatedCompositeFieldContainer[ScoredArtist]
    model_version: int
    similar_users: _containers.RepeatedCompositeFieldContainer[SimilarUser]
    fallback: Fallback
    unknown_artists: _containers.RepeatedScalarFieldContainer[str]
    scoring: ScoringMode
    unknown_artist_count: int
    all_played: bool
    recommendation_id: str
    def __init__(self, artists: _Optional[_Iterable[_Union[ScoredArtist, _Mapping]]] = ..., model_version: _Optional[int] = ..., similar_users: _Optional[_Iterable[_Union[SimilarUser, _Mapping]]] = ..., fallback: _Optional[_Union[Fallback, str]] = ..., unknown_artists: _Optional[_Iterable[str]] = ..., scoring: _Optional[_Union[ScoringMode, str]] = ..., unknown_artist_count: _Optional[int] = ..., all_played: _Optional[bool] = ..., recommendation_id: _Optional[str] = ...) -> None: ...

class FeedbackEvent(_message.Message):
    __slots__ = ("id", "name", "action", "play_count")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PLAY_COUNT_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    action: FeedbackAction
    play_count: float
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., action: _Optional[_Union[FeedbackAction, str]] = ..., play_count: _Optional[float] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("recommendation_id", "events")
    RECOMMENDATION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    recommendation_id: str
    events: _containers.RepeatedCompositeFieldContainer[FeedbackEvent]
    def __init__(self, recommendation_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[FeedbackEvent, _Mapping]]] = ...) -> None: ...

class Attribution(_message.Message):
    __slots__ = ("artist_id", "model_version", "rank", "team")
    ARTIST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    artist_id: str
    model_version: int
    rank: int
    team: str
    def __init__(self, artist_id: _Optional[str] = ..., model_version: _Optional[int] = ..., rank: _Optional[int] = ..., team: _Optional[str] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("attributions",)
    ATTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    attributions: _containers.RepeatedCompositeFieldContainer[Attribution]
    def __init__(self, attributions: _Optional[_Iterable[_Union[Attribution, _Mapping]]] = ...) -> None: ...

class SimilarUsersRequest(_message.Message):
    __slots__ = ("user_id", "history", "n")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    history: History
    n: int
    def __init__(self, user_id: _Optional[str] = ..., history: _Optional[_Union[History, _Mapping]] = ..., n: _Optional[int] = ...) -> None: ...

class SimilarUsersResponse(_message.Message):
    __slots__ = ("users", "model_version", "unknown_artists", "unknown_artist_count")
    USERS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ARTISTS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ARTIST_COUNT_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[SimilarUser]
    model_version: int
    unknown_artists: _containers.RepeatedScalarFieldContainer[str]
    unknown_artist_count: int
    def __init__(self, users: _Optional[_Iterable[_Union[SimilarUser, _Mapping]]] = ..., model_version: _Optional[int] = ..., unknown_artists: _Optional[_Iterable[str]] = ..., unknown_artist_count: _Optional[int] = ...) -> None: ...

class ServingInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServingInfoResponse(_message.Message):
    __slots__ = ("model_version", "triton_up", "users", "artists", "created", "source_run", "default_scoring")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRITON_UP_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    ARTISTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_RUN_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_SCORING_FIELD_NUMBER: _ClassVar[int]
    model_version: int
    triton_up: bool
    users: int
    artists: int
    created: str
    source_run: str
    default_scoring: ScoringMode
    def __init__(self, model_version: _Optional[int] = ..., triton_up: _Optional[bool] = ..., users: _Optional[int] = ..., artists: _Optional[int] = ..., created: _Optional[str] = ..., source_run: _Optional[str] = ..., default_scoring: _Optional[_Union[ScoringMode, str]] = ...) -> None: ...
