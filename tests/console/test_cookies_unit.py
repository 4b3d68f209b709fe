"""The console's session cookie: sealed, opaque, tamper-evident, expiring, bound to its secret."""

from __future__ import annotations

import base64

from pydantic import SecretStr

from control_plane.console.cookies import SessionCodec, cookie_secret
from control_plane.settings import Settings

KEY = "cp_abcdef123456_secretpart"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_sealed_session_opens_to_the_same_key_and_token_and_hides_them() -> None:
    codec = SessionCodec(b"k" * 32, max_age_s=3600)
    session = codec.new_session(KEY)
    value = codec.seal(session)
    assert codec.open(value) == session
    assert KEY not in value and "secretpart" not in base64.urlsafe_b64decode(value + "==").decode("latin-1")
    assert codec.seal(session) != value  # a fresh nonce each time
    assert len(session.csrf) >= 32


def test_tampered_foreign_garbage_and_expired_cookies_do_not_open() -> None:
    clock = Clock()
    codec = SessionCodec(b"k" * 32, max_age_s=60, clock=clock)
    value = codec.seal(codec.new_session(KEY))
    flipped = value[:10] + ("A" if value[10] != "A" else "B") + value[11:]
    assert codec.open(flipped) is None
    assert SessionCodec(b"x" * 32, max_age_s=60).open(value) is None
    for garbage in (None, "", "not base64!", "QUFB", "A" * 5000):
        assert codec.open(garbage) is None
    clock.now += 61
    assert codec.open(value) is None


def test_the_secret_comes_from_the_setting_else_the_admin_token_else_chance() -> None:
    both = Settings(console_secret=SecretStr("s1"), admin_token=SecretStr("t1"))
    assert cookie_secret(both) == cookie_secret(Settings(console_secret=SecretStr("s1")))
    assert cookie_secret(Settings(admin_token=SecretStr("t1"))) == cookie_secret(
        Settings(admin_token=SecretStr("t1"))
    )
    assert cookie_secret(Settings(admin_token=SecretStr("t1"))) != cookie_secret(
        Settings(admin_token=SecretStr("t2"))
    )
    assert cookie_secret(Settings(admin_token=SecretStr("t1"))) != b"t1"
    assert cookie_secret(Settings()) != cookie_secret(Settings())  # random per process
    assert len(cookie_secret(Settings())) == 32
