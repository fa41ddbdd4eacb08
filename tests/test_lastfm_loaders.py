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
