"""Write a trained run into a Triton model repository as a new numbered version, atomically.

Layout (one export = the same version number in every model)::

    model_repository/<model>/config.pbtxt        production: onnxruntime_onnx on GPU instances
    model_repository/<model>/configs/cpu.pbtxt   embedded: Python backend + onnxruntime, CPU
    model_repository/<model>/configs/gpu.pbtxt   GPU route: Python backend on KIND_GPU (CuPy/torch)
    model_repository/<model>/<v>/model.onnx
    model_repository/<model>/<v>/model.py        the Python-backend runner (export/python_model.py)
    model_repository/<model>/<v>/model_gpu.py    the GPU runner (export/python_gpu_model.py), with
                                                 request_batching.py and gpu_scorers.py
    model_repository/<model>/<v>/manifest.json   version, source run, fingerprints, metrics, tensors
    model_repository/<model>/<v>/vocab/          users.json, artists.json (index <-> id/name)
    model_repository/<model>/<v>/plays.npz       known users' plays, for the similar-user lookup
    model_repository/catalogue_scorer/<v>/item_neighbours.npz   stage-1 item-item table
    model_repository/catalogue_scorer/<v>/ease_neighbours.npz   stage-1 pruned EASE table
    model_repository/catalogue_scorer/<v>/als_factors.npz       ALS artist factors (ranker feature)
    model_repository/catalogue_scorer/<v>/artist_tags.npz       artist tag table, only where the
                                                                ranker uses tag features
    model_repository/pair_scorer/<v>/model.savedmodel/   the same network for TF Serving users

Everything is built and parity-checked in a staging directory beside the repository and renamed
into place only when complete; a failed export leaves the repository as it was. Version numbers
only increase and an existing version is never overwritten.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import keras
import onnx
import scipy.sparse as sp

from core.als_factors import AlsFactors
from core.candidates import TwoStageSettings
from core.contract import (
    ALS_FACTORS,
    ARTIFACT_MODEL,
    ARTIST_TAGS,
    CANDIDATE_RANKER,
    CANDIDATE_SCORER,
    CATALOGUE_SCORER,
    EASE_NEIGHBOURS,
    MODELS,
    PAIR_SCORER,
)
from core.files import repository_lock
from core.ranker_features import RANKER_FEATURES
from core.tag_profile import ArtistTags
from export.onnx_models import candidate_scorer, catalogue_scorer, pair_scorer
from export.parity import (
    ParityReport,
    check_candidate_ranker,
    check_candidate_scorer,
    check_catalogue_scorer,
    check_pair_scorer,
)
from export.ranker_model import candidate_ranker, ranker_trees
from export.staging import ExportError, ExportResult, next_version, place
from training.models.network import NetworkWeights
from training.ranker import LearnedRanker
from training.run import load_run

__all__ = ["BUILDERS", "ExportError", "ExportResult", "export_network", "export_run",
           "next_version"]  # fmt: skip


@dataclass(frozen=True)
class Trained:
    """What the served models are built from: the network and, when the run trained one, the
    learned ranker (without it ``candidate_ranker`` ranks by the network alone)."""

    model: keras.Model
    ranker: LearnedRanker | None = None

    @cached_property
    def weights(self) -> NetworkWeights:
        return NetworkWeights.from_model(self.model)

    @property
    def features(self) -> tuple[str, ...]:
        """The ranker's features (the base ones without a ranker)."""
        return self.ranker.features if self.ranker is not None else RANKER_FEATURES


