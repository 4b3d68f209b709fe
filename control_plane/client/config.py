"""Where the CLI finds the control plane: flags, then CP_URL / CP_KEY / CP_TENANT, then `login`'s file."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import typer

APP_NAME = "control-plane"
ENV_URL, ENV_KEY, ENV_TENANT = "CP_URL", "CP_KEY", "CP_TENANT"


def config_path() -> Path:
    """`config.json` in the user's config dir (`$XDG_CONFIG_HOME/control-plane` on Linux)."""
    return Path(typer.get_app_dir(APP_NAME)) / "config.json"


@dataclass
class Profile:
    """The control plane's URL, the key and the default tenant."""

    url: str | None = None
    key: str | None = None
    tenant: str | None = None


def load() -> Profile:
    """What `login` saved (nothing when never logged in)."""
    try:
        data = json.loads(config_path().read_text())
    except FileNotFoundError:
        return Profile()
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {config_path()}: {exc}; run `control-plane login` again") from exc
    return Profile(**{k: data.get(k) for k in ("url", "key", "tenant")})


def save(profile: Profile) -> Path:
    """Write the profile readable by the user only (0600, in a 0700 folder)."""
    target = config_path()
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode on open
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(profile), f, indent=2)
    return target


def forget() -> bool:
    """Remove the saved profile; whether there was one."""
    try:
        config_path().unlink()
    except FileNotFoundError:
        return False
    return True


def resolve() -> Profile:
    """The saved profile with the environment's values on top."""
    saved = load()
    return Profile(
        url=os.environ.get(ENV_URL) or saved.url,
        key=os.environ.get(ENV_KEY) or saved.key,
        tenant=os.environ.get(ENV_TENANT) or saved.tenant,
    )
