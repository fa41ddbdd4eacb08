"""The light core: what every other part shares, and nothing else.

The export -> serving contract (model names, tensor signatures, version layout, per-model
specs), the scoring-mode registry, the vocabulary and artist-name lookup, the similarity index,
ranking helpers and default paths. NumPy and SciPy only: no TensorFlow, no pandas, no gRPC.

May import: nothing of the project (import-linter checks it in CI). Everything else may import it.
"""
