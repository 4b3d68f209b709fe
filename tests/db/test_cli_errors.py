"""An operator's foreseeable mistakes with `control-plane db ...` and `serve` get one line saying what is
wrong and what to run, and a non-zero exit: no traceback (each was a 50-190 line one)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner, Result

from control_plane.cli import app
from control_plane.settings import get_settings


def _run(*args: str, **env: str) -> Result:
    get_settings.cache_clear()  # read once per process: each run here is a process of its own
    try:
        return CliRunner().invoke(app, list(args), env={"CP_TRITON_EMBEDDED": "false", **env})
    finally:
        get_settings.cache_clear()


def _refused(result: Result, code: int, text: str) -> None:
    assert result.exit_code == code, (result.output, result.exception)
    assert text in result.stderr, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), result.output


def test_an_unmigrated_database_says_to_run_db_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    advice = "has no tables of ours yet, this release needs"
    _refused(_run("db", "check", CP_DATABASE_URL=url), 1, advice)
    _refused(_run("serve", "--port", "0", CP_DATABASE_URL=url), 1, "run `control-plane db upgrade`")
    assert _run("db", "upgrade", CP_DATABASE_URL=url).exit_code == 0
    assert _run("db", "check", CP_DATABASE_URL=url).exit_code == 0
    assert _run("db", "downgrade", "0009", CP_DATABASE_URL=url).exit_code == 0
    _refused(_run("db", "check", CP_DATABASE_URL=url), 1, "is at migration 0009, this release needs 0010")


def test_an_unreachable_database_and_a_bad_setting_are_one_line(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path / 'no' / 'such' / 'registry.db'}"
    _refused(_run("db", "upgrade", CP_DATABASE_URL=missing), 1, "unable to open database file")
    closed = "postgresql://postgres@127.0.0.1:1/nothing"
    _refused(_run("db", "upgrade", CP_DATABASE_URL=closed), 1, "the registry database (CP_DATABASE_URL)")
    _refused(_run("db", "upgrade", CP_HTTP_PORT="abc"), 2, "CP_HTTP_PORT: Input should be a valid integer")
    _refused(_run("serve", CP_HTTP_PORT="abc"), 2, "(got 'abc')")


def test_a_bad_secret_setting_is_named_and_its_value_never_echoed() -> None:
    """The secrets' values are not repeated on stderr (a log may keep it), whatever refuses them."""
    from control_plane.cli import _is_secret

    assert [_is_secret(f) for f in ("admin_token", "s3_secret_key", "console_secret", "metrics_token")] == [
        True
    ] * 4
    assert not _is_secret("http_port") and not _is_secret("database_url")
