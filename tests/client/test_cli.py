"""The CLI against the real stack: the README tour, `-o json`, a failed load, a refused key, login."""

from __future__ import annotations

import io
import json
import stat
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner, Result

from control_plane.cli import app
from tests.support import model_files
from tests.support.api import Api
from tests.support.builders import unique_name
from tests.support.triton_models import MODEL

Run = Callable[..., Result]


@pytest.fixture
def run(base_url: str, tmp_path: Path) -> Run:
    """Invoke `control-plane ARGS` with a key (admin unless given) and a private config dir."""

    def invoke(
        *args: str, key: str | None = None, env: dict[str, str] | None = None, input: str | None = None
    ) -> Result:
        base = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "CP_URL": base_url, "CP_TENANT": ""}
        if key is not None:
            base["CP_KEY"] = key
        return CliRunner().invoke(app, list(args), env={**base, **(env or {})}, input=input)

    return invoke


def ok(result: Result) -> str:
    """stdout of a successful run."""
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result.stdout


def as_json(result: Result) -> Any:
    """stdout of a successful `-o json` run, parsed."""
    return json.loads(ok(result))


def expected_y(x: np.ndarray, seed: int) -> np.ndarray:
    """What the exported MLP computes."""
    with torch.no_grad():
        return model_files.mlp_module(seed=seed)(torch.from_numpy(x)).numpy()


