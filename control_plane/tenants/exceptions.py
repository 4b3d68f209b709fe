"""Tenant errors."""

from control_plane.errors import Conflict, NotFound


class TenantNotFound(NotFound):
    """No such tenant, or one the caller may not see (same answer on purpose)."""

    def __init__(self, name: str):
        super().__init__(f"tenant '{name}' not found")


class TenantExists(Conflict):
    """A tenant of that name exists already, or existed: a deleted tenant keeps its name, which its audit
    trail names it by."""

    def __init__(self, name: str, *, deleted: bool = False):
        if deleted:
            super().__init__(
                f"tenant '{name}' was deleted and its name is kept for its audit trail: choose another name"
            )
        else:
            super().__init__(f"tenant '{name}' already exists")
