"""Playlist names as side information (issue 24 item 3, the Spotify format): the words of the
playlist an artist is in become that artist's tags by that user, through the same tag table and
leak guard as HetRec's tags."""

from __future__ import annotations

import numpy as np
import pytest

from core.tag_profile import ArtistTags
from tests.conftest import HETREC, SPOTIFY_SAMPLE
from training.data import load_dataset
from training.data.playlist_tags import playlist_tag_assignments, playlist_words


def test_words_are_lower_case_letter_runs_without_digits_punctuation_or_emoji():
    assert playlist_words("Chill Sunday-Morning 2014 \U0001f3a7 x") == ["chill", "sunday",
                                                                     "morning"]  # fmt: skip
    assert playlist_words("Lol HiGh Sk00l MeMorIeZ") == ["lol", "high", "sk", "memoriez"]
    assert playlist_words("Ünïcode Café") == ["ünïcode", "café"]
    assert playlist_words("2014") == []


def test_each_user_artist_word_is_counted_once_however_often_rows_repeat_it():
    names = ["Rock", "Rock Classics", "2014"]
    users, artists, playlists = (np.array(v) for v in ([0, 0, 0, 1, 1], [3, 3, 3, 3, 2],
                                                       [0, 0, 1, 2, 1]))  # fmt: skip
    got = playlist_tag_assignments(users, artists, playlists, names)
    words = sorted({"rock", "classics"})
    triples = sorted(zip(got.users.tolist(), got.artists.tolist(),
                         [words[t] for t in got.tags], strict=True))  # fmt: skip
    assert triples == [(0, 3, "classics"), (0, 3, "rock"), (1, 2, "classics"), (1, 2, "rock")]


def test_the_real_sample_gives_tags_of_its_played_pairs_only_when_asked():
    plain, _ = load_dataset(f"spotify:{SPOTIFY_SAMPLE}")
    data, report = load_dataset(f"spotify:{SPOTIFY_SAMPLE}", playlist_tags=True)
    assert plain.tags is None and data.tags is not None and len(data.tags) > report["records"] / 2
    assert np.array_equal(plain.matrix.toarray(), data.matrix.toarray())
    played = np.asarray(data.matrix[data.tags.users, data.tags.artists]).ravel()
    assert (played > 0).all()
    # "Best of 2014" by user 6da651f4... holds Flying Lotus: "best" and "of" tag that pair
    user = data.vocab.user_index()["6da651f45aac18e5da52433aa3c38947"]
    artist = data.vocab.artist_index()["Flying Lotus"]
    pair = (data.tags.users == user) & (data.tags.artists == artist)
    assert pair.sum() == 2
    table = ArtistTags.fit(data.tags, data.matrix)
    assert table.tagged[artist] and table.tagged.mean() > 0.9


def test_playlist_tags_on_another_format_is_a_clear_error():
    with pytest.raises(ValueError, match="Spotify Playlists format"):
        load_dataset(f"hetrec:{HETREC}", playlist_tags=True)


def test_a_run_with_playlist_tags_trains_its_ranker_on_tag_features_from_training_plays(tmp_path):
    from training.config import DataConfig, TrainConfig, TuningConfig
    from training.data.generator import GeneratorConfig, generate_spotify_csv
    from training.models import DNNConfig
    from training.pipeline import train_and_evaluate

    generator = GeneratorConfig(rows=20_000, users=200, artists=400, seed=7)
    csv = generate_spotify_csv(tmp_path / "plays.csv", generator)
    cfg = TrainConfig(data=DataConfig(str(csv), playlist_tags=True), dnn=DNNConfig(max_epochs=1),
                      tuning=TuningConfig(settings=("base",)))  # fmt: skip
    result = train_and_evaluate(cfg)
    model = result.model
    assert model.ranker_.uses_tags and model.tag_table_ is not None
    assert model.tag_table_.table.shape[0] == result.data.matrix.shape[1]
    # the served table counts training (train_full) plays' words only, never a test play's
    expected = ArtistTags.fit(result.data.tags, result.split.train_full)
    assert (model.tag_table_.table != expected.table).nnz == 0
    everything = ArtistTags.fit(result.data.tags, result.data.matrix)  # test plays' words too
    assert (everything.table != expected.table).nnz > 0


def test_distinct_triples_agree_whether_one_int64_key_fits_or_not():
    from training.data.playlist_tags import _distinct

    rng = np.random.default_rng(1)
    u, a, t = (rng.integers(0, 6, 300) for _ in range(3))
    keyed = _distinct(u, a, t, 6)
    wide = _distinct(u, a, t, 2**61)  # the key space overflows: the column-wise unique
    expected = sorted(set(zip(u.tolist(), a.tolist(), t.tolist(), strict=False)))
    for got in (keyed, wide):
        assert list(zip(*(x.tolist() for x in got), strict=False)) == expected
