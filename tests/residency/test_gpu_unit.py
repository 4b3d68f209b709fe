"""The NVML binding (`residency.gpu`) against a stand-in library made of ctypes callbacks: the calls go
through ctypes' real marshalling (pointers, the process array NVML fills), so the binding's handling
of NVML's protocol (ask the count, grow the array, values NVML cannot tell, errors) is what is tested.
The binding against the real driver is run by `bench/gpu/check.py` on a GPU machine."""

from __future__ import annotations

import ctypes
import logging
from typing import Any

import pytest

from control_plane.residency import gpu

COUNT = ctypes.POINTER(ctypes.c_uint)
INFOS = ctypes.POINTER(gpu.ProcessInfo)


class FakeNvml:
    """A library with `devices` (per device, the (pid, bytes) it runs) that may gain processes
    between the count and the read, as a real GPU's processes start at any time."""

    def __init__(self, devices: list[list[tuple[int, int]]], *, v3: bool = True, grow: int = 0) -> None:
        self.devices, self.grow, self.calls = devices, grow, 0
        status = ctypes.CFUNCTYPE(ctypes.c_int)
        self.nvmlInit_v2 = status(lambda: 0)
        self.nvmlDeviceGetCount_v2 = ctypes.CFUNCTYPE(ctypes.c_int, COUNT)(self._count)
        self.nvmlDeviceGetHandleByIndex_v2 = ctypes.CFUNCTYPE(
            ctypes.c_int, ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p)
        )(self._handle)
        running = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, COUNT, INFOS)(self._running)
        setattr(
            self,
            "nvmlDeviceGetComputeRunningProcesses_v3" if v3 else "nvmlDeviceGetComputeRunningProcesses_v2",
            running,
        )

    def _count(self, out: Any) -> int:
        out[0] = len(self.devices)
        return 0

    def _handle(self, index: int, out: Any) -> int:
        out[0] = index + 1  # NVML's handles are opaque pointers; never 0
        return 0

    def _running(self, handle: int, count: Any, infos: Any) -> int:
        self.calls += 1
        procs = self.devices[handle - 1]
        if self.grow and self.calls == 2:  # a process started after the count was asked
            procs.extend((90_000 + i, 1) for i in range(self.grow))
        if len(procs) > count[0]:
            count[0] = len(procs)
            return gpu.INSUFFICIENT_SIZE
        for i, (pid, used) in enumerate(procs):
            infos[i].pid, infos[i].usedGpuMemory = pid, used
        count[0] = len(procs)
        return 0


def test_memory_is_summed_per_pid_over_the_devices() -> None:
    lib = FakeNvml([[(101, 1636 << 20), (102, 868 << 20)], [], [(101, 4 << 20), (103, gpu.NOT_AVAILABLE)]])
    nvml = gpu.Nvml(lib)
    assert len(nvml.devices) == 3
    assert nvml.used_by_pid() == {101: (1636 + 4) << 20, 102: 868 << 20}, "103's figure is unknown: not 2**64"


def test_processes_started_between_the_count_and_the_read_are_read_again() -> None:
    lib = FakeNvml([[(101, 10)]], grow=30)
    used = gpu.Nvml(lib).used_by_pid()
    assert used[101] == 10 and len(used) == 31


def test_an_older_driver_without_the_v3_call_is_read_through_v2() -> None:
    assert gpu.Nvml(FakeNvml([[(7, 5)]], v3=False)).used_by_pid() == {7: 5}


def test_a_failing_call_is_an_error_in_nvmls_terms() -> None:
    lib = FakeNvml([[(7, 5)]])
    lib.nvmlDeviceGetComputeRunningProcesses_v3 = ctypes.CFUNCTYPE(  # type: ignore[attr-defined]
        ctypes.c_int, ctypes.c_void_p, COUNT, INFOS
    )(
        lambda handle, count, infos: 15  # NVML_ERROR_GPU_IS_LOST
    )
    with pytest.raises(gpu.NvmlError, match="status 15"):
        gpu.Nvml(lib).used_by_pid()


def test_without_a_driver_nothing_is_counted_and_nothing_is_asked_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(gpu, "LIBRARY", "libnvidia-ml-absent.so.1")
    monkeypatch.setattr(gpu, "_opened", [])
    opened: list[str] = []
    real = gpu._open

    def counted() -> gpu.Nvml | None:
        opened.append("x")
        return real()

    monkeypatch.setattr(gpu, "_open", counted)
    with caplog.at_level(logging.INFO, logger=gpu.__name__):
        assert gpu.used_by_pid() == {}
        assert gpu.used_by_pid() == {}
    assert opened == ["x"]
    assert not caplog.records, "a CPU machine is the usual case, not worth a line"


def test_a_gpu_lost_after_start_leaves_host_memory_counting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    lib = FakeNvml([[(7, 5)]])
    monkeypatch.setattr(gpu, "_opened", [gpu.Nvml(lib)])
    assert gpu.used_by_pid() == {7: 5}
    lib.devices[0] = []
    assert gpu.used_by_pid() == {}
    monkeypatch.setattr(gpu._opened[0], "_processes", lambda handle, count, infos: 15)  # GPU is lost
    with caplog.at_level(logging.WARNING, logger=gpu.__name__):
        assert gpu.used_by_pid() == {}
    assert "status 15" in caplog.text
