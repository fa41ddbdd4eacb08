"""Load tests over real gRPC: Locust's gRPC user and scenario (``locust -f
loadtests/locustfile.py``), and an asyncio load loop for tests and benchmarks.

May import: ``client``, ``core`` and the generated API.
"""
