"""What the management listings cost when a tenant has many models: the API's first page, the whole listing
paged through, and the console's tenants and tenant pages.

    python -m bench.listings [--models 2000] [--tenants 100] [--repeat 7]
                             [--postgres postgresql://postgres@127.0.0.1:5432/test]

The app runs in this process (no Triton: nothing is loaded) on a scratch registry: SQLite in a temp dir, or
with `--postgres` a new database on that server, dropped at the end. One tenant `big` holds `--models`
models; `--tenants` more hold 10 each. Each figure is the median of `--repeat` requests.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from bench.stack import scratch_database
from control_plane.app import create_app
from control_plane.db import migrate
from control_plane.settings import Settings


@contextmanager
def served(database_url: str | None, token: str) -> Iterator[TestClient]:
    """The app on a migrated, empty registry, with no Triton and no background passes."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-listings-"))
    url = database_url or f"sqlite:///{tmp / 'registry.db'}"
    migrate.upgrade(url)
    settings = Settings(
        database_url=url,
        artifact_store="local",
        artifact_dir=str(tmp / "artifacts"),
        model_repository=str(tmp / "repository"),
        triton_urls=[],
        admin_token=token,
        grpc_port=0,
        reconcile_interval_s=3600,
        janitor_interval_s=3600,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def median_ms(client: TestClient, url: str, repeat: int, headers: dict[str, str]) -> tuple[float, int]:
    """The median time of `repeat` GETs of `url` and the size of the answer."""
    took = []
    for _ in range(repeat):
        start = time.perf_counter()
        answer = client.get(url, headers=headers)
        took.append(time.perf_counter() - start)
        assert answer.status_code == 200, answer.text[:300]
    return statistics.median(took) * 1000, len(answer.content)


def walk_ms(client: TestClient, url: str, headers: dict[str, str]) -> tuple[float, int]:
    """The time to read a whole listing by following its links, and how many items it had."""
    start, items, following = time.perf_counter(), 0, url
    while following:
        answer = client.get(following, headers=headers)
        assert answer.status_code == 200, answer.text[:300]
        items += len(answer.json())
        link = answer.links.get("next", {}).get("url")
        following = url.split("?")[0] + link if link else ""
    return (time.perf_counter() - start) * 1000, items


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=2000, help="models of the one big tenant")
    parser.add_argument("--tenants", type=int, default=100, help="more tenants, of 10 models each")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--postgres", help="a Postgres server URL; a scratch database is made on it")
    args = parser.parse_args()
    token = "bench-" + uuid.uuid4().hex
    headers = {"Authorization": f"Bearer {token}"}
    with ExitStack() as stack:
        database_url = stack.enter_context(scratch_database(args.postgres)) if args.postgres else None
        client = stack.enter_context(served(database_url, token))
        print(f"registry: {'Postgres' if args.postgres else 'SQLite'}; registering {args.models} models ...")
        client.post("/v1/tenants", json={"name": "big"}, headers=headers)
        for i in range(args.models):
            body = {"name": f"m{i:05d}", "format": "onnx"}
            assert client.post("/v1/tenants/big/models", json=body, headers=headers).status_code == 201
        for t in range(args.tenants):
            client.post("/v1/tenants", json={"name": f"t{t:04d}"}, headers=headers)
            for i in range(10):
                body = {"name": f"m{i}", "format": "onnx"}
                client.post(f"/v1/tenants/t{t:04d}/models", json=body, headers=headers)
        for url in ("/v1/tenants/big/models", "/v1/tenants", "/v1/audit"):
            ms, size = median_ms(client, url, args.repeat, headers)
            print(f"GET {url:32s} first page {ms:8.1f} ms  {size / 1024:7.1f} KiB")
        for url in ("/v1/tenants/big/models?limit=1000", "/v1/tenants?limit=1000"):
            ms, items = walk_ms(client, url, headers)
            print(f"GET {url:32s} all {items:5d}  {ms:8.1f} ms")
        assert client.post("/console/login", data={"key": token}, follow_redirects=False).status_code == 303
        for url in ("/console/tenants", "/console/tenants/big"):
            ms, size = median_ms(client, url, args.repeat, {})
            print(f"GET {url:32s} first page {ms:8.1f} ms  {size / 1024:7.1f} KiB")


if __name__ == "__main__":
    main()
