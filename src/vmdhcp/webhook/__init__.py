"""vm-dhcp-webhook: validation and defaulting of IPPools and VirtualMachineNetworkConfigs."""
