"""GPU memory per process, read from NVIDIA's management library (NVML, `libnvidia-ml.so.1`, installed
with the driver: what `nvidia-smi --query-compute-apps` shows), so that a Python-backend model's size
counts what its stubs hold on the GPUs beside their host memory. Triton reports no `memory_usage` for
Python-backend models (seen on an H200 with Triton 2.51: see docs/residency.md, "On a GPU").

The standard library only (ctypes), no binding package: a machine without NVIDIA's driver has no
library, and every call answers an empty mapping at no cost after the first. PIDs are those of the PID
namespace NVML runs in: in a container that does not share the host's, NVML's PIDs are the host's and
match no stub here (nothing is counted, as without a GPU); Tritons on this machine share it.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

LIBRARY = "libnvidia-ml.so.1"
SUCCESS = 0
INSUFFICIENT_SIZE = 7
NOT_AVAILABLE = 2**64 - 1  # usedGpuMemory NVML cannot tell (no privilege to see it, some MIG setups)
# Newest first; both take nvmlProcessInfo_t (the v2 layout; NVML's v3 call keeps it).
PROCESSES = ("nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2")


class ProcessInfo(ctypes.Structure):
    """nvmlProcessInfo_t."""

    _fields_ = (
        ("pid", ctypes.c_uint),
        ("usedGpuMemory", ctypes.c_ulonglong),
        ("gpuInstanceId", ctypes.c_uint),
        ("computeInstanceId", ctypes.c_uint),
    )


class Nvml:
    """The calls this module makes on an opened NVML library (initialised once, never shut down: the
    process reads it for as long as it runs)."""

    def __init__(self, lib: Any) -> None:
        init = _function(lib, ("nvmlInit_v2",), [])
        count = _function(lib, ("nvmlDeviceGetCount_v2",), [ctypes.POINTER(ctypes.c_uint)])
        handle = _function(
            lib, ("nvmlDeviceGetHandleByIndex_v2",), [ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p)]
        )
        self._processes = _function(
            lib, PROCESSES, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ProcessInfo)]
        )
        _check(init(), "nvmlInit")
        devices = ctypes.c_uint(0)
        _check(count(ctypes.byref(devices)), "nvmlDeviceGetCount")
        self.devices: list[ctypes.c_void_p] = []
        for index in range(devices.value):
            device = ctypes.c_void_p()
            _check(handle(index, ctypes.byref(device)), "nvmlDeviceGetHandleByIndex")
            self.devices.append(device)

    def used_by_pid(self) -> dict[int, int]:
        """PID -> bytes its compute contexts hold, summed over the devices."""
        used: dict[int, int] = {}
        for device in self.devices:
            for info in self._running(device):
                if info.usedGpuMemory != NOT_AVAILABLE:
                    used[int(info.pid)] = used.get(int(info.pid), 0) + int(info.usedGpuMemory)
        return used

    def _running(self, device: ctypes.c_void_p) -> list[ProcessInfo]:
        count = ctypes.c_uint(0)
        for _ in range(4):  # processes may start between asking for the count and reading them
            room = count.value
            infos = (ProcessInfo * max(room, 1))()
            status = self._processes(device, ctypes.byref(count), infos if room else None)
            if status == SUCCESS:
                return list(infos[: count.value]) if room else []
            if status != INSUFFICIENT_SIZE:
                raise NvmlError("nvmlDeviceGetComputeRunningProcesses", status)
            count.value = count.value * 2 + 4
        raise NvmlError("nvmlDeviceGetComputeRunningProcesses", INSUFFICIENT_SIZE)


class NvmlError(RuntimeError):
    def __init__(self, call: str, status: int) -> None:
        super().__init__(f"{call} failed with NVML status {status}")
        self.status = status


def _function(lib: Any, names: tuple[str, ...], argtypes: list[Any]) -> Callable[..., int]:
    for name in names:
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.argtypes = argtypes
            fn.restype = ctypes.c_int
            return fn  # type: ignore[no-any-return]
    raise NvmlError(names[0] + " (missing)", -1)


def _check(status: int, call: str) -> None:
    if status != SUCCESS:
        raise NvmlError(call, status)


_opened: list[Nvml | None] = []  # [] before the first call, then [the library or None]
_lock = threading.Lock()


def used_by_pid() -> dict[int, int]:
    """PID -> GPU bytes it holds, over this machine's GPUs; empty where there is no NVIDIA driver (or
    NVML failed: said once in the log, then not asked again)."""
    with _lock:
        if not _opened:
            _opened.append(_open())
        nvml = _opened[0]
    if nvml is None:
        return {}
    try:
        return nvml.used_by_pid()
    except NvmlError as exc:  # e.g. a GPU fallen off the bus: host memory still counts
        log.warning("reading GPU memory per process: %s", exc)
        return {}


def _open() -> Nvml | None:
    try:
        nvml = Nvml(ctypes.CDLL(LIBRARY))
    except OSError:
        return None  # no NVIDIA driver here: the usual case on CPU machines, not worth a line
    except NvmlError as exc:
        log.warning("NVML is installed but unusable, GPU memory is not counted: %s", exc)
        return None
    log.info("counting GPU memory per process over %d GPU(s) (NVML)", len(nvml.devices))
    return nvml