def test_the_tour(stack: Api, run: Run, tmp_path: Path) -> None:
    admin = stack.admin_token
    tenant = unique_name("cli")
    assert f"tenant {tenant} created" in ok(run("tenants", "create", tenant, key=admin))
    publisher = ok(run("keys", "create", "--role", "publisher", "-t", tenant, "-q", key=admin)).strip()
    consumer = as_json(run("keys", "create", "--role", "consumer", "-t", tenant, "-o", "json", key=admin))[
        "key"
    ]
    first = model_files.onnx_mlp(tmp_path / "v1.onnx", seed=0)
    second = model_files.onnx_mlp(tmp_path / "v2.onnx", seed=1)

    # A publisher's key sees one tenant: no --tenant needed.
    assert "model mlp (onnx) created" in ok(run("models", "create", "mlp", "--format", "onnx", key=publisher))
    uploaded = run("versions", "upload", "mlp", str(first), "--wait", key=publisher)
    assert "ready" in ok(uploaded) and "uploading v1.onnx" in uploaded.stderr
    v2 = as_json(run("versions", "upload", "mlp", str(second), "-w", "-o", "json", key=publisher))
    assert (v2["version"], v2["state"], v2["size_bytes"]) == (2, "ready", second.stat().st_size)
    promoted = ok(run("aliases", "promote", "mlp", "1", "-t", tenant, key=admin))
    assert "mlp@production: - -> 1 (promote)" in promoted

    x = np.random.default_rng(0).random((2, 4), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    answer = as_json(run("predict", "mlp", "--input", f"x=@{tmp_path / 'x.npy'}", "-o", "json", key=consumer))
    assert answer["version"] == 1
    np.testing.assert_allclose(answer["outputs"]["y"], expected_y(x, seed=0), rtol=1e-5, atol=1e-6)
    inline = ok(run("predict", "mlp", "-i", "x=[[1, 2, 3, 4]]", "-t", tenant, key=admin))  # X-Tenant
    assert "mlp v1" in inline and "y" in inline

    canary = ok(run("traffic", "set", "mlp", "--route", "1=90", "--route", "2=10", "-t", tenant, key=admin))
    assert "v1=90%, v2=10%" in canary
    split = as_json(run("traffic", "get", "mlp", "-t", tenant, "-o", "json", key=admin))
    assert {(r["version"], r["weight"]) for r in split["routes"]} == {(1, 90), (2, 10)}
    assert "v1=100%" in ok(run("traffic", "clear", "mlp", "-t", tenant, key=admin))
    assert "1 -> 2" in ok(run("aliases", "promote", "mlp", "2", "-t", tenant, key=admin))
    assert "mlp@production: 2 -> 1 (rollback)" in ok(
        run("aliases", "rollback", "mlp", "-t", tenant, key=admin)
    )

    history = as_json(run("aliases", "history", "mlp", "-t", tenant, "-o", "json", key=admin))
    assert [h["to_version"] for h in history] == [1, 2, 1]
    assert (
        as_json(run("predict", "mlp", "-i", "x=[[1, 2, 3, 4]]", "-o", "json", key=consumer))["version"] == 1
    )
    events = as_json(run("audit", "list", "-t", tenant, "-o", "json", key=admin))
    actions = [e["action"] for e in events]
    assert actions[:2] == ["alias.rollback", "alias.promote"]
    assert {"tenant.create", "key.create", "model.create", "version.create"} <= set(actions)
    assert "alias.rollback" in ok(run("audit", "list", "-t", tenant, key=admin))
    assert "mlp@staging: - -> 2" in ok(run("aliases", "promote", "mlp", "2", "-a", "staging", key=publisher))
    assert run("aliases", "delete", "mlp", key=publisher).exit_code == 2  # no default: name the alias
    assert "mlp@staging deleted" in ok(run("aliases", "delete", "mlp", "-a", "staging", key=publisher))
    assert as_json(run("aliases", "list", "mlp", "-o", "json", key=publisher)) == {"production": 1}
    refused = run("aliases", "delete", "mlp", "-a", "production", key=publisher)
    assert refused.exit_code != 0 and "only admins may delete it" in refused.output, refused.output
    listed = ok(run("models", "list", key=publisher))
    assert "mlp" in listed and "production=1" in listed
    versions = ok(run("versions", "list", "mlp", key=publisher))
    assert versions.count("ready") == 2
    assert 'backend: "python"' in ok(run("versions", "get", "mlp", "1", "--config", key=publisher))


def test_admin_views_and_json(stack: Api, run: Run) -> None:
    status = as_json(run("status", "-o", "json", key=stack.admin_token))
    instances = as_json(run("instances", "list", "-o", "json", key=stack.admin_token))

    # The session's database holds other tests' instances too, stopped ones among them: find this stack's.
    ours = [i for i in instances if i["http_url"] == stack.settings.triton_urls[0]]
    assert status["database"]["ok"] is True
    assert ours and ours[0]["state"] == "ready", instances
    assert "database" in ok(run("status", key=stack.admin_token))
    assert ours[0]["name"] in ok(run("instances", "list", key=stack.admin_token))


def test_a_failed_load_exits_non_zero_with_tritons_message(stack: Api, run: Run, tmp_path: Path) -> None:
    admin = stack.admin_token
    tenant = unique_name("cli")
    ok(run("tenants", "create", tenant, key=admin))
    spec = ["--in", "INPUT0:FP32:-1", "--out", "OUTPUT0:FP32:-1", "--max-batch-size", "0"]
    ok(run("models", "create", "broken", "-f", "python", *spec, "-t", tenant, key=admin))
    bad = tmp_path / "model.py"
    bad.write_text(
        MODEL.format(init="raise RuntimeError('weights are missing: w.bin')", scale=1.0, offset=0.0)
    )

    result = run("versions", "upload", "broken", str(bad), "--wait", "-t", tenant, key=admin)

    assert result.exit_code == 4, result.output
    assert "version 1 of model 'broken' is failed" in result.stderr
    assert "weights are missing: w.bin" in result.stderr
    waited = run("versions", "wait", "broken", "1", "-t", tenant, key=admin)
    assert waited.exit_code == 4 and "weights are missing" in waited.stderr


def test_an_admin_sets_quotas_and_a_create_past_one_exits_non_zero_naming_it(stack: Api, run: Run) -> None:
    admin = stack.admin_token
    tenant = unique_name("cli")
    ok(run("tenants", "create", tenant, key=admin))
    created = run("keys", "create", "--role", "publisher", "-o", "json", "-t", tenant, key=admin)
    publisher = as_json(created)["key"]

    shown = as_json(
        run("tenants", "quota", tenant, "--max-models", "1", "--max-versions", "5", "-o", "json", key=admin)
    )
    ok(run("models", "create", "a", "-f", "onnx", "-t", tenant, key=publisher))
    refused = run("models", "create", "b", "-f", "onnx", "-t", tenant, key=publisher)
    table = ok(run("tenants", "get", tenant, key=publisher))
    reset = as_json(run("tenants", "quota", tenant, "--max-models", "default", "-o", "json", key=admin))
    bad = run("tenants", "quota", tenant, "--max-models", "many", key=admin)

    assert shown["quota"] == {
        "max_models": 1,
        "max_versions": 5,
        "max_artifact_bytes": None,
        "max_aliases": None,
        "max_keys": None,
    }
    assert refused.exit_code != 0 and "max_models" in refused.stderr, refused.output
    assert "models" in table and "unlimited" in table  # HOLDS 1 of QUOTA 1; bytes unlimited
    assert reset["quota"]["max_models"] is None and reset["usage"]["models"] == 1
    assert bad.exit_code != 0 and "whole number" in bad.output
    assert run("tenants", "quota", tenant, "--max-models", "9", key=publisher).exit_code != 0  # admins only
    both = as_json(
        run("tenants", "quota", tenant, "--max-aliases", "3", "--max-keys", "4", "-o", "json", key=admin)
    )
    assert (both["quota"]["max_aliases"], both["quota"]["max_keys"]) == (3, 4)
    assert both["usage"]["keys"] == 1  # the publisher's
    shown_table = ok(run("tenants", "get", tenant, key=admin))
    assert any(line.split()[:3] == ["live", "keys", "1"] for line in shown_table.splitlines()), shown_table


def test_an_admin_sets_a_tenants_inference_limits_and_default_puts_them_back(stack: Api, run: Run) -> None:
    admin = stack.admin_token
    tenant = unique_name("cli")
    ok(run("tenants", "create", tenant, key=admin))

    limits = ("--rate", "2.5", "--burst", "5", "--max-concurrency", "3")
    shown = as_json(run("tenants", "limits", tenant, *limits, "-o", "json", key=admin))
    table = ok(run("tenants", "get", tenant, key=admin))
    reset = as_json(run("tenants", "limits", tenant, "--rate", "default", "-o", "json", key=admin))
    bad = run("tenants", "limits", tenant, "--rate", "fast", key=admin)
    endless = run("tenants", "limits", tenant, "--rate", "inf", key=admin)
    nothing = run("tenants", "limits", tenant, key=admin)

    assert shown["limits"] == {"rate_per_s": 2.5, "burst": 5, "max_concurrency": 3}
    assert "2.5/s (burst 5)" in table and "in flight" in table
    assert reset["limits"] == {"rate_per_s": None, "burst": 5, "max_concurrency": 3}
    assert bad.exit_code != 0 and "requests a second" in bad.output
    assert endless.exit_code != 0 and "requests a second" in endless.output
    assert nothing.exit_code != 0 and "--rate" in nothing.output


def test_a_bad_key_or_no_configuration_exits_with_a_clear_message(run: Run) -> None:
    refused = run("models", "list", "-t", "acme", key="not-a-key")
    unconfigured = run("models", "list", env={"CP_URL": ""})
    unreachable = run("tenants", "list", key="k", env={"CP_URL": "http://127.0.0.1:9"})

    assert refused.exit_code == 3
    assert "refused the key (invalid or revoked API key)" in refused.stderr
    assert "control-plane login" in refused.stderr and "Traceback" not in refused.output
    assert unconfigured.exit_code == 2 and "no control plane configured" in unconfigured.stderr
    assert unreachable.exit_code == 6 and "cannot reach the control plane" in unreachable.stderr


def test_login_keeps_url_and_key_private_and_env_overrides(
    stack: Api, run: Run, base_url: str, tmp_path: Path
) -> None:
    saved = tmp_path / "config" / "control-plane" / "config.json"
    refused = run("login", "--url", base_url, "--key", "wrong", env={"CP_URL": ""})
    assert refused.exit_code == 3 and not saved.exists()
    unknown = run(
        "login", "--url", base_url, "--key", stack.admin_token, "-t", "no-such-tenant", env={"CP_URL": ""}
    )
    assert unknown.exit_code != 0 and "tenant 'no-such-tenant' not found" in unknown.stderr, unknown.output
    assert not saved.exists()  # was saved, and every later command failed with that 404

    logged_in = ok(run("login", "--url", base_url, "--key", stack.admin_token, env={"CP_URL": ""}))

    assert "logged in to" in logged_in and stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text())["key"] == stack.admin_token
    assert ok(run("tenants", "list", "-o", "json", env={"CP_URL": ""})) is not None
    overridden = run("tenants", "list", env={"CP_URL": "", "CP_KEY": "not-a-key"})
    assert overridden.exit_code == 3
    assert "logged out" in ok(run("logout"))
    assert not saved.exists()


