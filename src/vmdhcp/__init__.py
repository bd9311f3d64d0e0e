"""vm-dhcp: managed DHCP for KubeVirt virtual machines on Harvester."""

__version__ = "0.1.0"
