"""Stock tritonclient's own options against the proxy, as its users set them: HTTP request and response
compression (gzip, deflate), the asyncio clients (`tritonclient.http.aio` on aiohttp, `tritonclient.grpc.aio`)
with many requests at once, and gRPC compression; each answer equal to direct Triton's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.grpc.aio as triton_grpc_aio
import tritonclient.http as triton_http
import tritonclient.http.aio as triton_http_aio

from tests.fixtures_triton import RunningTriton
from tests.support.api import Api
from tests.support.deploy import Deployed, deploy_onnx
from tests.support.procs import free_port

X = np.array([[0.5, -1.0, 2.0, 0.25], [1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
AT_ONCE = 16  # more than CP_CHECK_PER_TENANT (2): compressed requests must not queue for the workers


@pytest.fixture
def served(make_served: Callable[..., Api], triton: RunningTriton) -> Api:
    return make_served(grpc_port=free_port(), triton_grpc_urls=[triton.process.grpc_url])


@pytest.fixture
def deployed(served: Api, tmp_path: Path) -> Deployed:
    return deploy_onnx(served, tmp_path)


def _expected(served: Api, deployed: Deployed) -> np.ndarray:
    with triton_http.InferenceServerClient(served.settings.triton_urls[0].split("://")[1]) as direct:
        tensor = triton_http.InferInput("x", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X)
        result: np.ndarray = direct.infer(deployed.triton_name, [tensor]).as_numpy("y")
        return result


def _headers(deployed: Deployed) -> dict[str, str]:
    """A fresh dict per call: tritonclient writes its Content-Encoding / Accept-Encoding into it."""
    return {"Authorization": f"Bearer {deployed.consumer_key}"}


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize(
    ("request_compression", "response_compression"),
    [("gzip", None), (None, "gzip"), ("deflate", "deflate"), ("gzip", "gzip")],
)
def test_http_compression_options(
    served: Api,
    deployed: Deployed,
    binary: bool,
    request_compression: str | None,
    response_compression: str | None,
) -> None:
    expected = _expected(served, deployed)
    with triton_http.InferenceServerClient(
        served.client.base_url.netloc.decode(), network_timeout=30
    ) as client:
        tensor = triton_http.InferInput("x", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X, binary_data=binary)
        result = client.infer(
            deployed.model,
            [tensor],
            outputs=[triton_http.InferRequestedOutput("y", binary_data=binary)],
            headers=_headers(deployed),
            request_compression_algorithm=request_compression,
            response_compression_algorithm=response_compression,
        )
    np.testing.assert_array_equal(result.as_numpy("y"), expected)


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_http_aio_client_with_many_requests_at_once(
    served: Api, deployed: Deployed, compression: str | None
) -> None:
    expected = _expected(served, deployed)

    async def run() -> list[np.ndarray]:
        async with triton_http_aio.InferenceServerClient(served.client.base_url.netloc.decode()) as client:
            assert await client.is_model_ready(deployed.model, headers=_headers(deployed))
            metadata = await client.get_model_metadata(deployed.model, headers=_headers(deployed))
            assert metadata["name"] == deployed.model
            tensor = triton_http_aio.InferInput("x", list(X.shape), "FP32")
            tensor.set_data_from_numpy(X, binary_data=True)

            async def one() -> np.ndarray:
                result = await client.infer(
                    deployed.model,
                    [tensor],
                    headers=_headers(deployed),
                    request_compression_algorithm=compression,
                )
                found: np.ndarray = result.as_numpy("y")
                return found

            return await asyncio.gather(*(one() for _ in range(AT_ONCE)))

    for found in asyncio.run(run()):
        np.testing.assert_array_equal(found, expected)


@pytest.mark.parametrize("compression", [None, "gzip", "deflate"])
def test_grpc_clients_with_compression(served: Api, deployed: Deployed, compression: str | None) -> None:
    expected = _expected(served, deployed)
    target = f"127.0.0.1:{served.settings.grpc_port}"
    metadata = {"authorization": f"Bearer {deployed.consumer_key}"}
    with triton_grpc.InferenceServerClient(target) as client:
        tensor = triton_grpc.InferInput("x", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X)
        result = client.infer(deployed.model, [tensor], headers=metadata, compression_algorithm=compression)
        np.testing.assert_array_equal(result.as_numpy("y"), expected)

    async def run() -> list[np.ndarray]:
        async with triton_grpc_aio.InferenceServerClient(target) as client:
            tensor = triton_grpc_aio.InferInput("x", list(X.shape), "FP32")
            tensor.set_data_from_numpy(X)

            async def one() -> np.ndarray:
                result = await client.infer(
                    deployed.model, [tensor], headers=metadata, compression_algorithm=compression
                )
                found: np.ndarray = result.as_numpy("y")
                return found

            return await asyncio.gather(*(one() for _ in range(AT_ONCE)))

    for found in asyncio.run(run()):
        np.testing.assert_array_equal(found, expected)


@pytest.mark.parametrize("binary", [False, True])
def test_an_output_asked_for_twice_is_answered_once_as_triton_does(
    served: Api, deployed: Deployed, binary: bool
) -> None:
    """Triton answers an output requested twice once; the proxy refused it with a 400 (HTTP) or
    INVALID_ARGUMENT (gRPC), so a client that worked against Triton failed through us."""
    expected = _expected(served, deployed)
    with triton_http.InferenceServerClient(served.client.base_url.netloc.decode()) as client:
        tensor = triton_http.InferInput("x", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X, binary_data=binary)
        outputs = [triton_http.InferRequestedOutput("y", binary_data=binary) for _ in range(2)]
        result = client.infer(deployed.model, [tensor], outputs=outputs, headers=_headers(deployed))
        assert [o["name"] for o in result.get_response()["outputs"]] == ["y"]
        np.testing.assert_array_equal(result.as_numpy("y"), expected)
    target = f"127.0.0.1:{served.settings.grpc_port}"
    with triton_grpc.InferenceServerClient(target) as grpc_client:
        grpc_tensor = triton_grpc.InferInput("x", list(X.shape), "FP32")
        grpc_tensor.set_data_from_numpy(X)
        grpc_outputs = [triton_grpc.InferRequestedOutput("y") for _ in range(2)]
        metadata = {"authorization": f"Bearer {deployed.consumer_key}"}
        answer = grpc_client.infer(deployed.model, [grpc_tensor], outputs=grpc_outputs, headers=metadata)
        assert [o.name for o in answer.get_response().outputs] == ["y"]
        np.testing.assert_array_equal(answer.as_numpy("y"), expected)
