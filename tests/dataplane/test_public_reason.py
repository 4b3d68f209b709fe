"""Why a load failed, as a model's callers are told (`routing.table.public_reason`): Triton's reason in
their terms, without our internal names, the server's folders, a traceback, or the prefixes that named
the model again and Triton's own version folder."""

from __future__ import annotations

import pytest

from control_plane.dataplane.rewrite import hide_internal_name
from control_plane.routing.table import public_reason

NAME = "acme--broken--v3-1a2b3c"


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        (  # the Python backend, through the loader's HTTP call
            f"Triton could not load '{NAME}': load failed for model '{NAME}': version 1 is at UNAVAILABLE "
            "state: Internal: RuntimeError: weights file w.bin is missing\n\nAt:\n"
            f"  /srv/repo/{NAME}/1/model.py(12): initialize\n",
            "Internal: RuntimeError: weights file w.bin is missing",
        ),
        (  # Triton's own words, without the loader's prefix
            f"load failed for model '{NAME}': version 1 is at UNAVAILABLE state: Invalid argument: model "
            f"'{NAME}', tensor 'x': the model expects 2 dimensions (shape [-1,4]) but the model "
            "configuration specifies 3 dimensions",
            "Invalid argument: model 'broken', tensor 'x': the model expects 2 dimensions (shape [-1,4]) "
            "but the model configuration specifies 3 dimensions",
        ),
        (  # no prefix at all: only the name and the folders change
            f"failed to open /var/lib/triton/models/{NAME}/1/model.onnx: no such file",
            "failed to open model.onnx: no such file",
        ),
    ],
)
def test_a_load_failure_is_told_in_the_callers_terms(message: str, shown: str) -> None:
    assert public_reason(message, NAME, "broken") == shown


def test_a_long_reason_is_cut_and_whitespace_folded() -> None:
    told = public_reason("Internal:\n  " + "x " * 400, NAME, "broken")
    assert told.startswith("Internal: x x") and len(told) == 500 and "\n" not in told


def test_a_load_timeout_names_no_inference_server_address() -> None:
    told = public_reason(
        f"Triton at http://10.0.3.7:8001 unavailable (load {NAME}): Deadline Exceeded", NAME, "b"
    )
    assert told == "Triton at the inference server unavailable (load b): Deadline Exceeded"


def test_an_inference_failure_keeps_the_models_words_only() -> None:
    """What a Python model's `execute()` raised, as Triton's Python backend reports it."""
    message = (
        f"Failed to process the request(s) for model '{NAME}_0_0', message: KeyError: 'bucket'\n\nAt:\n"
        f"  /srv/cp/model_repository/{NAME}/1/model.py(9): execute\n"
    )
    told = hide_internal_name(message, triton_name=NAME, model="broken")
    assert told == "Failed to process the request(s) for model 'broken_0_0', message: KeyError: 'bucket'"