Builder = Callable[[Trained], onnx.ModelProto]
Gate = Callable[[Trained, onnx.ModelProto], ParityReport]
# How each served model is built from the trained network, and the gate it must pass.
BUILDERS: dict[str, tuple[Builder, Gate]] = {
    PAIR_SCORER: (lambda t: pair_scorer(t.model), lambda t, p: check_pair_scorer(t.model, p)),
    CATALOGUE_SCORER: (lambda t: catalogue_scorer(t.weights),
                       lambda t, p: check_catalogue_scorer(t.model, p)),
    CANDIDATE_SCORER: (lambda t: candidate_scorer(t.weights),
                       lambda t, p: check_candidate_scorer(t.model, p)),
    CANDIDATE_RANKER: (lambda t: candidate_ranker(t.weights, t.ranker and ranker_trees(t.ranker),
                                                  t.features),
                       lambda t, p: check_candidate_ranker(t.model, p, t.ranker)),
}  # fmt: skip
if set(BUILDERS) != set(MODELS):  # pragma: no cover - a model spec without its builder
    raise ImportError(f"models {sorted(MODELS)} but builders {sorted(BUILDERS)}")


def export_run(run_dir: Path | str, repository: Path | str) -> ExportResult:
    """Export a seed/dnn run as the next version of every model; raise :class:`ExportError`."""
    try:
        run = load_run(run_dir)
        keras_model = run.load_model()
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise ExportError(f"cannot read run {run_dir}: {exc}") from exc
    provenance = {
        "source_run": str(Path(run.path).resolve()),
        "data_fingerprint": run.data_info.get("fingerprint"),
        "vocab_fingerprint": run.vocab.fingerprint(),
        "metrics": {k: run.metrics.get(k) for k in ("known_users", "new_users", "served")},
    }
    return export_network(
        keras_model, repository, vocab_dir=run.path / "vocab", plays=run.plays,
        provenance=provenance, two_stage=run.two_stage, ranker=run.ranker, als=run.als,
        tags=run.tags,
    )  # fmt: skip


def export_network(
    keras_model: keras.Model,
    repository: Path | str,
    *,
    vocab_dir: Path,
    plays: sp.csr_matrix,
    provenance: dict,
    two_stage: TwoStageSettings | None = None,
    ranker: LearnedRanker | None = None,
    als: AlsFactors | None = None,
    tags: ArtistTags | None = None,
) -> ExportResult:
    """Export a trained network with its vocabulary, known users' plays, stage-1 tables,
    two-stage settings (default: the DNN alone ranks the candidates), learned ranker (default:
    none, the network ranks) and the ALS factors its features need (default: none, scores 0)
    as the next version of every model, after the parity gates; the repository is untouched
    on any failure. A ranker trained with tag features needs ``tags``, its tag table (shipped
    as ``artist_tags.npz``, sealed in the manifest like the other tables)."""
    uses_tags = ranker is not None and ranker.uses_tags
    if uses_tags and tags is None:
        raise ExportError("the ranker uses tag features but the run has no tag table")
    tags = tags if uses_tags else None  # a table no feature reads is not shipped
    repository = Path(repository)
    repository.mkdir(parents=True, exist_ok=True)
    trained = Trained(keras_model, ranker)
    built = {}
    for name, (build, gate) in BUILDERS.items():
        proto = build(trained)
        built[name] = (proto, gate(trained, proto))
    two_stage = two_stage or TwoStageSettings()
    provenance = {**provenance, "two_stage": two_stage.to_dict(),
                  "ranker": ranker.to_dict() if ranker is not None else None}  # fmt: skip
    table = two_stage.candidates.item_table(plays)
    ease = two_stage.candidates.ease_table(plays)
    als = als if als is not None else AlsFactors.empty(plays.shape[1])

    def savedmodel(staging: Path, version: int) -> None:
        """The same network as a SavedModel, for TF Serving and other TensorFlow tools, and
        the EASE table and ALS factors beside the item table."""
        artifacts = staging / ARTIFACT_MODEL / str(version)
        sp.save_npz(artifacts / EASE_NEIGHBOURS, ease, compressed=False)
        als.save(artifacts / ALS_FACTORS)
        if tags is not None:
            tags.save(artifacts / ARTIST_TAGS)
        keras_model.export(staging / PAIR_SCORER / str(version) / "model.savedmodel",
                           format="tf_saved_model", verbose=False)  # fmt: skip

    with repository_lock(repository):  # one export or deploy at a time
        return place(repository, built, vocab_dir, plays, provenance, table, savedmodel)
