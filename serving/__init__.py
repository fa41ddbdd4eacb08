"""Serving operations: child processes (one base for the real ``tritonserver`` of the
nvidia-pytriton wheel and for the gateway), the two started together as a stack, and
deploy / rollback / status of model versions in a running Triton.

May import: ``gateway`` (its config, to start it), ``export``, ``client``, ``core``. Imported by
``loadtests``' users, ``benchmarks`` and ``app``.
"""
