"""The management API's requests and the process's own work (routing, on-demand loads, the reconcile loop)
draw database connections from pools of their own, on Postgres behind a real uvicorn and the bundled
Triton: management requests holding every connection of theirs (a burst queued on one model's row lock)
get a 503 the client may retry, and inference, cold loads included, goes on, as does the readiness probe."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tests.support.api import Api
from tests.support.triton_models import MODEL, PYTHON_SPEC

POOL = 1  # the requests' pool: one connection, and one more at a peak
TIMEOUT_S = 0.5
BODY = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]}]}


def test_management_requests_holding_every_connection_stall_no_inference_and_get_503(
    make_served: Callable[..., Api], tmp_path: Path
) -> None:
    served = make_served(database_pool_size=POOL, database_pool_timeout_s=TIMEOUT_S)
    tenant = served.tenant()
    assert served.create_model(tenant, name="cold", format="python", **PYTHON_SPEC).status_code == 201
    source = tmp_path / "model.py"
    source.write_text(MODEL.format(init="pass", scale=2.0, offset=0.0))
    assert served.upload(tenant, "cold", source).status_code == 201  # registered, not loaded
    consumer = served.key(tenant, "consumer")
    models = f"/v1/tenants/{tenant}/models"

    held = [served.state.engine.connect() for _ in range(2 * POOL)]  # what queued requests would hold
    try:
        started = time.monotonic()
        busy = served.client.get(models, headers=served.headers())
        waited_s = time.monotonic() - started
        ready = served.client.get("/v2/health/ready")  # the readiness probe: no pod taken out of service
        answer = served.client.post(
            "/v2/models/cold/versions/1/infer",
            json=BODY,
            headers={"Authorization": f"Bearer {consumer}"},
            timeout=60,
        )
    finally:
        for connection in held:
            connection.close()

    assert (busy.status_code, busy.headers.get("retry-after")) == (503, "2"), busy.text
    assert busy.json()["error"] == "ServiceUnavailable"
    assert TIMEOUT_S <= waited_s < TIMEOUT_S + 5, waited_s  # the setting's wait, not SQLAlchemy's 30 s
    assert ready.status_code == 200, ready.text
    assert answer.status_code == 200, answer.text  # a cold load: placement, load and routing all wrote
    assert answer.json()["outputs"][0]["data"] == [2.0, 4.0]
    assert served.client.get(models, headers=served.headers()).status_code == 200
