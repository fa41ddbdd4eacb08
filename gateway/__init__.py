"""The gRPC gateway (the request path): similar-user lookup, scoring through Triton in each
registered mode (``gateway/modes/``), ranking and names, health, reflection, metrics, logs.

May import: ``core`` and the generated API (``musicrec``); never training, export or serving,
so its image carries no TensorFlow, pandas or training code. Imported by ``serving`` (its
config, to start it) and ``benchmarks``.
"""
