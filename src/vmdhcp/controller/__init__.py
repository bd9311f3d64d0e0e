"""vm-dhcp-controller: IPAM over the custom resources, one agent per IPPool (control plane)."""
