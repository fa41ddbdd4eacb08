"""The musicrec CLI end to end on generated data: train, save, re-evaluate, recommend, errors."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from app.main import main
from training.data.generator import GeneratorConfig, generate_spotify_csv

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def generated_csv(tmp_path_factory):
    cfg = GeneratorConfig(rows=30_000, users=300, artists=600, communities=6, seed=11)
    return generate_spotify_csv(tmp_path_factory.mktemp("data") / "playlists.csv", cfg)


@pytest.fixture(scope="module")
def dnn_run(generated_csv, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "dnn"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # rich's console writes to sys.stdout of the time
        code = main(["train", "--data", str(generated_csv), "--model", "dnn",
                     "--run-dir", str(run_dir), "--max-epochs", "8"])  # fmt: skip
    assert code == 0
    (run_dir.parent / "train_output.txt").write_text(printed.getvalue())
    return run_dir


def _table_row(printed: str, model: str) -> list[str]:
    """The cells of the printed metrics table's row for ``model``."""
    for line in printed.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if cells and cells[0] == model:
            return cells[1:]
    raise AssertionError(f"no row {model!r} in:\n{printed}")


def test_train_prints_the_served_default_beside_the_network_and_ease(dnn_run):
    printed = (dnn_run.parent / "train_output.txt").read_text()
    metrics = json.loads((dnn_run / "metrics.json").read_text())
    ndcg = 3  # P@10, R@10, MAP@10, NDCG@10, ...
    served, new = (
        _table_row(printed, "ranked (served default)"),
        _table_row(printed, "ranked (new users)"),
    )
    assert served[ndcg] == f"{metrics['served']['known_users']['ndcg@10']:.4f}"
    assert new[ndcg] == f"{metrics['served']['new_users']['ndcg@10']:.4f}"
    assert _table_row(printed, "dnn")[ndcg] == f"{metrics['known_users']['ndcg@10']:.4f}"
    ease = _table_row(printed, "ease")
    assert float(ease[ndcg]) > 0 and float(_table_row(printed, "ease (new users)")[ndcg]) > 0


def test_run_directory_holds_everything_serving_needs(dnn_run):
    for name in (
        "config.json",
        "model.keras",
        "plays.npz",
        "metrics.json",
        "data.json",
        "vocab/users.json",
        "vocab/artists.json",
    ):
        assert (dnn_run / name).is_file(), name
    data = json.loads((dnn_run / "data.json").read_text())
    assert data["load_report"]["malformed"] > 0  # the generator injects a few, and they count
    metrics = json.loads((dnn_run / "metrics.json").read_text())
    assert metrics["rows_per_second"] > 0 and metrics["epochs"] >= 1


def test_dnn_beats_popularity_on_generated_communities(dnn_run, generated_csv, tmp_path):
    pop_dir = tmp_path / "pop"
    assert (
        main(
            [
                "train",
                "--data",
                str(generated_csv),
                "--model",
                "popularity",
                "--run-dir",
                str(pop_dir),
            ]
        )
        == 0
    )
    metrics = json.loads((dnn_run / "metrics.json").read_text())
    dnn, served = metrics["known_users"]["ndcg@10"], metrics["served"]["known_users"]["ndcg@10"]
    pop = json.loads((pop_dir / "metrics.json").read_text())["known_users"]["ndcg@10"]
    # The network alone trains without the validation plays (the ranker's labels); the served
    # default (ranked: stage 1, the network and the learned ranker) is what listeners get.
    assert served > pop * 1.2 and dnn > pop, (served, dnn, pop)
    assert metrics["served"]["mode"] == "ranked"


def test_evaluate_reproduces_the_stored_metrics(dnn_run, capsys):
    assert main(["evaluate", str(dnn_run), "--json"]) == 0
    out = capsys.readouterr().out
    again = json.loads(out[out.index("{") :])
    stored = json.loads((dnn_run / "metrics.json").read_text())
    assert again["known users"]["ndcg@10"] == pytest.approx(stored["known_users"]["ndcg@10"])
    assert again["new users"]["ndcg@10"] == pytest.approx(stored["new_users"]["ndcg@10"])


def test_recommend_for_a_user_and_a_history(dnn_run, capsys):
    users = json.loads((dnn_run / "vocab" / "users.json").read_text())
    artists = json.loads((dnn_run / "vocab" / "artists.json").read_text())["names"]
    from training.recommend import RunRecommender
    from training.run import load_run

    run = load_run(dnn_run)
    known = next(u for i, u in enumerate(users) if run.plays[i].nnz)
    assert main(["recommend", str(dnn_run), "--user", known, "-k", "5"]) == 0
    rec = RunRecommender(run)
    top = rec.for_user(known, 5)
    played = set(run.plays[users.index(known)].indices)
    assert len(top) == 5 and not {r.index for r in top} & played
    assert [r.score for r in top] == sorted((r.score for r in top), reverse=True)
    history = f"{artists[0]}, {artists[1].upper()}"  # names match case-insensitively
    assert main(["recommend", str(dnn_run), "--artists", history]) == 0
    assert "Top 10" in capsys.readouterr().out
    named = rec.for_history([artists[0], artists[1].upper()], 10)
    assert {r.index for r in named}.isdisjoint({0, 1})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--data", "/nonexistent/file.csv"], "data not found"),
        (["train", "--data", "/tmp", "--model", "popularity"], "cannot tell what data set"),
        (["evaluate", "/nonexistent-run"], "not a run directory"),
    ],
)
def test_bad_input_gives_a_message_not_a_traceback(argv, message, capsys):
    assert main(argv) == 2
    out = capsys.readouterr().out
    assert message in out and "Traceback" not in out


def test_unknown_user_and_artists_are_clear_errors(dnn_run, capsys):
    assert main(["recommend", str(dnn_run), "--user", "no-such-user"]) == 2
    assert "unknown user" in capsys.readouterr().out
    assert main(["recommend", str(dnn_run), "--artists", "Nobody At All"]) == 2
    assert "none of the artists is known" in capsys.readouterr().out
