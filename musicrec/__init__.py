"""The generated gRPC API (``musicrec.v1``), named after the proto package of
``proto/musicrec/v1/recommender.proto`` and rebuilt by ``scripts/gen_proto.py``: no hand-written
code lives here. (The ``musicrec`` command is ``app/``.)

Imports nothing of the project. Imported by ``gateway``, ``client`` and ``loadtests``.
"""
