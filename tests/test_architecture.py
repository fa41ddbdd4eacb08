"""The layout's promises that a reader relies on: one registry of scoring modes that the proto,
the gateway and the client agree with, one spec per Triton model, and a light request path."""

from __future__ import annotations

import subprocess
import sys

from client.types import SCORING_MODES
from core.contract import MODELS, SERVED_MODELS
from core.modes import DEFAULT_MODE, MODES, mode_from_proto_name
from gateway.modes import IMPLEMENTATIONS
from gateway.service import ENUM_BY_MODE
from musicrec.v1 import recommender_pb2 as pb


def test_every_registered_mode_is_in_the_proto_the_gateway_and_the_client():
    proto_modes = {mode_from_proto_name(v.name) for v in pb.ScoringMode.DESCRIPTOR.values} - {None}
    assert proto_modes == set(MODES) == set(IMPLEMENTATIONS) == set(SCORING_MODES)
    assert {name: pb.ScoringMode.Name(v) for name, v in ENUM_BY_MODE.items()} == {
        name: mode.proto_name for name, mode in MODES.items()
    }
    assert DEFAULT_MODE in MODES
    assert all(set(mode.models) <= set(SERVED_MODELS) for mode in MODES.values())


def test_every_served_model_has_a_spec_a_builder_and_a_valid_example():
    from export.repository import BUILDERS  # TensorFlow: export builds from the network

    assert set(BUILDERS) == set(MODELS) == set(SERVED_MODELS)
    for spec in MODELS.values():
        feed = spec.example_feed()
        assert sorted(feed) == sorted(spec.input_names), spec.name
        assert 0 < spec.parity_tolerance < 0.01 and spec.cpu_max_batch_size <= spec.max_batch_size


def test_the_request_path_loads_no_training_code_tensorflow_or_pandas():
    heavy = ("training", "export", "serving", "app", "tensorflow", "keras", "pandas")
    probe = (
        "import sys, gateway.server, client.cli\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
