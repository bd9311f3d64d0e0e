"""The root of every error this package raises on purpose."""


class VmdhcpError(Exception):
    """Base class of all vm-dhcp errors; catch it at process boundaries only."""
