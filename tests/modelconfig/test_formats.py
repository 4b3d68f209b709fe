"""What an upload is, from its content; archives unpacked safely; example inputs read; signatures derived."""

from __future__ import annotations

import io
import json
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from control_plane.modelconfig.examples import read_example
from control_plane.modelconfig.exceptions import InvalidArtifact
from control_plane.modelconfig.formats import check_kind, sniff
from control_plane.modelconfig.torchscript import signature_from_example
from control_plane.registry.archives import layout, onnx_model_file, unpack
from tests.support import model_files
from tests.support.zoo_modules import Compare, TwoInputs
from tests.support.zoo_torch import without_repo_triton


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_each_kind_is_recognised(tmp_path: Path) -> None:
    state = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, state)
    legacy = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("m/model.onnx", b"\x08\x07")
    assert sniff(model_files.onnx_mlp(tmp_path / "m.onnx")) == "onnx"
    assert sniff(model_files.torchscript_mlp(tmp_path / "m.pt")) == "torchscript"
    assert sniff(model_files.torchscript_mlp(tmp_path / "t.pt", trace=True)) == "torchscript"
    assert sniff(_write(tmp_path / "s.pt", state.getvalue())) == "torch_pickle"
    assert sniff(_write(tmp_path / "l.pt", legacy.getvalue())) == "torch_pickle"
    assert sniff(_write(tmp_path / "model.py", b"import numpy\n")) == "python"
    assert sniff(_write(tmp_path / "a.zip", zipped.getvalue())) == "onnx_archive"
    assert sniff(model_files.corrupt_file(tmp_path / "junk")) == "unknown"


def test_a_mismatch_names_both_formats(tmp_path: Path) -> None:
    path = model_files.torchscript_mlp(tmp_path / "m.pt")
    with pytest.raises(
        InvalidArtifact, match=r"^this is a TorchScript archive, the model was created with format onnx"
    ):
        check_kind(path, model_format="onnx")
    assert check_kind(path, model_format="torchscript") == "torchscript"


def test_what_people_bring_that_nothing_here_serves_is_named_with_the_way_to_onnx(tmp_path: Path) -> None:
    """Files real tools wrote (scikit-learn pickles through pickle and joblib, torch.export.save, safetensors)
    and, for formats whose writers are not installed here, their published magic bytes and layouts."""
    import pickle

    import joblib
    from safetensors.numpy import save_file
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, target = np.random.default_rng(0).standard_normal((20, 3)), np.arange(20) % 2
    estimator = make_pipeline(StandardScaler(), LogisticRegression()).fit(features, target)
    pickled = _write(tmp_path / "model.pkl", pickle.dumps(estimator))
    dumped = tmp_path / "model.joblib"
    joblib.dump(estimator, dumped)
    program = tmp_path / "model.pt2"
    with without_repo_triton():
        torch.export.save(torch.export.export(Compare(), (torch.ones(2, 5),)), str(program))
    weights = tmp_path / "model.safetensors"
    save_file({"w": np.ones((2, 2), np.float32)}, str(weights))
    gguf = _write(tmp_path / "model.gguf", b"GGUF" + (3).to_bytes(4, "little") + bytes(16))
    hdf5 = _write(tmp_path / "model.h5", b"\x89HDF\r\n\x1a\n" + bytes(32))
    tflite = _write(tmp_path / "model.tflite", b"\x1c\x00\x00\x00TFL3" + bytes(32))
    keras = _zip(
        tmp_path / "m.keras", {"metadata.json": b"{}", "config.json": b"{}", "model.weights.h5": b""}
    )
    saved = _zip(
        tmp_path / "saved.zip", {"export/saved_model.pb": b"\x08\x01", "export/variables/v.index": b""}
    )
    expected = {
        pickled: ("sklearn_pickle", "a pickled scikit-learn", "skl2onnx.to_onnx"),
        dumped: ("sklearn_pickle", "a pickled scikit-learn", "never loaded here"),
        program: ("torch_export", "a torch.export program (.pt2)", "torch.onnx.export"),
        weights: ("safetensors", "weights only", "export the model itself"),
        gguf: ("gguf", "a GGUF model", "export the model to ONNX"),
        hdf5: ("tensorflow", "TensorFlow or Keras", "tf2onnx"),
        tflite: ("tensorflow", "TensorFlow or Keras", "--tflite"),
        keras: ("tensorflow", "TensorFlow or Keras", "--keras"),
        saved: ("tensorflow", "TensorFlow or Keras", "--saved-model"),
    }
    for path, (kind, what, fix) in expected.items():
        assert sniff(path) == kind, path.name
        for model_format in ("onnx", "torchscript", "python"):
            with pytest.raises(InvalidArtifact) as refused:
                check_kind(path, model_format=model_format)
            message = str(refused.value)
            assert what in message and fix in message and "which this deployment does not serve" in message


