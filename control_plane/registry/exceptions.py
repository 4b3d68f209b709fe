"""Registry errors."""

from control_plane.errors import Conflict, NotFound


class ModelNotFound(NotFound):
    """No such model in the tenant (or one the caller may not see)."""

    def __init__(self, tenant: str, model: str):
        super().__init__(f"model '{model}' not found in tenant '{tenant}'")


class ModelExists(Conflict):
    """A live model of that name exists already in the tenant."""

    def __init__(self, tenant: str, model: str):
        super().__init__(f"model '{model}' already exists in tenant '{tenant}'")


class VersionNotFound(NotFound):
    """No such version of the model."""

    def __init__(self, model: str, version: int):
        super().__init__(f"version {version} of model '{model}' not found")


class VersionConflict(Conflict):
    """The version is in a state that forbids the operation."""


class AliasNotFound(NotFound):
    """No such alias on the model."""

    def __init__(self, model: str, alias: str):
        super().__init__(f"alias '{alias}' not found on model '{model}'")
