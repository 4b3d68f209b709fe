"""Zoo models whose weights live in external data files, uploaded as zip, tar and tar.gz archives."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.support.model_files import ONNX_IR_VERSION, ONNX_OPSET
from tests.support.zoo import Zoo
from tests.support.zoo_onnx import RNG, sample, vi


def add_external_data_models(zoo: Zoo) -> None:
    """An MLP whose weights live in external data files, uploaded as zip, tar and tar.gz."""
    for packing in ("zip", "tar", "tar.gz"):
        name = f"external-{packing.replace('.', '-')}"
        folder = zoo.root / name
        folder.mkdir()
        weight = numpy_helper.from_array(RNG.standard_normal((4, 3)).astype(np.float32), "W")
        bias = numpy_helper.from_array(RNG.standard_normal(3).astype(np.float32), "B")
        graph = helper.make_graph(
            [helper.make_node("Gemm", ["x", "W", "B"], ["y"])],
            name,
            [vi("x", TensorProto.FLOAT, ["N", 4])],
            [vi("y", TensorProto.FLOAT, ["N", 3])],
            initializer=[weight, bias],
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], ir_version=ONNX_IR_VERSION
        )
        onnx.save(
            model,
            str(folder / "net.onnx"),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="net.weights",
            size_threshold=0,
        )
        archive = zoo.path(name, f".{packing}")
        _pack(archive, folder, packing)
        zoo.onnx(
            name,
            f"onnx external data ({packing} archive)",
            archive,
            {"x": sample("FP32", (2, 4))},
            reference=folder / "net.onnx",
        )


def _pack(archive: Path, folder: Path, packing: str) -> None:
    files = sorted(folder.iterdir())
    if packing == "zip":
        with zipfile.ZipFile(archive, "w") as out:
            for file in files:
                out.write(file, f"model/{file.name}")
        return
    with tarfile.open(archive, "w:gz" if packing.endswith("gz") else "w") as out:
        for file in files:
            out.add(file, arcname=file.name)
