"""Fleet errors."""

from control_plane.errors import Conflict, NotFound


class InstanceNotFound(NotFound):
    """No instance of that name."""

    def __init__(self, name: str):
        super().__init__(f"instance '{name}' not found")


class InstanceConflict(Conflict):
    """The instance cannot be added, changed or drained as asked."""
