"""A realistic mix against the gateway: known users, new-listener histories, invalid requests.

    locust -f loadtests/locustfile.py --host 127.0.0.1:50051            # web UI on :8089
    scripts/loadtest.sh                                               # headless, CSV + HTML

Users and histories come from the served version's own files in the model repository
(``--repository``, env ``MUSICREC_REPOSITORY``): known users are ids with plays; a new
listener is 5 artists of a random known user, by name. One request in 20 is invalid (k out of
range or an empty artist name) and must get INVALID_ARGUMENT: that counts as a success.
"""

from __future__ import annotations

import random
from pathlib import Path

import grpc
import scipy.sparse as sp
from locust import between, events, task

from core.contract import CATALOGUE_SCORER, PLAYS, VOCAB_DIR, versions
from core.modes import MODE_NAMES, MODES
from core.paths import DEFAULT_REPOSITORY
from core.vocabulary import Vocabulary
from loadtests.grpc_user import GrpcUser
from musicrec.v1 import recommender_pb2 as pb
from musicrec.v1 import recommender_pb2_grpc as pb_grpc


@events.init_command_line_parser.add_listener
def _flags(parser) -> None:
    parser.add_argument("--repository", default=str(DEFAULT_REPOSITORY),
                        env_var="MUSICREC_REPOSITORY",
                        help="model repository whose newest version supplies users")  # fmt: skip
    parser.add_argument("--scoring", default="", choices=["", *MODE_NAMES],
                        env_var="MUSICREC_SCORING",
                        help="scoring mode of every request (default: the gateway's)")  # fmt: skip


class Listeners:
    """Known user ids and their artist names, from one exported version."""

    def __init__(self, repository: Path) -> None:
        found = versions(repository, CATALOGUE_SCORER)
        if not found:
            raise SystemExit(f"no exported version in {repository}")
        directory = repository / CATALOGUE_SCORER / str(found[-1])
        vocab = Vocabulary.load(directory / VOCAB_DIR)
        plays = sp.load_npz(directory / PLAYS).tocsr()
        self.users = [u for i, u in enumerate(vocab.user_ids) if plays[i].nnz]
        self.names = vocab.artist_names
        self.rows = {u: plays[i].indices for i, u in enumerate(vocab.user_ids) if plays[i].nnz}

    def history(self, rng: random.Random) -> pb.History:
        artists = self.rows[rng.choice(self.users)]
        picks = rng.sample(list(artists), min(5, len(artists)))
        return pb.History(items=[pb.ArtistPlay(name=self.names[a]) for a in picks])


_LISTENERS: dict[str, Listeners] = {}


class RecommenderUser(GrpcUser):
    stub_class = pb_grpc.RecommenderStub
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        repository = self.environment.parsed_options.repository
        if repository not in _LISTENERS:
            _LISTENERS[repository] = Listeners(Path(repository))
        self.listeners = _LISTENERS[repository]
        self.rng = random.Random()
        mode = self.environment.parsed_options.scoring
        self.scoring = pb.ScoringMode.Value(MODES[mode].proto_name) if mode else 0

    @task(10)
    def known_user(self) -> None:
        request = pb.RecommendRequest(user_id=self.rng.choice(self.listeners.users), k=10,
                                      scoring=self.scoring)  # fmt: skip
        self.stub.Recommend(request, timeout=10, metadata=self.metadata)

    @task(9)
    def new_listener(self) -> None:
        request = pb.RecommendRequest(history=self.listeners.history(self.rng), k=10,
                                      scoring=self.scoring)  # fmt: skip
        self.stub.Recommend(request, timeout=10, metadata=self.metadata)

    @task(1)
    def invalid_request(self) -> None:
        bad = self.rng.choice([
            pb.RecommendRequest(user_id=self.rng.choice(self.listeners.users), k=501),
            pb.RecommendRequest(history=pb.History(items=[pb.ArtistPlay(name="")])),
        ])  # fmt: skip
        self.expect("Recommend (invalid)",
                    lambda stub: stub.Recommend(bad, timeout=10, metadata=self.metadata),
                    grpc.StatusCode.INVALID_ARGUMENT)  # fmt: skip
