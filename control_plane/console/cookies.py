"""The console's session cookie: the key and a CSRF token, encrypted and authenticated (AES-GCM).

The key never leaves the server in a readable form: the cookie is opaque to the browser (HttpOnly, so no
script reads it either), and a tampered, expired or foreign cookie simply fails to open.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from control_plane.settings import Settings

COOKIE = "cp_console"
NONCE_BYTES = 12
_CONTEXT = b"control-plane console session v1"


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """What the cookie holds: the API key signed in with, the form token, when it was issued."""

    key: str
    csrf: str
    issued_at: float


def cookie_secret(settings: Settings) -> bytes:
    """The AES key: from CP_CONSOLE_SECRET, else derived from the admin token, else random per process."""
    if settings.console_secret is not None:
        material = settings.console_secret.get_secret_value().encode()
    elif settings.admin_token is not None:
        material = settings.admin_token.get_secret_value().encode()
    else:
        material = os.urandom(32)
    return hmac.new(material, _CONTEXT, hashlib.sha256).digest()


class SessionCodec:
    """Seals and opens session cookies with one AES-256-GCM key."""

    def __init__(self, secret: bytes, *, max_age_s: int, clock: Callable[[], float] = time.time):
        self._aead = AESGCM(secret)
        self.max_age_s = max_age_s
        self._now = clock

    def new_session(self, key: str) -> ConsoleSession:
        """A fresh session for `key` with a new CSRF token."""
        return ConsoleSession(key=key, csrf=secrets.token_urlsafe(32), issued_at=self._now())

    def seal(self, session: ConsoleSession) -> str:
        """The cookie value for `session`."""
        plain = json.dumps({"k": session.key, "c": session.csrf, "t": session.issued_at}).encode()
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, plain, _CONTEXT)
        return base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def open(self, value: str | None) -> ConsoleSession | None:
        """The session in a cookie value; None when absent, tampered with, foreign or expired."""
        if not value or len(value) > 4096:
            return None
        try:
            sealed = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            plain = self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _CONTEXT)
            data = json.loads(plain)
            session = ConsoleSession(key=str(data["k"]), csrf=str(data["c"]), issued_at=float(data["t"]))
        except (ValueError, KeyError, TypeError, InvalidTag):
            return None
        if not 0 <= self._now() - session.issued_at <= self.max_age_s:
            return None
        return session
