"""Tenant errors."""

from control_plane.errors import Conflict, NotFound


class TenantNotFound(NotFound):
    """No such tenant, or one the caller may not see (same answer on purpose)."""

    def __init__(self, name: str):
        super().__init__(f"tenant '{name}' not found")


class TenantExists(Conflict):
    """A tenant of that name exists already."""

    def __init__(self, name: str):
        super().__init__(f"tenant '{name}' already exists")
