"""The versions the replay compares, trained once on HetRec split seed 0 and exported.

* ``default``: the served default (``ranked``: stage 1, the network and the learned ranker),
  the network trained 6 epochs and the ranker's base settings (as tests/test_quality_hetrec.py
  reduces it; the full 15 epochs and six-way tuning gain ~0.002 NDCG@10 for minutes more).
* ``equal``: the same run exported again (a second version number, identical models).
* ``network``: the same network without the learned ranker or the tuned blend: stage 1's
  candidates ranked by the network alone (``candidate_ranker`` without trees).
* ``weak``: a network trained 1 epoch, ranking stage 1's candidates alone.

Offline NDCG@10 of each is computed on the split's test plays as the gateway serves it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import keras
import scipy.sparse as sp

from core.candidates import TwoStageSettings
from export.repository import export_network, export_run
from training.config import DataConfig, TrainConfig, TuningConfig
from training.evaluation import evaluate_known_users, evaluate_new_users
from training.models import DNNConfig, DNNRecommender
from training.pipeline import train_and_evaluate
from training.run import load_run, save_run
from training.split import Split
from training.two_stage import TwoStageRecommender

HETREC_SOURCE = "hetrec:/work/shared/data/hetrec2011-lastfm-2k"
EPOCHS = {"default": 6, "weak": 1}
WHAT = {
    "default": "the served default (ranked): stage 1, the network (6 epochs), the learned "
               "ranker (base settings)",
    "equal": "the default's run exported again: identical models under another number",
    "network": "the default's network without the learned ranker or tuned blend: stage 1 "
               "ranked by the network alone",
    "weak": "a network trained 1 epoch, ranking stage 1 alone",
}  # fmt: skip


@dataclass(frozen=True)
class Offline:
    """One version's offline figures (NDCG@10 and hit rate@10, known users and new)."""

    ndcg_known: float
    ndcg_new: float
    hit_known: float
    hit_new: float

    @classmethod
    def of(cls, model, split: Split) -> Offline:
        known, new = evaluate_known_users(model, split), evaluate_new_users(model, split)
        return cls(known["ndcg@10"], new["ndcg@10"], known["hit@10"], new["hit@10"])


def train_config(epochs: int) -> TrainConfig:
    """HetRec, split seed 0, ``epochs`` of the network, the ranker's base settings only."""
    dnn = dataclasses.replace(DNNConfig(), max_epochs=epochs, patience=epochs)
    return TrainConfig(model="dnn", data=DataConfig(source=HETREC_SOURCE), dnn=dnn,
                       tuning=TuningConfig(settings=("base",)))  # fmt: skip


def _network_alone(net: DNNRecommender, split: Split, tables: tuple) -> Offline:
    """Stage 1 (default settings, the run's ALS factors) ranked by ``net`` alone."""
    ranker = TwoStageRecommender(net, TwoStageSettings(), *tables)
    return Offline.of(ranker.fit(split.train_full), split)


def train(cache: Path) -> tuple[Path, Split, dict[str, Offline]]:
    """Train (or read back from ``cache``) the default run and the weak network; returns the
    run directory, the split and each version's offline figures."""
    run_dir, offline_file = cache / "default_run", cache / "offline.json"
    if offline_file.exists():  # written last: the cache is complete
        raw = json.loads(offline_file.read_text())
        return run_dir, _load_split(cache), {k: Offline(**v) for k, v in raw.items()}
    cfg = train_config(EPOCHS["default"])
    result = train_and_evaluate(cfg)
    save_run(run_dir, cfg, result)
    split = result.split
    known, new = (result.served_metrics or {})["known_users"], result.served_metrics["new_users"]
    offline = {"default": Offline(known["ndcg@10"], new["ndcg@10"], known["hit@10"],
                                  new["hit@10"])}  # fmt: skip
    candidates = TwoStageSettings().candidates  # computed once for both networks
    tables = (candidates.item_table(split.train_full), candidates.ease_table(split.train_full),
              result.als)  # fmt: skip
    offline["network"] = _network_alone(result.model, split, tables)
    weak = DNNRecommender(train_config(EPOCHS["weak"]).dnn).fit(split.train, split.val)
    weak.use_known_plays(split.train_full)
    weak.model_.save(cache / "weak.keras")
    offline["weak"] = _network_alone(weak, split, tables)
    offline["equal"] = offline["default"]
    _save_split(cache, split)
    offline_file.write_text(json.dumps({k: dataclasses.asdict(v) for k, v in offline.items()}))
    return run_dir, split, offline


def _save_split(cache: Path, split: Split) -> None:
    for name in ("train", "val", "test", "new_user_history", "new_user_targets"):
        sp.save_npz(cache / f"split_{name}.npz", getattr(split, name))
    (cache / "split_new_users.json").write_text(json.dumps(split.new_users.tolist()))
    (cache / "split_config.json").write_text(json.dumps(split.config.as_dict()))


def _load_split(cache: Path) -> Split:
    import numpy as np

    from training.split import SplitConfig

    mats = {n: sp.csr_matrix(sp.load_npz(cache / f"split_{n}.npz"))
            for n in ("train", "val", "test", "new_user_history", "new_user_targets")}  # fmt: skip
    users = np.asarray(json.loads((cache / "split_new_users.json").read_text()), dtype=np.int64)
    config = SplitConfig(**json.loads((cache / "split_config.json").read_text()))
    return Split(**mats, new_users=users, config=config)


def export_all(run_dir: Path, cache: Path, repo: Path, offline: dict[str, Offline],
               ) -> dict[str, int]:  # fmt: skip
    """Export every version into ``repo``; returns each one's version number."""
    versions = {"default": export_run(run_dir, repo).version,
                "equal": export_run(run_dir, repo).version}  # fmt: skip
    run = load_run(run_dir)
    for name, model in (("network", run.load_model()),
                        ("weak", keras.saving.load_model(cache / "weak.keras"))):  # fmt: skip
        o = offline[name]
        provenance = {"source_run": f"benchmarks/online ({name})",
                      "metrics": {"known_users": {"ndcg@10": o.ndcg_known},
                                  "new_users": {"ndcg@10": o.ndcg_new}}}  # fmt: skip
        versions[name] = export_network(model, repo, vocab_dir=run_dir / "vocab",
                                        plays=run.plays, provenance=provenance,
                                        als=run.als).version  # fmt: skip
    return versions
