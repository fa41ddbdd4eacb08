"""Training: data loaders (Spotify Playlists CSV, HetRec, Audioscrobbler, a seeded generator),
the evaluation split, the models (baselines and the seed network trained two ways), metrics and
run directories. TensorFlow and pandas live here and in ``export/`` only.

May import: ``core``. Imported by ``export``, ``benchmarks`` and ``app``; never by the gateway.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides our logs
