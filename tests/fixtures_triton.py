"""Fixtures around the real bundled Triton server (nvidia-pytriton's tritonserver binary)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from control_plane.tritonserver import (
    TritonClient,
    TritonDistribution,
    TritonProcess,
    locate_tritonserver,
    prepare_backend_dir,
)

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class RunningTriton:
    """A started Triton, the folder repository it reads (None for S3) and a client for it."""

    process: TritonProcess
    repository: Path | None
    client: TritonClient

    @property
    def http_url(self) -> str:
        """Base URL of its HTTP endpoint."""
        return self.process.http_url


StartTriton = Callable[..., RunningTriton]


@pytest.fixture(scope="session")
def triton_distribution() -> TritonDistribution:
    """The bundled Triton of nvidia-pytriton (a test error, not a skip, when it is missing)."""
    return locate_tritonserver()


@pytest.fixture(scope="session")
def triton_backend_dir(
    triton_distribution: TritonDistribution, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A backend directory with the Python backend and this interpreter's stub, prepared once."""
    return prepare_backend_dir(triton_distribution, tmp_path_factory.mktemp("triton-backends"))


def _launch(
    *,
    repository: str,
    workdir: Path,
    backend_dir: Path,
    distribution: TritonDistribution,
    env: Mapping[str, str] | None = None,
) -> RunningTriton:
    process = TritonProcess(
        repository=repository,
        workdir=workdir,
        backend_dir=backend_dir,
        distribution=distribution,
        env=env,
    )
    process.start(timeout_s=60)
    client = TritonClient.from_url(process.http_url, timeout_s=60, connect_timeout_s=5)
    local = None if "://" in repository else Path(repository)
    return RunningTriton(process=process, repository=local, client=client)


@contextmanager
def private_triton(
    tmp_path_factory: pytest.TempPathFactory,
    prefix: str,
    *,
    distribution: TritonDistribution,
    backend_dir: Path,
) -> Iterator[RunningTriton]:
    """A Triton of a module's own on free ports, reading a new folder repository (its `repository`);
    stopped by its PID at the end."""
    repository = tmp_path_factory.mktemp(f"{prefix}-repository")
    running = _launch(
        repository=str(repository),
        workdir=tmp_path_factory.mktemp(f"{prefix}-triton"),
        backend_dir=backend_dir,
        distribution=distribution,
    )
    try:
        yield running
    finally:
        running.client.close()
        running.process.stop()


@pytest.fixture(scope="session")
def triton(
    triton_distribution: TritonDistribution,
    triton_backend_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningTriton]:
    """One Triton for the session, on free ports, reading a folder repository (tests add models)."""
    with private_triton(
        tmp_path_factory, "session", distribution=triton_distribution, backend_dir=triton_backend_dir
    ) as running:
        yield running


@pytest.fixture
def start_triton(
    triton_distribution: TritonDistribution, triton_backend_dir: Path, tmp_path: Path
) -> Iterator[StartTriton]:
    """Factory of Tritons private to one test: `start_triton(repository=..., env=...)`; stopped after."""
    started: list[RunningTriton] = []

    def start(*, repository: str | Path, env: Mapping[str, str] | None = None) -> RunningTriton:
        running = _launch(
            repository=str(repository),
            workdir=tmp_path / f"triton-{len(started)}",
            backend_dir=triton_backend_dir,
            distribution=triton_distribution,
            env=env,
        )
        started.append(running)
        return running

    yield start
    for running in started:
        running.client.close()
        running.process.stop()
