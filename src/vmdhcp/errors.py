"""The root of every error this package raises on purpose, and the one API error type."""


class VmdhcpError(Exception):
    """Base class of all vm-dhcp errors; catch it at process boundaries only."""


class ApiError(VmdhcpError):
    """An API server refusal or failure, with the HTTP status (0: no answer at all). Both
    API clients (the controller's, on the `kubernetes` library, and the agent's own) raise
    it, so code shared by the two, such as leader election, handles one type."""

    def __init__(self, status: int, reason: str, message: str = "") -> None:
        super().__init__(message or reason or f"HTTP {status}")
        self.status = status
        self.reason = reason
        self.message = message or reason

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409
