"""Training reads no test play: the whole fit (the network's early stopping, stage 1, the two-stage
blend, the learned ranker, the ALS factors, the tag table) runs on a split whose test plays and
new listeners' plays are sealed, objects that raise on any use. Evaluation, which must read them,
raises. Tag assignments on held-out pairs never count: changing them leaves the tables equal."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from core.tag_profile import ArtistTags, TagAssignments
from training.data import load_dataset
from training.data.generator import GeneratorConfig, generate_spotify_csv
from training.evaluation import evaluate_known_users, evaluate_new_users
from training.models import DNNConfig, DNNRecommender
from training.pipeline import fit_model
from training.split import SplitConfig, split_interactions

pytestmark = pytest.mark.slow
SEALED_FIELDS = ("test", "new_user_history", "new_user_targets")


class SealedPlays(Exception):
    """Raised when held-out plays are read."""


class Sealed:
    """Stands in for a held-out matrix: every attribute, operator or conversion raises."""

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)

    def __getattribute__(self, attr: str):
        raise SealedPlays(f"split.{object.__getattribute__(self, '_name')}.{attr} was read")

    def _refuse(self, *_args, **_kwargs):
        raise SealedPlays(f"split.{object.__getattribute__(self, '_name')} was used")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __matmul__ = _refuse
    __getitem__ = __len__ = __iter__ = __array__ = __bool__ = __eq__ = _refuse


def test_training_reads_no_test_play(tmp_path):
    generator = GeneratorConfig(rows=20_000, users=200, artists=400, seed=5)
    csv = generate_spotify_csv(tmp_path / "plays.csv", generator)
    data, _ = load_dataset(str(csv))
    split = split_interactions(data.matrix, SplitConfig(seed=3))
    assert all(getattr(split, name).nnz for name in SEALED_FIELDS)  # there is something to read
    sealed = dataclasses.replace(split, **{name: Sealed(name) for name in SEALED_FIELDS})

    tags = _tags_on_every_pair(data.matrix, seed=0)  # test pairs' tags included
    model = DNNRecommender(DNNConfig(max_epochs=2))
    fit_model(model, sealed, tags=tags)  # raises SealedPlays if any step reads a held-out play
    assert model.ranker_ is not None and model.two_stage_ is not None and model.als_ is not None
    assert model.ranker_.uses_tags and model.tag_table_ is not None

    with pytest.raises(SealedPlays, match="split.test"):  # the seal bites where plays are read
        evaluate_known_users(model, sealed, 10)
    with pytest.raises(SealedPlays, match="split.new_user"):
        evaluate_new_users(model, sealed, 10)


def _tags_on_every_pair(plays: sp.csr_matrix, seed: int) -> TagAssignments:
    """Two random tags of each (user, artist) pair of ``plays``."""
    coo = sp.coo_matrix(plays)
    rng = np.random.default_rng(seed)
    users, artists = np.repeat(coo.row, 2), np.repeat(coo.col, 2)
    return TagAssignments(users.astype(np.int64), artists.astype(np.int64),
                          rng.integers(0, 30, len(users)))  # fmt: skip


def test_the_tag_table_ignores_the_tags_of_held_out_plays(tmp_path):
    generator = GeneratorConfig(rows=20_000, users=200, artists=400, seed=5)
    data, _ = load_dataset(str(generate_spotify_csv(tmp_path / "plays.csv", generator)))
    split = split_interactions(data.matrix, SplitConfig(seed=3))
    tags = _tags_on_every_pair(data.matrix, seed=0)
    held = sp.csr_matrix(split.test + split.new_user_targets + split.new_user_history)
    on_held = np.asarray(held[tags.users, tags.artists]).ravel() > 0
    assert on_held.any()
    swapped = TagAssignments(tags.users, tags.artists,
                             np.where(on_held, tags.tags + 1000, tags.tags))  # fmt: skip
    for plays in (split.train, split.train_full):  # the ranker's examples, then serving
        a, b = ArtistTags.fit(tags, plays).table, ArtistTags.fit(swapped, plays).table
        assert (a != b).nnz == 0 and a.shape == b.shape
    changed = ArtistTags.fit(swapped, data.matrix).table  # the check bites on plays it reads
    assert changed.shape != ArtistTags.fit(tags, data.matrix).table.shape
