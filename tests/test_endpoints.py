"""Triton targets naming several replicas: parsed the same way by the gateway and deploy."""

from __future__ import annotations

import pytest

from core.endpoints import resolve_endpoints, split_host_port, static_endpoints
from gateway.config import GatewayConfig


def test_lists_and_single_addresses_parse_in_order_without_duplicates():
    assert static_endpoints("a:8001") == ["a:8001"]
    assert static_endpoints("ipv4:10.0.0.1:8001,10.0.0.2:8001,10.0.0.1:8001") == [
        "10.0.0.1:8001", "10.0.0.2:8001"]  # fmt: skip
    assert static_endpoints("dns:///triton-headless.musicrec.svc:8001") is None
    assert split_host_port("[::1]:8001") == ("::1", 8001)


@pytest.mark.parametrize("bad", ["", "a", "a:", "a:0", "a:99999", "a:8001,b", "dns:///nohost"])
def test_malformed_targets_are_refused_with_the_culprit_named(bad):
    with pytest.raises(ValueError):
        static_endpoints(bad)
    with pytest.raises(ValueError):
        GatewayConfig(triton_url=bad)


def test_a_dns_name_resolves_to_every_address_it_has():
    assert resolve_endpoints("dns:///localhost:8001") in (["127.0.0.1:8001"],
                                                          ["127.0.0.1:8001", "[::1]:8001"],
                                                          ["[::1]:8001"])  # fmt: skip
    with pytest.raises(OSError):
        resolve_endpoints("dns:///no-such-host.invalid:8001")
