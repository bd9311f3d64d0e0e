from typing import Any

import pytest

SEED: dict[str, Any] = {
    "apiVersion": "network.harvesterhci.io/v1alpha1",
    "kind": "IPPool",
    "metadata": {"name": "net-48", "namespace": "default", "uid": "u-1"},
    "spec": {
        "networkName": "default/net-48",
        "ipv4Config": {
            "serverIP": "192.168.48.77",
            "cidr": "192.168.48.0/24",
            "pool": {
                "start": "192.168.48.81",
                "end": "192.168.48.90",
                "exclude": ["192.168.48.81", "192.168.48.90"],
            },
            "router": "192.168.48.1",
            "dns": ["1.1.1.1"],
            "domainName": "aibao.moe",
            "domainSearch": ["aibao.moe"],
            "ntp": ["pool.ntp.org", "192.168.48.5"],
            "leaseTime": 300,
        },
    },
    "status": {
        "ipv4": {
            "allocated": {
                "192.168.48.81": "EXCLUDED",
                "192.168.48.90": "EXCLUDED",
                "192.168.48.86": "C6:D6:82:39:D3:C3",
                "192.168.48.87": "fa:e7:60:2e:37:dd",
            },
            "used": 2,
            "available": 6,
        }
    },
}


@pytest.fixture
def seed() -> dict[str, Any]:
    import copy

    return copy.deepcopy(SEED)
