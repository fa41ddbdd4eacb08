"""The Spotify Playlists loader on the real sample and on hand-made malformed rows."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import SPOTIFY_SAMPLE
from training.data.generator import GeneratorConfig, generate_spotify_csv
from training.data.spotify import load_spotify_playlists

HEADER = '"user_id", "artistname", "trackname", "playlistname"\n'


def plays(data, user: str, artist: str) -> float:
    u = data.vocab.user_ids.index(user)
    a = data.vocab.artist_ids.index(artist)
    return float(data.matrix[u, a])


def test_real_sample_parses_with_its_quirks():
    data, report = load_spotify_playlists(SPOTIFY_SAMPLE)
    assert report.header  # the re-saved, mangled header is still recognised
    # 500 rows: one has an empty artist name and is skipped, not counted as malformed.
    assert report.empty_fields == 1
    assert report.records + report.empty_fields + report.malformed == 500
    assert report.records == 499
    assert data.matrix.shape == (455, 463)  # SOURCE.md: 456 users, one only on the empty row
    assert data.matrix.sum() == 499
    assert "Spice Girls" in data.vocab.artist_names


def test_original_format_header_escapes_and_counts(tiny_csv):
    path = tiny_csv(
        HEADER
        + '"u1", "Radiohead", "Creep", "Starred"\n'
        + '"u1", "Radiohead", "Karma Police", "Starred"\n'
        + '"u2", "Guns N\\" Roses", "Patience", "Rock"\n'
        + '"u2", "AC, DC", "Thunderstruck", "Rock"\n'
    )
    data, report = load_spotify_playlists(path)
    assert report.header and report.malformed == 0 and report.records == 4
    assert plays(data, "u1", "Radiohead") == 2  # two tracks -> two plays
    assert plays(data, "u2", 'Guns N" Roses') == 1  # backslash escape honoured
    assert plays(data, "u2", "AC, DC") == 1  # comma inside quotes


def test_malformed_rows_are_skipped_counted_and_cost_only_themselves(tiny_csv):
    path = tiny_csv(
        HEADER
        + '"u1", "A", "t", "p"\n'
        + '"u1", "B", "t", "My "Best" mix"\n'  # stray quotes mid-field
        + '"u2", "C", "t"\n'  # three fields
        + '"u2", "D", "t", "unterminated\n'  # quote never closed: swallows following lines
        + '"u3", "E", "t", "p"\n'
        + '"u3", "F", "t", "p"\n'
        + '"u4", "G", "t", "p", "extra"\n'  # five fields
        + '"u4", "H", "t", "p"\n'
    )
    data, report = load_spotify_playlists(path)
    assert report.malformed == 4
    assert set(data.vocab.artist_ids) == {"A", "E", "F", "H"}
    assert report.records == 4
    assert report.malformed_lines == [3, 4, 5, 8]


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_spotify_playlists(tmp_path / "nope.csv")


def test_generated_file_round_trips_with_injected_malformed_rows(tmp_path):
    cfg = GeneratorConfig(rows=20_000, users=300, artists=800, malformed_rate=0.002, seed=7)
    path = generate_spotify_csv(tmp_path / "gen.csv", cfg)
    injected = path.read_text().count('My "')
    data, report = load_spotify_playlists(path, chunk_rows=3_000)  # several chunks
    assert injected > 0
    assert report.malformed == injected
    assert report.records == cfg.rows - injected
    assert data.matrix.sum() == report.records
    assert data.matrix.shape[0] <= cfg.users


def test_generator_is_seeded_and_has_power_law_popularity(tmp_path):
    cfg = GeneratorConfig(rows=30_000, users=400, artists=2_000, seed=3)
    a = generate_spotify_csv(tmp_path / "a.csv", cfg).read_bytes()
    b = generate_spotify_csv(tmp_path / "b.csv", cfg).read_bytes()
    assert a == b
    data, _ = load_spotify_playlists(tmp_path / "a.csv")
    users_per_artist = np.sort(np.diff(data.matrix.tocsc().indptr))[::-1]
    top_share = users_per_artist[:20].sum() / users_per_artist.sum()
    assert top_share > 0.1  # 1% of artists hold over 10% of the listening pairs
    assert np.median(users_per_artist) <= 5


def test_bytes_that_are_not_utf8_are_counted_not_merged_and_long_lines_are_capped(tmp_path):
    from training.data.spotify import MAX_LINE_CHARS

    path = tmp_path / "bad.csv"
    rows = [
        b'"user_id", "artistname", "trackname", "playlistname"',
        b'"u1", "Bj\xc3\xb6rk", "Army of Me", "p"',  # valid UTF-8: kept
        b'"u1", "Bj\xf6rk", "Army of Me", "p"',  # Latin-1 byte: would have merged as Bj\ufffdrk
        b'"u2", "Bj\xfcrk", "Hyper", "p"',  # another look-alike: also not merged
        b'"u2", "' + b"x" * (MAX_LINE_CHARS + 10) + b'", "t", "p"',  # a line too long to hold
        b'"u3", "Sigur R\xc3\xb3s", "Svefn", "p"',
    ]
    path.write_bytes(b"\n".join(rows) + b"\n")
    data, report = load_spotify_playlists(path)
    assert report.invalid_utf8 == 2 and report.long_lines == 1
    assert report.records == 2 and report.malformed == 1
    assert sorted(data.vocab.artist_ids) == ["Björk", "Sigur Rós"]
    assert report.as_dict()["invalid_utf8"] == 2