def test_files_that_only_look_like_another_kind_keep_their_own(tmp_path: Path) -> None:
    """An ONNX file whose first bytes could be a safetensors header length, and a torch.save pickle."""
    onnx_file = model_files.onnx_mlp(tmp_path / "m.onnx")
    assert onnx_file.read_bytes()[:1] == b"\x08" and sniff(onnx_file) == "onnx"
    legacy = io.BytesIO()
    torch.save({"sklearn": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)  # a key, no class
    assert sniff(_write(tmp_path / "l.pt", legacy.getvalue())) == "torch_pickle"
    bundle = _zip(tmp_path / "py.zip", {"model.py": b"import numpy\n", "saved_model.pb": b""})
    assert sniff(bundle) == "python"  # a Python-backend model may bundle what it loads itself
    for source in (b"GGUF_FILE = 1\n", b"X = TFL3 = 1\n"):  # GGUF's magic at 0, TFLite's TFL3 at 4
        path = _write(tmp_path / "model.py", source)
        assert sniff(path) == "python", source
        assert check_kind(path, model_format="python") == "python"


def test_a_header_nested_past_the_json_parser_is_not_safetensors(tmp_path: Path) -> None:
    """A safetensors-like header nested 200000 deep made json.loads raise RecursionError: a 500."""
    header = b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    path = _write(tmp_path / "deep.bin", len(header).to_bytes(8, "little") + header)
    assert sniff(path) == "unknown"
    with pytest.raises(InvalidArtifact):
        check_kind(path, model_format="torchscript")


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_archives_unpack_inside_their_folder_only(tmp_path: Path) -> None:
    with pytest.raises(InvalidArtifact, match=re.escape("unsafe path in the archive: '../evil.onnx'")):
        unpack(_zip(tmp_path / "a.zip", {"../evil.onnx": b"x"}), tmp_path / "out", max_bytes=1 << 20)
    link = tmp_path / "l.tar"
    with tarfile.open(link, "w") as archive:
        info = tarfile.TarInfo("model.onnx")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(info)
    with pytest.raises(InvalidArtifact, match=re.escape("'model.onnx' is not a regular file")):
        unpack(link, tmp_path / "out2", max_bytes=1 << 20)
    with pytest.raises(InvalidArtifact, match="unpacks to 2048 bytes, over the upload limit of 1000"):
        unpack(_zip(tmp_path / "b.zip", {"m.onnx": b"\0" * 2048}), tmp_path / "out3", max_bytes=1000)
    assert not (tmp_path / "evil.onnx").exists()


def test_layout_puts_the_model_as_model_onnx_beside_its_data(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"net/x.onnx": b"m", "net/w/x.bin": b"w", "README": b"r"})
    unpack(archive, tmp_path / "out", max_bytes=1 << 20)
    model = onnx_model_file(tmp_path / "out")
    assert [(rel, path.read_bytes()) for rel, path in layout(model)] == [
        ("model.onnx", b"m"),
        ("w/x.bin", b"w"),
    ]


def test_examples_from_npz_and_json(tmp_path: Path) -> None:
    npz = tmp_path / "e.npz"
    np.savez(npz, ids=np.array([[1, 2]], np.int32), x=np.zeros((1, 3), np.float16))
    assert {k: v.dtype for k, v in read_example(npz).items()} == {"ids": np.int32, "x": np.float16}
    plain = _write(
        tmp_path / "e.json", json.dumps({"inputs": {"x": [[1.5, 2]], "n": [[1, 2]], "b": [True]}}).encode()
    )
    assert {k: v.dtype for k, v in read_example(plain).items()} == {
        "x": np.float32,
        "n": np.int64,
        "b": np.bool_,
    }
    typed = {"x": {"datatype": "FP64", "shape": [2, 2], "data": [1, 2, 3, 4]}}
    example = read_example(_write(tmp_path / "t.json", json.dumps(typed).encode()))
    assert example["x"].dtype == np.float64 and example["x"].shape == (2, 2)


def _scripted(tmp_path: Path, module: torch.nn.Module) -> Path:
    path = tmp_path / "m.pt"
    torch.jit.script(module.eval()).save(str(path))
    return path


def test_a_derived_signature_has_forwards_names_and_a_batch_dim(tmp_path: Path) -> None:
    path = _scripted(tmp_path, TwoInputs())
    example = {"b": np.ones((2, 3), np.int32), "a": np.ones((2, 3), np.float32)}  # by name, any order
    signature = signature_from_example(path, example=example)
    assert [(t.name, t.datatype, t.shape) for t in signature.inputs] == [
        ("a", "FP32", [-1, 3]),
        ("b", "INT32", [-1, 3]),
    ]
    assert [(t.name, t.datatype, t.shape) for t in signature.outputs] == [("output__0", "FP32", [-1, 3])]
    compare = signature_from_example(
        _scripted(tmp_path, Compare()), example={"x": np.ones((2, 5), np.float32)}
    )
    assert [t.datatype for t in compare.outputs] == ["BOOL", "FP32"]


def test_a_model_that_fixes_its_batch_gets_fixed_shapes(tmp_path: Path) -> None:
    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(2, 6)

    signature = signature_from_example(
        _scripted(tmp_path, Fixed()), example={"x": np.ones((3, 4), np.float32)}
    )
    assert (signature.inputs[0].shape, signature.outputs[0].shape) == ([3, 4], [2, 6])


@pytest.mark.parametrize("compression", ["", "gz", "bz2", "xz"])
def test_tar_archives_are_known_by_their_header_plain_or_compressed(tmp_path: Path, compression: str) -> None:
    path = tmp_path / "model.tar"
    with tarfile.open(path, f"w:{compression}") as archive:  # type: ignore[call-overload]
        info = tarfile.TarInfo("m/model.onnx")
        info.size = 2
        archive.addfile(info, io.BytesIO(b"\x08\x07"))
    assert sniff(path) == "onnx_archive"


def test_a_file_of_zeros_is_no_tar_archive(tmp_path: Path) -> None:
    """tarfile.is_tarfile took a file of zeros for an empty archive (a 422 saying "this is a tar
    archive"), after decompressing it whole as xz: 36 s of a core for 100 MB, 11 minutes at the 2 GiB
    upload limit. Here 64 MB, sparse."""
    zeros = tmp_path / "z.onnx"
    with zeros.open("wb") as f:
        f.truncate(64 << 20)
    assert sniff(zeros) == "unknown"
    assert sniff(_write(tmp_path / "tiny", b"\0" * 1024)) == "unknown"
