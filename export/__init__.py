"""Export: a trained run as the next numbered version of the Triton model repository. Builds
each model of ``core.contract.MODELS`` as ONNX, gates it on parity with Keras, writes the
version (ONNX, SavedModel, the Python-backend runner ``python_model.py``, manifest, vocabulary,
known plays) and the ``config.pbtxt`` files, atomically.

May import: ``training`` and ``core``. Imported by ``serving`` (deploy), ``benchmarks``, ``app``.
"""
