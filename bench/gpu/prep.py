"""GPU check, part 1 (here): a Triton repository whose config.pbtxt files come from the product's own
generator for a GPU deployment (`CP_TRITON_DEVICE=gpu`, KIND_GPU instance groups of 1 and 2), with Python
models that hold 1 GiB / 256 MiB each on the GPU through torch, one on the GPU that uses numpy alone
(no CUDA context, no GPU memory), and one whose stub forks a worker holding 256 MiB on the GPU.
`python -m bench.gpu.prep DIR`; then, on a machine with an NVIDIA GPU and the nvidia-pytriton wheel
installed in /tmp/site, `python3 bench/gpu/check.py DIR` (part 2).
See docs/residency.md ("On a GPU") for what it showed on an H200."""

import sys
from pathlib import Path

from control_plane.modelconfig.specs import Signature
from control_plane.registry.configgen import generate_config
from control_plane.registry.schemas import ModelSpec
from control_plane.settings import Settings

MODEL = """
import numpy as np
import torch
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.device = torch.device(f"cuda:{{args['model_instance_device_id']}}")
        self.kind = args["model_instance_kind"]
        self.weights = torch.ones(({mib} * 2**20) // 4, dtype=torch.float32, device=self.device)

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            on_gpu = torch.as_tensor(x, device=self.device) * 2 + self.weights[0]
            y = np.ascontiguousarray(on_gpu.cpu().numpy(), dtype=np.float32).reshape(x.shape)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", y)]))
        return out
"""

NUMPY_ONLY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", (x * 2).astype(np.float32))]))
        return out
"""

WORKER = """    def initialize(self, args):
        ready, told = os.pipe()
        if os.fork() == 0:  # a worker that holds GPU memory (its stub never touches CUDA)
            try:
                import torch

                held = torch.ones((256 * 2**20) // 4, dtype=torch.float32, device="cuda:0")
                os.write(told, b".")
                time.sleep(600)
            finally:
                os.write(told, b"!")
                os._exit(0)
        if os.read(ready, 1) != b".":
            raise RuntimeError("the worker did not start")

"""
FORKS = NUMPY_ONLY.replace("import numpy", "import os\nimport time\n\nimport numpy", 1).replace(
    "class TritonPythonModel:\n", "class TritonPythonModel:\n" + WORKER, 1
)


def main(target: Path) -> None:
    settings = Settings(database_url="sqlite://", triton_device="gpu", triton_gpus=[0])  # type: ignore[arg-type]
    for name, count, mib in (("gpu_one", 1, 1024), ("gpu_two", 2, 256), ("np_one", 1, 0)):
        _write(target, settings, name, count, MODEL.format(mib=mib) if mib else NUMPY_ONLY)
    _write(target, settings, "gpu_fork", 1, FORKS)


def _write(target: Path, settings: Settings, name: str, count: int, model: str) -> None:
    spec = ModelSpec.model_validate(
        {
            "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 4]}],
            "max_batch_size": 8,
            "dynamic_batching": {"max_queue_delay_microseconds": 100},
            "instance_group": {"kind": "auto", "count": count},
        }
    )
    assert spec.inputs is not None and spec.outputs is not None
    signature = Signature(inputs=spec.inputs, outputs=spec.outputs)
    text = generate_config(
        name=name, model_format="python", spec=spec, signature=signature, settings=settings
    )
    folder = target / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(text)
    (folder / "1" / "model.py").write_text(model)
    print(f"== {name}/config.pbtxt\n{text}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
