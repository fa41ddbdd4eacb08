"""Loaders for the real Last.fm-derived data sets."""

from __future__ import annotations

from tests.conftest import AUDIOSCROBBLER
from training.data import detect_kind, load_audioscrobbler, load_dataset


def test_hetrec_counts_match_its_readme(hetrec):
    assert hetrec.matrix.shape == (1892, 17632)
    assert hetrec.nnz == 92834
    u = hetrec.vocab.user_ids.index("2")
    a = hetrec.vocab.artist_ids.index("51")
    assert hetrec.matrix[u, a] == 13883  # first row of user_artists.dat
    assert hetrec.vocab.artist_names[a] == "Duran Duran"


def test_audioscrobbler_maps_aliases_to_canonical_ids():
    data = load_audioscrobbler(AUDIOSCROBBLER)
    assert data.matrix.shape[0] == 50
    aliases = (AUDIOSCROBBLER / "artist_alias_small.txt").read_text().split()
    bad_ids = {bad for bad, good in zip(aliases[0::2], aliases[1::2], strict=True) if bad != good}
    assert not bad_ids & set(data.vocab.artist_ids)
    assert data.matrix.sum() == 6_461_021


def test_dataset_kind_is_detected(hetrec):
    from tests.conftest import HETREC, SPOTIFY_SAMPLE

    assert detect_kind(HETREC) == "hetrec"
    assert detect_kind(AUDIOSCROBBLER) == "audioscrobbler"
    assert detect_kind(SPOTIFY_SAMPLE) == "spotify"
    data, report = load_dataset(f"spotify:{SPOTIFY_SAMPLE}")
    assert report["records"] == 499 and data.nnz == 499


def test_counts_past_float32_are_summed_in_float64_and_capped(tmp_path):
    import numpy as np
    import pandas as pd

    from core.contract import MAX_PLAYS
    from training.data import from_frame

    frame = pd.DataFrame({"user_id": ["a", "a", "b"], "artist_id": ["x", "x", "y"],
                          "count": [3e38, 3e38, 1e39]})  # fmt: skip
    data = from_frame(frame)
    assert np.all(np.isfinite(data.matrix.data)) and data.matrix.max() == np.float32(MAX_PLAYS)


def test_an_artist_id_listed_twice_keeps_its_first_name(tmp_path, caplog):
    from training.data import load_hetrec

    (tmp_path / "user_artists.dat").write_text("userID\tartistID\tweight\n1\t7\t5\n2\t7\t3\n")
    (tmp_path / "artists.dat").write_text("id\tname\turl\tpictureURL\n7\tFirst\tu\tp\n"
                                          "7\tSecond\tu\tp\n")  # fmt: skip
    data = load_hetrec(tmp_path)
    assert data.vocab.artist_names == ("First",)
    assert "1 duplicate artist ids" in caplog.text