def test_an_admin_sweeps_the_artifact_store_and_missing_artifacts_exit_non_zero(stack: Api, run: Run) -> None:
    """The session's database names other tests' versions whose artifacts are in other buckets: to this
    stack's store they are missing, so the sweep names them and exits 1, as a cron job would want."""
    admin = stack.admin_token
    garbage = stack.state.artifacts.put(io.BytesIO(b"garbage of the cli test " + uuid.uuid4().bytes))

    dry = run("artifacts", "sweep", "--dry-run", "--grace-s", "0", "-o", "json", key=admin)
    report = json.loads(dry.stdout)  # (as_json wants exit 0)
    assert report["dry_run"] is True and report["unused"] >= 1 and report["deleted"] == 0
    assert dry.exit_code == (1 if report["missing"] else 0), dry.output
    assert stack.state.artifacts.exists(garbage.sha256)

    swept = run("artifacts", "sweep", "--grace-s", "0", key=admin)
    assert swept.exit_code in (0, 1), swept.output
    assert "deleted" in swept.stdout and "listed" in swept.stdout
    assert not stack.state.artifacts.exists(garbage.sha256)
    tenant = unique_name("cli")
    ok(run("tenants", "create", tenant, key=admin))
    created = run("keys", "create", "--role", "publisher", "-o", "json", "-t", tenant, key=admin)
    refused = run("artifacts", "sweep", "--dry-run", key=as_json(created)["key"])
    assert refused.exit_code != 0 and "admin" in refused.stderr, refused.output


