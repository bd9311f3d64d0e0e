"""What the validators need to know about the rest of the cluster, as a small Protocol.

The webhook fills a `Snapshot` from the API server for each admission request; the
controller can implement `ClusterView` over its own caches. The validators never do I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from vmdhcp.api import IPPool, VirtualMachineNetworkConfig, split_network_name


def network_key(network_name: str) -> str:
    """`<namespace>/<name>` of a network, with upstream's `default` namespace when absent."""
    namespace, name = split_network_name(network_name)
    return f"{namespace}/{name}"


def object_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


class ClusterView(Protocol):
    """Read-only lookups the validators make."""

    def nad_labels(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """The labels of a NetworkAttachmentDefinition, or None when it does not exist."""
        ...

    def ippool(self, namespace: str, name: str) -> IPPool | None:
        """An IPPool by its own namespace and name, or None."""
        ...

    def ippools_on_network(self, network: str) -> Sequence[IPPool]:
        """Every IPPool whose `spec.networkName` is `network` (a `network_key`)."""
        ...

    def vmnetcfgs_on_network(self, network: str) -> Sequence[VirtualMachineNetworkConfig]:
        """Every VirtualMachineNetworkConfig with a NIC on `network` (a `network_key`)."""
        ...


@dataclass(frozen=True)
class Snapshot:
    """A `ClusterView` over plain data: the NADs looked up (absent means not found) and
    the IPPools and VirtualMachineNetworkConfigs listed."""

    nads: Mapping[tuple[str, str], Mapping[str, str]] = field(default_factory=dict)
    ippools: Sequence[IPPool] = ()
    vmnetcfgs: Sequence[VirtualMachineNetworkConfig] = ()

    @classmethod
    def of(
        cls,
        nads: Iterable[tuple[str, str, Mapping[str, str]]] = (),
        ippools: Iterable[IPPool] = (),
        vmnetcfgs: Iterable[VirtualMachineNetworkConfig] = (),
    ) -> Snapshot:
        """From `(namespace, name, labels)` NADs and lists of objects."""
        return cls(
            nads={(ns, name): dict(labels) for ns, name, labels in nads},
            ippools=tuple(ippools),
            vmnetcfgs=tuple(vmnetcfgs),
        )

    def nad_labels(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return self.nads.get((namespace, name))

    def ippool(self, namespace: str, name: str) -> IPPool | None:
        for pool in self.ippools:
            if pool.metadata.namespace == namespace and pool.metadata.name == name:
                return pool
        return None

    def ippools_on_network(self, network: str) -> Sequence[IPPool]:
        return [p for p in self.ippools if network_key(p.spec.network_name) == network]

    def vmnetcfgs_on_network(self, network: str) -> Sequence[VirtualMachineNetworkConfig]:
        return [
            cfg
            for cfg in self.vmnetcfgs
            if any(network_key(nc.network_name) == network for nc in cfg.spec.network_configs or ())
        ]
