"""vm-dhcp-agent: the DHCP server of one IPPool (the data plane)."""