def test_a_key_created_with_an_expiry_lists_it_and_a_bad_duration_is_refused(stack: Api, run: Run) -> None:
    admin = stack.admin_token
    tenant = unique_name("cli")
    ok(run("tenants", "create", tenant, key=admin))
    before = datetime.now(UTC)

    created = as_json(
        run("keys", "create", "-r", "consumer", "--expires-in", "30d", "-o", "json", "-t", tenant, key=admin)
    )
    bad = run("keys", "create", "-r", "consumer", "--expires-in", "soon", "-t", tenant, key=admin)

    expires = datetime.fromisoformat(created["expires_at"])
    assert before + timedelta(days=30) <= expires <= datetime.now(UTC) + timedelta(days=30)
    assert bad.exit_code == 2 and "not a duration" in bad.output, bad.output
    endless = run("keys", "create", "-r", "consumer", "--expires-in", "99999999d", "-t", tenant, key=admin)
    assert endless.exit_code == 2 and "more than 100 years" in endless.output, endless.output
    listed = ok(run("keys", "list", "-t", tenant, key=admin))
    assert "EXPIRES" in listed and expires.strftime("%Y-%m-%d") in listed


def test_tenants_delete_asks_first_and_then_the_tenant_is_gone(stack: Api, run: Run) -> None:
    admin = stack.admin_token
    tenant = unique_name("cli")
    ok(run("tenants", "create", tenant, key=admin))
    key = as_json(run("keys", "create", "-r", "consumer", "-o", "json", "-t", tenant, key=admin))["key"]

    declined = run("tenants", "delete", tenant, key=admin, input="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output, declined.output
    assert stack.client.get(f"/v1/tenants/{tenant}", headers=stack.headers()).status_code == 200
    refused = run("tenants", "delete", tenant, "--yes", key=key)
    assert refused.exit_code != 0 and "admin role required" in refused.stderr, refused.output

    assert f"tenant {tenant} deleted" in ok(run("tenants", "delete", tenant, "--yes", key=admin))
    assert stack.client.get(f"/v1/tenants/{tenant}", headers=stack.headers()).status_code == 404
    again = run("tenants", "delete", tenant, "-y", key=admin)
    assert again.exit_code != 0 and f"tenant '{tenant}' not found" in again.stderr, again.output


def test_deleting_a_tenant_of_no_name_is_a_usage_error(stack: Api, run: Run) -> None:
    result = run("tenants", "delete", "", "--yes", key=stack.admin_token)
    assert result.exit_code == 2 and "a name may not be empty" in result.stderr, result.output
