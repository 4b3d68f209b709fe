"""GPU check, part 2 (on the GPU machine, standalone: the standard library only): start the bundled Triton
2.51 (nvidia-pytriton unpacked in /tmp/site) on the repository `bench.gpu.prep` wrote (argv[1]), load each
model, infer once, and print the instance groups as Triton loaded them, its statistics (`memory_usage`), the
GPU memory per process (nvidia-smi) and the stubs' resident memory, then unload and print them again.
It also runs the product's own measurement (`control_plane.residency.sizes` and `.gpu`, the standard
library only: run from the repository's root) on the same stubs: host and GPU bytes per model as the
memory budget counts them, next to nvidia-smi's figures, and what one NVML read costs.
Files go to $OUT (else /tmp)."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from control_plane.residency import gpu as nvml
from control_plane.residency import sizes

MODELS = ("gpu_one", "gpu_two", "np_one", "gpu_fork")
MIB = 2**20
SITE = os.environ.get("CHECK_SITE", "/tmp/site")  # where the nvidia-pytriton wheel is unpacked


def start(repository: str, out: str) -> subprocess.Popen[bytes]:
    """The bundled Triton on `repository`, its log in `out`."""
    root = f"{SITE}/pytriton/tritonserver"
    shutil.copytree(f"{root}/backends", "/tmp/backends", dirs_exist_ok=True)
    minor = f"{sys.version_info[0]}.{sys.version_info[1]}"
    shutil.copy(f"{root}/python_backend_stubs/{minor}/triton_python_backend_stub", "/tmp/backends/python/")
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = f"{SITE}/nvidia_pytriton.libs:" + env.get("LD_LIBRARY_PATH", "")
    env["PYTHONPATH"] = ":".join(p for p in sys.path if p)
    log = open(f"{out}/triton.log", "w")  # noqa: SIM115 - Triton writes to it until it exits
    cmd = [
        f"{root}/bin/tritonserver",
        "--model-repository",
        os.path.abspath(repository),
        "--backend-directory",
        "/tmp/backends",
        "--model-control-mode",
        "explicit",
        "--http-port",
        "18000",
        "--grpc-port",
        "18001",
        "--metrics-port",
        "18002",
    ]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def req(method: str, path: str, body: object = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    r = urllib.request.Request(f"http://127.0.0.1:18000{path}", method=method, data=data)
    try:
        with urllib.request.urlopen(r, timeout=120) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode()
    except Exception as e:
        return -1, repr(e)


def sh(*args: str) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True).stdout.strip()
    except OSError as exc:  # no nvidia-smi: a dry run on a CPU machine
        return repr(exc)


def gpu() -> str:
    return sh("nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader")


def apps() -> str:
    return sh("nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader")


def stubs() -> list[str]:
    rows = [
        line
        for line in sh("ps", "-eo", "pid,ppid,rss,args").splitlines()
        if "triton_python_backend_stub" in line
    ]
    return [" ".join(r.split()[:3]) + " " + r.split()[-2] for r in rows]


def mib(pair: tuple[int, int]) -> str:
    return f"host {pair[0] / MIB:.0f} MiB + GPU {pair[1] / MIB:.0f} MiB"


def product(triton_pid: int) -> None:
    """What the product's measurement finds: each model's processes (its stubs and what they started) and
    their GPU bytes (NVML), each model's sum."""
    found = sizes.processes(triton_pid)
    on_gpus = nvml.used_by_pid()
    print("  product: NVML per pid (MiB):", {pid: round(b / MIB) for pid, b in on_gpus.items()})
    print(
        "  product: processes (model, its stub, GPU MiB):",
        {pid: (m.model, m.stub, round(on_gpus.get(pid, 0) / MIB)) for pid, m in found.items()},
    )
    for name in sorted({m.model for m in found.values()}):
        print(f"  product: {name}: {mib(sizes.stub_memory(triton_pid, name))}")


def main(repository: str) -> None:
    out = os.environ.get("OUT", "/tmp")
    proc = start(repository, out)
    try:
        run(proc, out)
    finally:  # never left running, whatever failed
        proc.terminate()
        proc.wait(30)
        print("triton exit", proc.returncode)


def run(proc: subprocess.Popen[bytes], out: str) -> None:
    deadline = time.time() + 90
    while req("GET", "/v2/health/live")[0] != 200:
        if time.time() > deadline or proc.poll() is not None:
            print("triton did not start", Path(f"{out}/triton.log").read_text()[-4000:])
            sys.exit(1)
        time.sleep(0.5)
    print("triton pid", proc.pid, "| gpu used before:", gpu(), "| apps:", apps())
    print("product finds Triton as pid", sizes.local_pid("http://127.0.0.1:18000"), "(its port, /proc)")
    for name in MODELS:
        t = time.time()
        st, body = req("POST", f"/v2/repository/models/{name}/load")
        print(f"\n== {name}: load {st} {body[:400]} in {time.time() - t:.1f}s")
        x = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2, 4], "data": list(range(8))}]}
        print("infer:", *req("POST", f"/v2/models/{name}/infer", x))
        st, body = req("GET", f"/v2/models/{name}/config")
        print(
            "instance_group as Triton loaded it:",
            json.loads(body).get("instance_group") if st == 200 else body,
        )
        st, body = req("GET", f"/v2/models/{name}/stats")
        print("stats:", st, body[:1500])
        print("gpu used:", gpu(), "| apps:", apps(), "| stubs pid/ppid/rss_kib/instance:", stubs())
        product(proc.pid)
    print("\nindex:", req("POST", "/v2/repository/index", {})[1])
    started = time.perf_counter()
    reads = 200
    for _ in range(reads):
        nvml.used_by_pid()
    print(f"one NVML read (all GPUs' processes): {(time.perf_counter() - started) / reads * 1e6:.0f} us")
    before = sizes.stub_memory(proc.pid, "gpu_fork")
    print("gpu_fork: Triton's own unload (a version deleted or moved: the stub ends, not its worker)")
    print("  unload:", *req("POST", "/v2/repository/models/gpu_fork/unload"))
    time.sleep(3)
    print(f"  product: before {mib(before)}, 3 s after {mib(sizes.stub_memory(proc.pid, 'gpu_fork'))}")
    print("  left running (pid ppid rss_kib):", stubs(), "| gpu used:", gpu(), "| apps:", apps())
    print("  product ends orphans:", sizes.end_orphans(), "| gpu used:", gpu(), "| apps:", apps())
    for name in MODELS[:-1]:
        before = sizes.stub_memory(proc.pid, name)
        sizes.end_stubs(proc.pid, name)  # as an eviction does, right before its unload
        print(name, "unload:", *req("POST", f"/v2/repository/models/{name}/unload"))
        after = sizes.stub_memory(proc.pid, name)
        print(
            f"  product: before {mib(before)}, right after {mib(after)} | gpu used: {gpu()} | apps: {apps()}"
        )
    time.sleep(4)
    print("after unloads: gpu used:", gpu(), "| apps:", apps(), "| stubs:", stubs())
    product(proc.pid)


if __name__ == "__main__":
    main(sys.argv[1])
