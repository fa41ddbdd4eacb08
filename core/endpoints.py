"""Triton targets that name several replicas, shared by the gateway and ``deploy``.

A target is one ``host:port``, a comma-separated list of them (``a:8001,b:8001``, or gRPC's
``ipv4:a:8001,b:8001``), or ``dns:///name:port``: a name that resolves to every replica, as a
Kubernetes headless Service does. :func:`resolve_endpoints` turns it into the replicas'
``host:port`` addresses as of now (a DNS name is looked up again on each call, so replicas
that come and go are followed).
"""

from __future__ import annotations

import socket

DNS_PREFIX = "dns:///"


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) -> (host, port); ValueError when malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65_536:
        raise ValueError(f"expected host:port, got {address!r}")
    return host.strip("[]"), int(port)


def static_endpoints(target: str) -> list[str] | None:
    """The addresses of a list target, or None for a ``dns:///`` one."""
    if target.startswith(DNS_PREFIX):
        split_host_port(target.removeprefix(DNS_PREFIX))
        return None
    addresses = [a.strip() for a in target.removeprefix("ipv4:").split(",") if a.strip()]
    if not addresses:
        raise ValueError("no Triton address given")
    for address in addresses:
        split_host_port(address)
    return list(dict.fromkeys(addresses))  # order kept, duplicates dropped


def resolve_endpoints(target: str) -> list[str]:
    """The replicas a target names now, as ``host:port`` (sorted for a DNS name); OSError when
    the name does not resolve."""
    static = static_endpoints(target)
    if static is not None:
        return static
    host, port = split_host_port(target.removeprefix(DNS_PREFIX))
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found = sorted({info[4][0] for info in infos})
    return [f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}" for ip in found]
