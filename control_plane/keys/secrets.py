"""Key material: generation, hashing, parsing. Keys are 32 random bytes; only their sha256 is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

KEY_PREFIX = "cp"


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly generated key: the plaintext (shown once), its lookup prefix and hash."""

    plaintext: str
    prefix: str
    key_hash: str


def hash_key(plaintext: str) -> str:
    """sha256 hex of the key; keys are high-entropy, so a fast hash is enough."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def generate() -> NewKey:
    """A new random key `cp_<prefix>_<secret>`."""
    prefix = secrets.token_hex(6)
    plaintext = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    return NewKey(plaintext=plaintext, prefix=prefix, key_hash=hash_key(plaintext))


def prefix_of(plaintext: str) -> str | None:
    """The lookup prefix of a well-formed key, else None."""
    parts = plaintext.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != 12:
        return None
    return parts[1]


def is_secret(token: str, secret: str | None) -> bool:
    """Whether `token` is a configured secret (`CP_ADMIN_TOKEN`, `CP_METRICS_TOKEN`), compared in constant
    time; never when none is configured."""
    return secret is not None and hmac.compare_digest(token.encode(), secret.encode())


def matches(plaintext: str, key_hash: str) -> bool:
    """Constant-time comparison of a presented key with a stored hash."""
    return hmac.compare_digest(hash_key(plaintext), key_hash)
