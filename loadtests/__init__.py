"""Locust load tests over real gRPC (``locust -f loadtests/locustfile.py``)."""
