"""Export: a trained run as the next numbered version of the Triton model repository. Builds
each model of ``core.contract.MODELS`` as ONNX, gates it on parity with Keras, writes the
version (ONNX, SavedModel, the Python-backend runners ``python_model.py`` and
``python_gpu_model.py`` with the modules they share, manifest, vocabulary, known plays) and the
``config.pbtxt`` files (production, ``cpu``, ``gpu``), atomically. ``from_weights`` does the
same from NumPy weights without TensorFlow; ``gpu_scorers`` is the GPU runner's numeric core.

May import: ``training`` and ``core``. Imported by ``serving`` (deploy), ``benchmarks``, ``app``.
"""
